"""``civicml lineage`` and ``civicml audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from civicml.cli._common import STATE, JsonOpt, client, console, print_json, table

lineage_app = typer.Typer(
    help="Lineage: what each thing came from and what came of it.", no_args_is_help=True
)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@lineage_app.command("show")
def show(
    kind: str,
    ref: str,
    direction: Annotated[str, typer.Option(help="upstream, downstream or both")] = "both",
    depth: Annotated[int, typer.Option(help="Hops to follow (1-50).")] = 10,
    json_: JsonOpt = False,
) -> None:
    """Everything upstream/downstream of an entity (KIND: run, model_version, ...; REF: its id)."""
    with client() as ml:
        graph = ml.lineage(kind, ref, direction=direction, max_depth=depth)
    if json_:
        print_json(graph)
        return
    names = {n.id: f"{n.kind} {n.name}" for n in graph.nodes}
    table(
        f"Lineage of {kind} {ref} ({direction})",
        ["from", "association", "to"],
        [[names.get(e.src, e.src), e.kind, names.get(e.dst, e.dst)] for e in graph.edges],
    )
    console.print(f"{len(graph.nodes)} node(s), {len(graph.edges)} edge(s)")


@audit_app.command("verify")
def verify(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify an exported JSONL file instead of the live trail."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Check the hash chain and its signed head; exit 1 naming the first bad event.

    Exit 1 also when this home holds no witness for the chain (UNVERIFIED: not a tamper verdict,
    the message says where the witness is), or when the audit tables cannot be read. Events
    whose timestamps go backwards are printed as warnings; they do not fail verification.
    """
    if file is not None:
        from civicml.core.settings import Settings
        from civicml.governance.audit import AuditSigner, verify_export

        settings = Settings.load(home=STATE.home, user=STATE.user)
        signer = AuditSigner(settings.audit_key_path, settings.witness_path)
        report = verify_export(file, signer if signer.pub_path.is_file() else None)
    else:
        with client() as ml:
            report = ml.verify_audit()
    if json_:
        print_json(report)
        raise typer.Exit(0 if report.ok else 1)
    for warning in report.warnings:
        typer.echo(f"Warning: {warning.message}.", err=True)
    if report.ok:
        head = f", signed head at event {report.witness.seq}" if report.witness else ""
        console.print(f"OK: {report.events_checked} audit events verified{head}.", markup=False)
    elif report.verdict == "unwitnessed":
        typer.echo(f"{report.problems[0].reason}.", err=True)
    else:
        problem = report.problems[0]
        typer.echo(
            f"FAILED after {report.events_checked} good events: {problem.reason}"
            + (f" (event id {problem.event_id})" if problem.event_id else ""),
            err=True,
        )
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("export")
def export(file: Path) -> None:
    """Write every event and the signed heads as JSON Lines (for a SIEM)."""
    with client() as ml:
        count = ml.backend.audit_export(file)
    console.print(f"Exported {count} events to {file}")


@audit_app.command("list")
def list_events(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    entity: Annotated[str | None, typer.Option(help="Entity id.")] = None,
    action: Annotated[str | None, typer.Option()] = None,
    after: Annotated[int, typer.Option(help="Only events after this seq.")] = 0,
    limit: Annotated[int, typer.Option()] = 100,
    json_: JsonOpt = False,
) -> None:
    """List audit events, oldest first."""
    with client() as ml:
        events = ml.audit_events(
            project=project, entity_id=entity, action=action, after_seq=after, limit=limit
        )
    if json_:
        print_json(events)
        return
    table(
        "Audit events",
        ["seq", "at", "actor", "action", "entity", "project"],
        [
            [e.seq, e.at[:19], e.actor, e.action, f"{e.entity_kind} {e.entity_id}", e.project or ""]
            for e in events
        ],
    )
