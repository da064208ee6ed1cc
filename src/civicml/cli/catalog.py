"""``civicml catalog``: search datasets, models and reports across your projects; describe a
dataset or model (classification, tags, column notes); its lineage in one command.

Everything works embedded and against a server (``--url``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from civicml.cli._common import (
    JsonOpt,
    ProjectOpt,
    client,
    console,
    fmt_time,
    parse_pairs,
    print_json,
    table,
)

if TYPE_CHECKING:
    from civicml.catalog.schemas import CatalogEntry

catalog_app = typer.Typer(
    help="Catalog: search datasets, models and reports across your projects; describe them; "
    "their lineage.",
    no_args_is_help=True,
)

KindArg = Annotated[str, typer.Argument(help="dataset or model.", show_default=False)]


@catalog_app.command("search")
def search(
    text: Annotated[
        str | None, typer.Argument(help="Part of a name, description or report title.")
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="dataset, model, model_version or report (repeatable)."),
    ] = None,
    column: Annotated[str | None, typer.Option(help="Datasets with a column of this name.")] = None,
    tag: Annotated[str | None, typer.Option(help="With this catalog tag.")] = None,
    owner: Annotated[str | None, typer.Option(help="Created by this user.")] = None,
    classification: Annotated[
        str | None, typer.Option(help="public, internal, confidential or personal.")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Hits per page (1-200).")] = 50,
    offset: Annotated[int, typer.Option(help="Hits to skip.")] = 0,
    json_: JsonOpt = False,
) -> None:
    """Search what you may read in every project, by name, column, tag, owner, classification."""
    with client() as ml:
        found = ml.catalog.search(
            text,
            kinds=kind,
            column=column,
            tag=tag,
            owner=owner,
            classification=classification,
            project=project,
            limit=limit,
            offset=offset,
        )
    if json_:
        print_json(found)
        return
    table(
        f"Catalog: {found.total} hit(s), {found.offset + 1 if found.hits else 0}-"
        f"{found.offset + len(found.hits)}",
        ["kind", "project", "name", "version", "class", "tags", "owner", "created"],
        [
            [
                h.kind.value + (f" ({h.subkind})" if h.subkind else ""),
                h.project,
                h.name,
                h.version,
                h.classification.value if h.classification else "",
                ", ".join(h.tags),
                h.owner,
                fmt_time(h.created_at),
            ]
            for h in found.hits
        ],
    )
    if found.suggestions:
        console.print("Did you mean: " + ", ".join(found.suggestions) + "?", markup=False)
    if found.offset + len(found.hits) < found.total:
        console.print(f"More: --offset {found.offset + len(found.hits)}", markup=False)


def _show(entry: CatalogEntry) -> None:
    table(
        f"{entry.kind.value.capitalize()} {entry.name}",
        ["field", "value"],
        [
            ["project", entry.project],
            ["description", entry.description],
            ["classification", entry.classification.value if entry.classification else ""],
            ["tags", ", ".join(entry.tags)],
            ["owner", entry.owner],
            ["latest version", entry.latest_version],
        ],
    )
    if entry.columns:
        table(
            "Columns", ["column", "type", "note"], [[c.name, c.type, c.note] for c in entry.columns]
        )


@catalog_app.command("show")
def show(kind: KindArg, name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """A dataset's or model's catalog entry with its columns and their notes."""
    with client() as ml:
        entry = ml.catalog.get(project, kind, name)
    if json_:
        print_json(entry)
    else:
        _show(entry)


@catalog_app.command("describe")
def describe(
    kind: KindArg,
    name: str,
    project: ProjectOpt = "default",
    description: Annotated[str | None, typer.Option(help="Free text ('' clears it).")] = None,
    classification: Annotated[
        str | None, typer.Option(help="public, internal, confidential or personal.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag (repeatable; replaces the tags).")
    ] = None,
    column: Annotated[
        tuple[str, str] | None,
        typer.Option("--column", help="COLUMN NOTE: what a column holds ('' removes the note)."),
    ] = None,
    note: Annotated[
        list[str] | None,
        typer.Option("--note", help="COLUMN=NOTE, for several columns at once (repeatable)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Document a dataset or model: description, classification, tags, column notes."""
    with client() as ml:
        entry = ml.catalog.describe(
            project,
            kind,
            name,
            description=description,
            classification=classification,
            tags=tag,
            columns=_notes(column, note),
        )
    if json_:
        print_json(entry)
    else:
        _show(entry)


def _notes(column: tuple[str, str] | None, notes: list[str] | None) -> dict[str, str] | None:
    if column is None and not notes:
        return None
    out = parse_pairs(notes, "Note")
    if column is not None:
        out[column[0]] = column[1]
    return out


@catalog_app.command("lineage")
def lineage(
    kind: KindArg,
    ref: Annotated[str, typer.Argument(help="NAME (latest version) or NAME:VERSION.")],
    project: ProjectOpt = "default",
    direction: Annotated[str, typer.Option(help="upstream, downstream or both")] = "both",
    depth: Annotated[int, typer.Option(help="Hops to follow (1-50).")] = 10,
    json_: JsonOpt = False,
) -> None:
    """What a dataset or model version came from and what came of it."""
    with client() as ml:
        graph = ml.catalog.lineage(project, kind, ref, direction=direction, max_depth=depth)
    if json_:
        print_json(graph)
        return
    names = {n.id: f"{n.kind} {n.name}" + (" (deleted)" if n.deleted else "") for n in graph.nodes}
    table(
        f"Lineage of {kind} {ref} ({direction})",
        ["from", "association", "to"],
        [[names.get(e.src, e.src), e.kind, names.get(e.dst, e.dst)] for e in graph.edges],
    )
    console.print(f"{len(graph.nodes)} node(s), {len(graph.edges)} edge(s)", markup=False)
