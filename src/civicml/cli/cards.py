"""``civicml cards``: model cards of model versions — show, edit, review status, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import (
    JsonOpt,
    ProjectOpt,
    client,
    console,
    fmt_time,
    print_json,
    table,
    version_ref,
)

if TYPE_CHECKING:  # imported lazily: `civicml cards --help` stays fast
    from civicml.oversight import ModelCard

cards_app = typer.Typer(
    help="Model cards (SageMaker's schema and statuses) of model versions.", no_args_is_help=True
)
CardVersionOpt = Annotated[
    int | None, typer.Option("--card-version", help="An earlier version of the written fields.")
]


def _show(card: ModelCard) -> None:
    from civicml.oversight import EDITABLE_FIELDS

    state = "complete" if card.complete else f"{len(card.missing)} field(s) to complete"
    console.print(
        f"[bold]Model card of {card.model} v{card.model_version}[/bold] — {card.status}, "
        f"card version {card.card_version}, {state}"
    )
    rows: list[list[Any]] = []
    for path, spec in EDITABLE_FIELDS.items():
        section, key = path.split(".", 1)
        value = card.content.get(section, {}).get(key)
        shown = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
        if path in card.missing:
            shown = f"TO COMPLETE: {spec.prompt}"
        elif not shown:
            continue
        rows.append([path, shown])
    table("Written fields", ["field", "value"], rows)
    overview = card.content.get("model_overview", {})
    table(
        "Filled from the platform",
        ["field", "value"],
        [
            ["algorithm", overview.get("algorithm_type")],
            ["problem type", overview.get("problem_type")],
            ["created by", overview.get("model_creator")],
            ["approval", card.content.get("approval", {}).get("status")],
            [
                "evaluations",
                ", ".join(e.get("name", "") for e in card.content.get("evaluation_details", [])),
            ],
            ["deployed", ", ".join(d["endpoint"] for d in card.content.get("deployments", []))],
        ],
    )


@cards_app.command("show")
def show(
    model: str,
    version: str,
    card_version: CardVersionOpt = None,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Show the card of a model version, with the fields still to complete."""
    with client() as ml:
        card = ml.project(project).cards.get(model, version_ref(version), card_version=card_version)
    if json_:
        print_json(card)
    else:
        _show(card)


@cards_app.command("edit")
def edit(
    model: str,
    version: str,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="FIELD=TEXT, e.g. intended_uses.risk_rating=High (repeatable)."),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="A JSON object of field: text (merged with --set)."),
    ] = None,
    note: Annotated[str, typer.Option("--note", "-m", help="Why the card changed.")] = "",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Write fields of the card; each edit stores a new immutable card version (audited)."""
    from civicml.cli._common import parse_pairs
    from civicml.core.errors import InvalidInputError

    fields: dict[str, Any] = {}
    if from_file is not None:
        try:
            loaded = json.loads(from_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidInputError(
                f"Cannot read card fields from {from_file}: {err}.",
                hint='Write a JSON object, e.g. {"intended_uses.risk_rating": "High"}.',
            ) from err
        if not isinstance(loaded, dict):
            raise InvalidInputError(
                f"{from_file} holds a {type(loaded).__name__}, not a JSON object.",
                hint='Write e.g. {"intended_uses.risk_rating": "High"}.',
            )
        fields.update(loaded)
    fields.update(parse_pairs(set_, "Set"))
    with client() as ml:
        card = ml.project(project).cards.edit(model, version_ref(version), fields, note=note)
    if json_:
        print_json(card)
    else:
        state = "complete" if card.complete else f"{len(card.missing)} field(s) to complete"
        console.print(
            f"Card of {card.model} v{card.model_version} is now version {card.card_version} "
            f"({card.status}, {state})"
        )


@cards_app.command("status")
def status(
    model: str,
    version: str,
    new_status: Annotated[str, typer.Argument(help="Draft, PendingReview, Approved or Archived.")],
    note: Annotated[str, typer.Option("--note", "-m", help="Why.")] = "",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Move the card to another review status (no new card version)."""
    with client() as ml:
        card = ml.project(project).cards.set_status(
            model, version_ref(version), status=new_status, note=note
        )
    if json_:
        print_json(card)
    else:
        console.print(f"Card of {card.model} v{card.model_version} is {card.status}")


@cards_app.command("history")
def history(
    model: str, version: str, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Every version of the card's written fields."""
    with client() as ml:
        versions = ml.project(project).cards.history(model, version_ref(version))
    if json_:
        print_json(versions)
        return
    table(
        f"Card history of {model} v{version}",
        ["version", "when", "by", "changed", "note"],
        [
            [v.version, fmt_time(v.created_at), v.created_by, ", ".join(v.changed), v.note]
            for v in versions
        ],
    )


@cards_app.command("export")
def export(
    model: str,
    version: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    format_: Annotated[
        str, typer.Option("--format", "-f", help="html, markdown or json.")
    ] = "html",
    card_version: CardVersionOpt = None,
    project: ProjectOpt = "default",
) -> None:
    """Export the card as a self-contained HTML page, Markdown or JSON."""
    with client() as ml:
        text = ml.project(project).cards.export(
            model, version_ref(version), format=format_, card_version=card_version
        )
    output.write_text(text, encoding="utf-8")
    console.print(f"Wrote the card of {model} v{version} to {output}")
