"""``civicml monitors``: scheduled monitors of endpoints (add, list, show, update, pause,
resume, run, executions, report, constraints, baseline, remove) and their ground truth.

A monitor is one of SageMaker Model Monitor's four types — ``data_quality``,
``model_quality``, ``bias_drift``, ``attribution_drift`` — on an endpoint's captured records, on
a cron schedule or an interval; the scheduler runs it (``civicml server`` or ``civicml
scheduler``), ``civicml monitors run`` runs it now. Everything works embedded and against a
server (``--url``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

if TYPE_CHECKING:
    from civicml.monitors.schemas import Execution, Monitor

monitors_app = typer.Typer(
    help="Monitors: scheduled data-quality, model-quality, bias-drift and attribution-drift "
    "checks of endpoints.",
    no_args_is_help=True,
)
truth_app = typer.Typer(
    help="Ground truth: labels of captured predictions, joined by inference id.",
    no_args_is_help=True,
)
monitors_app.add_typer(truth_app, name="ground-truth")

NameArg = Annotated[str, typer.Argument(help="The monitor's name.", show_default=False)]
HtmlOpt = Annotated[
    Path | None, typer.Option("--html", help="Write the HTML page to this file.", dir_okay=False)
]


def _schedule(monitor: Monitor) -> str:
    if monitor.cron:
        return f"cron {monitor.cron}"
    return f"every {_duration(monitor.every_s or 0)}"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _latest(monitor: Monitor) -> str:
    if monitor.latest is None:
        return "none yet"
    latest = monitor.latest
    return f"{latest.status.value} ({fmt_time(latest.started_at)}, {latest.n_violations} viol.)"


def _show(monitor: Monitor) -> None:
    base = monitor.baseline
    table(
        f"Monitor {monitor.name}",
        ["field", "value"],
        [
            ["project", monitor.project],
            ["type", monitor.type.value],
            ["endpoint", monitor.endpoint],
            ["schedule", _schedule(monitor)],
            ["window", _duration(monitor.window_s)],
            ["enabled", "yes" if monitor.enabled else "paused"],
            ["next run", fmt_time(monitor.next_run_at)],
            [
                "baseline",
                f"{base.dataset.dataset} v{base.dataset.version} ({base.source}), model "
                f"{base.model.name} v{base.model.version}",
            ],
            ["constraints", f"v{monitor.constraints_version} (--json shows them)"],
            ["latest", _latest(monitor)],
            ["created", f"{fmt_time(monitor.created_at)} by {monitor.created_by}"],
            ["description", monitor.description],
        ],
    )


def _execution(execution: Execution) -> None:
    metrics = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} -"
        for k, v in list(execution.metrics.items())[:8]
    )
    console.print(
        f"Monitor {execution.monitor}: {execution.status.value} — "
        f"{execution.records if execution.records is not None else 0} record(s)"
        + (f", {execution.labeled} labeled" if execution.labeled is not None else "")
        + f", {len(execution.violations)} violation(s). {metrics}"
    )
    for violation in execution.violations:
        console.print(f"  {violation.constraint_check_type}: {violation.description}")
    if execution.error:
        console.print(f"  {execution.error}")


@monitors_app.command("add")
def add(
    name: NameArg,
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="The endpoint watched.", show_default=False)
    ],
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help="data_quality, model_quality, bias_drift or attribution_drift.",
            show_default=False,
        ),
    ],
    project: ProjectOpt = "default",
    cron: Annotated[
        str | None, typer.Option(help="Cron schedule (UTC), e.g. '0 * * * *' (default hourly).")
    ] = None,
    every: Annotated[str | None, typer.Option(help="An interval instead: 30m, 1h, 1d.")] = None,
    window: Annotated[
        str | None,
        typer.Option(help="Records of the last this long, e.g. 1h (default: the interval, or 1h)."),
    ] = None,
    baseline_dataset: Annotated[
        str | None, typer.Option(help="Baseline dataset (default: the training data).")
    ] = None,
    baseline_version: Annotated[
        str | None, typer.Option(help="Its version (default latest).")
    ] = None,
    model_version: Annotated[
        int | None, typer.Option(min=1, help="Model version to baseline (default: served).")
    ] = None,
    min_rows: Annotated[
        int | None, typer.Option(min=1, help="Fewest records (labeled ones) to judge.")
    ] = None,
    positive_label: Annotated[
        str | None, typer.Option(help="Positive class (binary model quality, bias drift).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0, max=0.99, help="Model quality: margin of the thresholds.")
    ] = 0.2,
    facet: Annotated[
        list[str] | None, typer.Option("--facet", help="Bias drift: only this facet's rules.")
    ] = None,
    constraints: Annotated[
        Path | None,
        typer.Option(
            help="JSON file of the type's constraints (default: suggested).", dir_okay=False
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Add a monitor to an endpoint and compute its baseline."""
    document = _constraints_file(constraints) if constraints is not None else None
    version: int | str | None = baseline_version
    if baseline_version is not None and baseline_version.isdigit():
        version = int(baseline_version)
    with client() as ml:
        monitor = ml.project(project).monitors.add(
            name,
            endpoint=endpoint,
            type=type_,
            cron=cron,
            every=every,
            window=window,
            baseline=None if baseline_dataset is None else (baseline_dataset, version or "latest"),
            model_version=model_version,
            min_rows=min_rows,
            positive_label=positive_label,
            tolerance=tolerance,
            facets=facet,
            constraints=document,
            description=description,
            enabled=not paused,
        )
    if json_:
        print_json(monitor)
        return
    base = monitor.baseline
    console.print(
        f"Added {monitor.type.value} monitor {monitor.name} of endpoint {monitor.endpoint} "
        f"({_schedule(monitor)}, window {_duration(monitor.window_s)}); baseline "
        f"{base.dataset.dataset} v{base.dataset.version}."
    )


def _constraints_file(path: Path) -> dict[str, Any]:
    from civicml.core.errors import InvalidInputError

    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInputError(
            f"Constraints file {path.name!r} is not readable JSON: {err}.",
            hint="Start from 'civicml monitors constraints NAME --json' and edit it.",
        ) from err
    if not isinstance(found, dict):
        raise InvalidInputError(
            f"Constraints file {path.name!r} is not a JSON object.",
            hint="Start from 'civicml monitors constraints NAME --json' and edit it.",
        )
    return found


@monitors_app.command("list")
def list_monitors(
    project: ProjectOpt = "default",
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List a project's monitors."""
    with client() as ml:
        found = ml.project(project).monitors.list(endpoint=endpoint)
    if json_:
        print_json(found)
        return
    table(
        f"Monitors of {project}",
        ["name", "type", "endpoint", "schedule", "window", "enabled", "latest"],
        [
            [
                m.name,
                m.type.value,
                m.endpoint,
                _schedule(m),
                _duration(m.window_s),
                "yes" if m.enabled else "paused",
                _latest(m),
            ]
            for m in found
        ],
    )


@monitors_app.command("show")
def show(
    name: NameArg, project: ProjectOpt = "default", html: HtmlOpt = None, json_: JsonOpt = False
) -> None:
    """Show a monitor (--html: write its page, each figure over its executions, plotted)."""
    with client() as ml:
        handle = ml.project(project).monitors
        monitor = handle.get(name)
        page = handle.html(name) if html is not None else None
    if html is not None and page is not None:
        html.write_text(page, encoding="utf-8")
    if json_:
        print_json(monitor)
        return
    _show(monitor)
    if html is not None:
        console.print(f"Wrote {html}.")


@monitors_app.command("update")
def update(
    name: NameArg,
    project: ProjectOpt = "default",
    cron: Annotated[str | None, typer.Option(help="A new cron schedule.")] = None,
    every: Annotated[str | None, typer.Option(help="A new interval.")] = None,
    window: Annotated[str | None, typer.Option(help="A new window.")] = None,
    description: Annotated[str | None, typer.Option(help="New text.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Change a monitor's schedule, window or description."""
    with client() as ml:
        monitor = ml.project(project).monitors.update(
            name, cron=cron, every=every, window=window, description=description
        )
    _done(monitor, json_, "Updated")


def _done(monitor: Monitor, json_: bool, what: str) -> None:
    if json_:
        print_json(monitor)
    else:
        console.print(f"{what} monitor {monitor.name} of project {monitor.project}.")


@monitors_app.command("pause")
def pause(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Stop running a monitor on its schedule."""
    with client() as ml:
        monitor = ml.project(project).monitors.update(name, enabled=False)
    _done(monitor, json_, "Paused")


@monitors_app.command("resume")
def resume(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Run a paused monitor on its schedule again (from the next due instant)."""
    with client() as ml:
        monitor = ml.project(project).monitors.update(name, enabled=True)
    _done(monitor, json_, "Resumed")


@monitors_app.command("remove")
def remove(name: NameArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Remove a monitor."""
    with client() as ml:
        monitor = ml.project(project).monitors.remove(name)
    _done(monitor, json_, "Removed")


@monitors_app.command("run")
def run(
    name: NameArg, project: ProjectOpt = "default", html: HtmlOpt = None, json_: JsonOpt = False
) -> None:
    """Run a monitor now on the window ending now (exit 1 if the execution failed)."""
    with client() as ml:
        handle = ml.project(project).monitors
        execution = handle.run(name)
        page = handle.report_html(name, execution.id) if html is not None else None
    if html is not None and page is not None:
        html.write_text(page, encoding="utf-8")
    if json_:
        print_json(execution)
    else:
        _execution(execution)
    if execution.status.value == "failed":
        raise typer.Exit(1)


@monitors_app.command("executions")
def executions(
    name: NameArg,
    project: ProjectOpt = "default",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most recent executions.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """List a monitor's executions, newest first."""
    with client() as ml:
        found = ml.project(project).monitors.executions(name, limit=limit)
    if json_:
        print_json(found)
        return
    table(
        f"Executions of monitor {name}",
        ["id", "trigger", "started", "status", "records", "violations", "note"],
        [
            [
                e.id,
                e.trigger,
                fmt_time(e.started_at),
                e.status.value,
                e.records,
                len(e.violations),
                (e.error or "")[:80],
            ]
            for e in found
        ],
    )


@monitors_app.command("report")
def report(
    name: NameArg,
    execution_id: Annotated[str, typer.Argument(help="The execution's id.", show_default=False)],
    project: ProjectOpt = "default",
    html: HtmlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show an execution (--html: write its report page; --json: its report.json)."""
    with client() as ml:
        handle = ml.project(project).monitors
        execution = handle.execution(name, execution_id)
        document = handle.report(name, execution_id) if json_ else None
        page = handle.report_html(name, execution_id) if html is not None else None
    if html is not None and page is not None:
        html.write_text(page, encoding="utf-8")
    if json_:
        print_json(document)
    else:
        _execution(execution)


@monitors_app.command("constraints")
def constraints(
    name: NameArg,
    project: ProjectOpt = "default",
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Replace them with this JSON file.", dir_okay=False),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Show a monitor's constraints as JSON, or replace them (--file)."""
    with client() as ml:
        handle = ml.project(project).monitors
        if file is None:
            monitor = handle.get(name)
        else:
            monitor = handle.set_constraints(name, _constraints_file(file))
    if json_ or file is None:
        typer.echo(json.dumps(monitor.constraints, indent=2))
    else:
        console.print(f"Set constraints v{monitor.constraints_version} of monitor {monitor.name}.")


@monitors_app.command("baseline")
def baseline(
    name: NameArg,
    project: ProjectOpt = "default",
    dataset: Annotated[
        str | None, typer.Option(help="Baseline dataset (default: the training data).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Its version (default latest).")] = None,
    model_version: Annotated[
        int | None, typer.Option(min=1, help="Model version (default: the one served now).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Compute a new baseline for a monitor and take its suggested constraints."""
    chosen: Any = None
    if dataset is not None:
        chosen = (dataset, int(version) if version and version.isdigit() else version or "latest")
    with client() as ml:
        monitor = ml.project(project).monitors.baseline(
            name, dataset=chosen, model_version=model_version
        )
    if json_:
        print_json(monitor)
        return
    base = monitor.baseline
    console.print(
        f"Monitor {monitor.name}: baseline {base.version} from {base.dataset.dataset} "
        f"v{base.dataset.version} ({base.source}), model {base.model.name} "
        f"v{base.model.version}; constraints v{monitor.constraints_version}."
    )


@truth_app.command("upload")
def upload(
    endpoint: Annotated[str, typer.Argument(help="The endpoint.", show_default=False)],
    file: Annotated[
        Path,
        typer.Argument(help="CSV, Parquet or JSON Lines file.", show_default=False, dir_okay=False),
    ],
    project: ProjectOpt = "default",
    format: Annotated[
        str | None, typer.Option(help="csv, parquet or jsonl (default: from the suffix).")
    ] = None,
    inference_id_column: Annotated[
        str, typer.Option(help="The inference id column.")
    ] = "inference_id",
    label_column: Annotated[str, typer.Option(help="The label column.")] = "label",
    json_: JsonOpt = False,
) -> None:
    """Upload labels of an endpoint's captured predictions (inference_id, label[, facets])."""
    with client() as ml:
        found = ml.project(project).monitors.upload_ground_truth(
            endpoint, file, format=format, inference_id=inference_id_column, label=label_column
        )
    if json_:
        print_json(found)
        return
    console.print(f"Stored {found.rows} label(s) for endpoint {found.endpoint} ({found.id}).")


@truth_app.command("list")
def list_uploads(
    endpoint: Annotated[str, typer.Argument(help="The endpoint.", show_default=False)],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """List an endpoint's ground-truth uploads, newest first."""
    with client() as ml:
        found = ml.project(project).monitors.ground_truth(endpoint)
    if json_:
        print_json(found)
        return
    table(
        f"Ground truth of {endpoint}",
        ["id", "uploaded", "by", "rows", "columns"],
        [
            [u.id, fmt_time(u.uploaded_at), u.uploaded_by, u.rows, ", ".join(u.columns)]
            for u in found
        ],
    )
