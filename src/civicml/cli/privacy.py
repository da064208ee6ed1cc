"""``civicml privacy``: retention periods and legal holds, retention now, erasure requests and
their certificates.

Everything works embedded and against a server (``--url``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

if TYPE_CHECKING:
    from civicml.privacy.schemas import Erasure, RetentionRule

privacy_app = typer.Typer(
    help="Privacy: retention periods, legal holds, erasure of a data subject with a certificate.",
    no_args_is_help=True,
)
retention_app = typer.Typer(
    help="Retention periods of datasets and endpoints' captured requests.", no_args_is_help=True
)
privacy_app.add_typer(retention_app, name="retention")

KindArg = Annotated[
    str, typer.Argument(help="dataset, or endpoint (its captured requests).", show_default=False)
]
NameArg = Annotated[str, typer.Argument(help="The dataset's or endpoint's name.")]


def _rules(rules: Sequence[RetentionRule], json_: bool) -> None:
    if json_:
        print_json(rules)
        return
    table(
        "Retention and legal holds",
        ["kind", "name", "retention", "legal hold", "updated"],
        [
            [
                r.kind.value,
                r.name,
                "" if r.days is None else f"{r.days} days",
                r.hold_reason if r.legal_hold else "",
                f"{fmt_time(r.updated_at)} by {r.updated_by}",
            ]
            for r in rules
        ],
    )


@retention_app.command("list")
def retention_list(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """The project's retention periods and legal holds."""
    with client() as ml:
        rules = ml.project(project).privacy.retention()
    _rules(rules, json_)


@retention_app.command("set")
def retention_set(
    kind: KindArg,
    name: NameArg,
    days: Annotated[int | None, typer.Option(help="Days to keep (1-36500).")] = None,
    none: Annotated[bool, typer.Option("--none", help="Remove the retention period.")] = False,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Keep a dataset's versions, or an endpoint's captured requests, --days days."""
    if (days is None) == (not none):
        from civicml.core.errors import InvalidInputError

        raise InvalidInputError(
            "Give --days N or --none.",
            hint="e.g. civicml privacy retention set endpoint web --days 90",
        )
    with client() as ml:
        rule = ml.project(project).privacy.set_retention(kind, name, days=days)
    _rules([rule], json_)


@retention_app.command("enforce")
def retention_enforce(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Apply the project's retention periods now (the scheduler does it every interval)."""
    with client() as ml:
        result = ml.project(project).privacy.enforce_retention()
    if json_:
        print_json(result)
        return
    console.print(
        f"Deleted {len(result.expired_versions)} dataset version(s) and "
        f"{result.expired_capture_files} capture file(s); {result.bytes_deleted} stored "
        "object(s) removed.",
        markup=False,
    )
    for held in result.held:
        console.print(f"Kept under a legal hold: {held}", markup=False)


@privacy_app.command("hold")
def hold(
    kind: KindArg,
    name: NameArg,
    reason: Annotated[str, typer.Option(help="Why: the case or request reference.")],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Place a legal hold: nothing of the target is deleted while it stands."""
    with client() as ml:
        rule = ml.project(project).privacy.hold(kind, name, reason=reason)
    _rules([rule], json_)


@privacy_app.command("release")
def release(
    kind: KindArg, name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Clear a legal hold."""
    with client() as ml:
        rule = ml.project(project).privacy.release(kind, name)
    _rules([rule], json_)


def _erasure(done: Erasure, json_: bool) -> None:
    if json_:
        print_json(done)
        return
    s = done.summary
    console.print(
        f"Erasure {done.id} ({done.status}): {len(s.versions)} dataset version(s), "
        f"{len(s.captures)} capture file(s), {len(s.models)} model version(s) flagged.",
        markup=False,
    )
    if s.versions:
        table(
            "Dataset versions",
            ["dataset", "version", "rows removed", "successor"],
            [
                [v.dataset, v.version, v.rows_removed, v.successor_version or "none"]
                for v in s.versions
            ],
        )
    for m in s.models:
        console.print(f"Trained on erased data: {m.project}/{m.model} v{m.version}", markup=False)
    for w in s.withheld:
        console.print(f"Withheld under a legal hold: {w}", markup=False)


@privacy_app.command("erase")
def erase(
    key: Annotated[str, typer.Option("--key", help="The column identifying the subject.")],
    value: Annotated[str, typer.Option("--value", help="The subject's value in it.")],
    reason: Annotated[str, typer.Option(help="The request's reference (no personal data).")] = "",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Erase a data subject from every dataset version and captured request of the project."""
    with client() as ml:
        done = ml.project(project).privacy.erase(key, value, reason=reason)
    _erasure(done, json_)


@privacy_app.command("erasures")
def erasures(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """The project's erasures, newest first."""
    with client() as ml:
        found = ml.project(project).privacy.erasures()
    if json_:
        print_json(found)
        return
    table(
        "Erasures",
        ["id", "when", "by", "key", "versions", "captures", "models", "status"],
        [
            [
                e.id,
                fmt_time(e.created_at),
                e.created_by,
                e.key_column,
                len(e.summary.versions),
                len(e.summary.captures),
                len(e.summary.models),
                e.status,
            ]
            for e in found
        ],
    )


@privacy_app.command("erasure")
def erasure(erasure_id: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """One erasure: what it found and removed."""
    with client() as ml:
        done = ml.project(project).privacy.erasure(erasure_id)
    _erasure(done, json_)


@privacy_app.command("certificate")
def certificate(
    erasure_id: str,
    project: ProjectOpt = "default",
    html: Annotated[bool, typer.Option("--html", help="The HTML page instead of JSON.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file.", dir_okay=False)
    ] = None,
) -> None:
    """An erasure's certificate (JSON, or --html)."""
    with client() as ml:
        data = ml.project(project).privacy.certificate(erasure_id, html=html)
    if output is None:
        typer.echo(data.decode())
    else:
        output.write_bytes(data)
        console.print(f"Wrote {output}", markup=False)
