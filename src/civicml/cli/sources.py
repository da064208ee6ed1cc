"""``civicml sources``: database and stream sources (add, list, show, update, run, runs, status,
remove).

A source reads a database table or query (in full, or incrementally by a watermark column) or a
message stream (NATS JetStream, Redis Streams, MQTT, RabbitMQ) into versions of a dataset; each
version commits together with the source's position, so a crash loses nothing and repeats
nothing. The scheduler runs sources that have a schedule (``civicml server`` or ``civicml
scheduler``); ``civicml sources run`` runs one now. Everything works embedded and against a
server (``--url``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

if TYPE_CHECKING:
    from civicml.sources.schemas import Source, SourceRun

sources_app = typer.Typer(
    help="Sources: database tables and queries, and message streams, ingested as dataset versions.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The source's name.", show_default=False)]


def _schedule(source: Source) -> str:
    if source.cron:
        return f"cron {source.cron}"
    if source.every_s:
        return f"every {source.every_s} s"
    return "by hand"


def _run_line(run: SourceRun) -> str:
    rate = f", {run.rows_per_s:,.0f} rows/s" if run.rows_per_s else ""
    versions = ", ".join(f"v{v}" for v in run.versions) or "no version"
    return (
        f"{run.status.value}: {run.rows} row(s) → {versions}, {run.skipped} skipped"
        f"{rate} ({fmt_time(run.started_at)})"
    )


@sources_app.command("add")
def add(
    name: NameArg,
    kind: Annotated[
        str,
        typer.Option(help="database, nats, redis, mqtt or rabbitmq.", show_default=False),
    ],
    project: ProjectOpt = "default",
    url: Annotated[
        str | None,
        typer.Option(help="URL without a password, e.g. postgresql+psycopg://etl@db/agency."),
    ] = None,
    connection: Annotated[
        str | None, typer.Option(help="A named connection of the source_connections setting.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset its versions go to (default: the name).")
    ] = None,
    table_: Annotated[str | None, typer.Option("--table", help="Database: a table.")] = None,
    query: Annotated[str | None, typer.Option(help="Database: a SELECT instead.")] = None,
    watermark: Annotated[
        str | None, typer.Option(help="Database: incremental by this id or updated-at column.")
    ] = None,
    chunk_rows: Annotated[int | None, typer.Option(help="Database: rows per fetch.")] = None,
    subject: Annotated[
        str | None,
        typer.Option(help="Streams: NATS subject, Redis stream key, MQTT topic or RabbitMQ queue."),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="NATS: the JetStream stream.")] = None,
    batch_rows: Annotated[int | None, typer.Option(help="Streams: messages per version.")] = None,
    window_s: Annotated[
        float | None, typer.Option(help="Streams: seconds a version stays open.")
    ] = None,
    cron: Annotated[str | None, typer.Option(help="Cron schedule (UTC).")] = None,
    every: Annotated[str | None, typer.Option(help="Interval instead, e.g. 15m.")] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    paused: Annotated[bool, typer.Option("--paused", help="Add it paused.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Add a database or stream source."""
    db: dict[str, Any] | None = None
    st: dict[str, Any] | None = None
    if kind == "database":
        db = {"table": table_, "query": query, "watermark": watermark, "chunk_rows": chunk_rows}
        db = {k: v for k, v in db.items() if v is not None}
    else:
        st = {"subject": subject, "stream": stream, "batch_rows": batch_rows, "window_s": window_s}
        st = {k: v for k, v in st.items() if v is not None}
    with client() as ml:
        source = ml.project(project).sources.add(
            name,
            kind=kind,
            url=url,
            connection=connection,
            dataset=dataset,
            database=db,
            stream=st,
            cron=cron,
            every=every,
            description=description,
            enabled=not paused,
        )
    if json_:
        print_json(source)
        return
    console.print(
        f"Added {source.kind.value} source {source.name} ({source.target}) → dataset "
        f"{source.dataset}, {_schedule(source)}."
    )


@sources_app.command("list")
def list_sources(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List a project's sources."""
    with client() as ml:
        found = ml.project(project).sources.list()
    if json_:
        print_json(found)
        return
    table(
        f"Sources of {project}",
        ["name", "kind", "target", "dataset", "schedule", "enabled"],
        [
            [s.name, s.kind.value, s.target, s.dataset, _schedule(s), "yes" if s.enabled else "no"]
            for s in found
        ],
    )


@sources_app.command("show")
def show(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show a source and its committed position."""
    with client() as ml:
        source = ml.project(project).sources.get(name)
    if json_:
        print_json(source)
        return
    table(
        f"Source {source.name}",
        ["field", "value"],
        [
            ["kind", source.kind.value],
            ["target", source.target],
            ["dataset", source.dataset],
            ["config", ", ".join(f"{k}={v}" for k, v in source.config.items() if v is not None)],
            ["schedule", _schedule(source)],
            ["next run", fmt_time(source.next_run_at)],
            ["enabled", "yes" if source.enabled else "paused"],
            ["position", source.position or "(nothing committed yet)"],
            ["created", f"{fmt_time(source.created_at)} by {source.created_by}"],
            ["description", source.description],
        ],
    )


@sources_app.command("update")
def update(
    name: NameArg,
    project: ProjectOpt = "default",
    cron: Annotated[str | None, typer.Option(help="New cron schedule (UTC).")] = None,
    every: Annotated[str | None, typer.Option(help="New interval.")] = None,
    unschedule: Annotated[bool, typer.Option(help="Run by hand only.")] = False,
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--paused", help="Resume/pause.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Change a source's schedule or description, or pause / resume it."""
    with client() as ml:
        source = ml.project(project).sources.update(
            name,
            cron=cron,
            every=every,
            unschedule=unschedule,
            enabled=enabled,
            description=description,
        )
    if json_:
        print_json(source)
        return
    console.print(f"Source {source.name}: {_schedule(source)}, enabled {source.enabled}.")


@sources_app.command("run")
def run(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Run a source now (exit 1 when the run failed)."""
    with client() as ml:
        found = ml.project(project).sources.run(name)
    if json_:
        print_json(found)
    else:
        console.print(f"Source {found.source}: {_run_line(found)}")
        if found.error:
            console.print(f"  {found.error}")
    if found.status.value == "failed":
        raise typer.Exit(1)


@sources_app.command("runs")
def runs(
    name: NameArg,
    project: ProjectOpt = "default",
    limit: Annotated[int, typer.Option(help="Most recent runs.", min=1, max=1000)] = 20,
    json_: JsonOpt = False,
) -> None:
    """List a source's runs, newest first."""
    with client() as ml:
        found = ml.project(project).sources.runs(name, limit=limit)
    if json_:
        print_json(found)
        return
    for item in found:
        console.print(_run_line(item) + (f" — {item.error}" if item.error else ""))


@sources_app.command("status")
def status(
    name: NameArg,
    project: ProjectOpt = "default",
    lag: Annotated[bool, typer.Option("--lag/--no-lag", help="Ask for the lag.")] = True,
    json_: JsonOpt = False,
) -> None:
    """Show a source's lag and the throughput of its last runs."""
    with client() as ml:
        found = ml.project(project).sources.status(name, lag=lag)
    if json_:
        print_json(found)
        return
    if found.lag is not None:
        behind = f"{found.lag:,}{'+' if found.lag_capped else ''} behind"
    else:
        behind = f"lag unknown ({found.lag_error or 'not asked'})"
    rate = f"{found.rows_per_s:,.0f} rows/s" if found.rows_per_s else "no throughput yet"
    running = "running now" if found.running else "idle"
    console.print(f"Source {found.source.name}: {behind}; {rate}; {running}.")
    for item in found.last_runs[:5]:
        console.print(f"  {_run_line(item)}")


@sources_app.command("remove")
def remove(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Remove a source and its run records (its dataset versions stay)."""
    with client() as ml:
        source = ml.project(project).sources.remove(name)
    if json_:
        print_json(source)
        return
    console.print(f"Removed source {source.name}.")
