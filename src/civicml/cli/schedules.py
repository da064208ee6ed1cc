"""``civicml schedules`` (add, list, show, pause, resume, remove, firings) and ``civicml
scheduler`` (run the scheduler in the foreground; ``--once`` for one tick).

Schedules start a ``@cm.pipeline`` at cron instants or on events (a new dataset version, a
drift report, a model version registered or approved), with parameters from the event. The
management commands work embedded and against a server (``--url``); the scheduler runs on the
configured database, as many at once as you like: each firing happens once.
"""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import (
    STATE,
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
    from civicml.pipelines.schedule_schemas import Schedule

schedules_app = typer.Typer(
    help="Schedules: cron and event triggers that start pipelines (civicml scheduler runs them).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)]


def _values(items: list[str] | None, what: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in parse_pairs(items, what).items():
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def _trigger(item: Schedule) -> str:
    if item.cron is not None:
        return f"cron {item.cron}" + ("" if item.timezone == "UTC" else f" ({item.timezone})")
    return f"event {item.event}"


def _show(item: Schedule) -> None:
    table(
        f"Schedule {item.name}",
        ["field", "value"],
        [
            ["project", item.project],
            ["pipeline", item.pipeline],
            ["trigger", _trigger(item)],
            ["match", json.dumps(item.match) if item.match else ""],
            ["params", json.dumps(item.params) if item.params else ""],
            ["enabled", "yes" if item.enabled else "paused"],
            ["next fire", fmt_time(item.next_fire_at)],
            ["starting deadline", item.starting_deadline_s],
            ["created", f"{fmt_time(item.created_at)} by {item.created_by}"],
            ["runs as", f"{item.created_by} ({', '.join(item.creator_roles) or 'no role'})"],
        ],
    )


def _done(item: Schedule, json_: bool, what: str) -> None:
    if json_:
        print_json(item)
    else:
        console.print(f"{what} schedule {item.name} of project {item.project}.")


@schedules_app.command("add")
def add(
    name: NameArg,
    pipeline: Annotated[
        str,
        typer.Option(
            "--pipeline",
            help="package.module:function of the @cm.pipeline; the module must be in the "
            "pipeline_modules setting.",
            show_default=False,
        ),
    ],
    project: ProjectOpt = "default",
    cron: Annotated[
        str | None,
        typer.Option(help="Five-field cron expression, e.g. '0 2 * * *', or @daily."),
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone of --cron.")] = "UTC",
    event: Annotated[
        str | None,
        typer.Option(
            help="Event type: dataset_version.created, report.created, "
            "model_version.registered, model_version.approval_changed, alert.fired, "
            "data.erased."
        ),
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option("--match", help="An event field that must equal VALUE, KEY=VALUE."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A pipeline parameter, KEY=VALUE (JSON when it parses); '{event.FIELD}' "
            "takes it from the event.",
        ),
    ] = None,
    starting_deadline: Annotated[
        int | None,
        typer.Option(help="Cron: skip an instant missed by more than this many seconds."),
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Add a schedule: --cron or --event, and the pipeline it starts."""
    with client() as ml:
        item = ml.schedules.create(
            name,
            project=project,
            pipeline=pipeline,
            cron=cron,
            timezone=timezone,
            event=event,
            match=_values(match, "Match"),
            params=_values(param, "Param"),
            starting_deadline_s=starting_deadline,
            enabled=not paused,
        )
    if json_:
        print_json(item)
        return
    when = f", next at {fmt_time(item.next_fire_at)} UTC" if item.next_fire_at else ""
    console.print(f"Added schedule {item.name} ({_trigger(item)}{when}) in {item.project}.")


@schedules_app.command("list")
def list_schedules(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List a project's schedules."""
    with client() as ml:
        found = ml.schedules.list(project)
    if json_:
        print_json(found)
        return
    table(
        f"Schedules of {project}",
        ["name", "pipeline", "trigger", "enabled", "next fire", "by"],
        [
            [
                s.name,
                s.pipeline,
                _trigger(s),
                "yes" if s.enabled else "paused",
                fmt_time(s.next_fire_at),
                s.created_by,
            ]
            for s in found
        ],
    )


@schedules_app.command("show")
def show(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show a schedule."""
    with client() as ml:
        item = ml.schedules.get(name, project=project)
    if json_:
        print_json(item)
    else:
        _show(item)


@schedules_app.command("pause")
def pause(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Pause a schedule: nothing missed while paused fires later."""
    with client() as ml:
        item = ml.schedules.pause(name, project=project)
    _done(item, json_, "Paused")


@schedules_app.command("resume")
def resume(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Resume a paused schedule from now on."""
    with client() as ml:
        item = ml.schedules.resume(name, project=project)
    _done(item, json_, "Resumed")


@schedules_app.command("remove")
def remove(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Remove a schedule and its firing records (their executions stay)."""
    with client() as ml:
        item = ml.schedules.delete(name, project=project)
    _done(item, json_, "Removed")


@schedules_app.command("firings")
def firings(
    name: NameArg,
    project: ProjectOpt = "default",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most recent firings.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """A schedule's most recent firings: status, execution, error."""
    with client() as ml:
        found = ml.schedules.firings(name, project=project, limit=limit)
    if json_:
        print_json(found)
        return
    table(
        f"Firings of {name}",
        ["key", "status", "execution", "started", "ended", "attempts", "error"],
        [
            [
                f.fire_key,
                f.status.value,
                f.execution_id,
                fmt_time(f.started_at),
                fmt_time(f.ended_at),
                f.attempts,
                f.error,
            ]
            for f in found
        ],
    )


def scheduler(
    once: Annotated[
        bool, typer.Option("--once", help="One tick: fire what is due, wait for it, exit.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds between ticks (default: scheduler_interval_s)."),
    ] = None,
) -> None:
    """Run the pipeline scheduler in the foreground (--once: one tick; exit 1 if one failed).

    It runs on the configured database; several schedulers (and servers) may run at once, and
    each firing still happens once."""
    from civicml.core.errors import ConfigurationError
    from civicml.core.settings import Settings
    from civicml.pipelines.scheduler import Scheduler
    from civicml.sdk.embedded import open_context

    settings = Settings.load(home=STATE.home, user=STATE.user)
    if STATE.url or settings.url:
        raise ConfigurationError(
            "The scheduler runs on the database, not through a server's API.",
            hint="Drop --url (and CIVICML_URL); set CIVICML_DB_URL to the server's database.",
        )
    ctx = open_context(settings)
    try:
        lease = settings.scheduler_lease_s
        if interval is not None:
            lease = max(lease, 2 * interval)
        runner = Scheduler(ctx, interval_s=interval, lease_s=lease)
        if once:
            claimed = runner.run_once()
            runner.stop(wait=True)
            _report_once(runner, claimed)
            return
        console.print(
            f"civicml scheduler {runner.name} every {runner.interval_s:g} s "
            f"(home {settings.home}); Ctrl-C stops it."
        )
        signal.signal(signal.SIGTERM, lambda *_: runner.stop())
        try:
            runner.start()
            while runner.running:
                runner.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            runner.stop(wait=True)
    finally:
        ctx.db.close()


def _report_once(runner: Any, claimed: list[str]) -> None:
    if not claimed:
        console.print("Nothing was due.")
        return
    failed = 0
    for item in runner.outcomes(claimed):
        failed += item.status.value == "failed"
        tail = f": {item.error}" if item.error else ""
        console.print(
            f"Fired {item.schedule} ({item.fire_key}): {item.status.value}, "
            f"execution {item.execution_id}{tail}",
            markup=False,
        )
    if failed:
        raise typer.Exit(1)
