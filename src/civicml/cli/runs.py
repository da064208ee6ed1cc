"""``civicml runs``: start, log to, end, search and inspect runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from civicml.cli._common import (
    JsonOpt,
    ProjectOpt,
    client,
    console,
    err_console,
    fmt_time,
    parse_pairs,
    print_json,
    table,
)
from civicml.cli.rules import check_rules

if TYPE_CHECKING:  # imported lazily: `civicml runs --help` stays fast
    from civicml.tracking.schemas import Run

runs_app = typer.Typer(help="Runs: params, metrics, tags, artifacts, status.", no_args_is_help=True)


def _show_runs(title: str, found: list[Run]) -> None:
    keys = sorted({k for r in found for k in r.metrics})[:6]
    table(
        title,
        ["id", "experiment", "name", "status", "started", *keys],
        [
            [
                r.id,
                r.experiment,
                r.name,
                r.status.value,
                fmt_time(r.start_time),
                *(f"{r.metrics[k]:.4g}" if k in r.metrics else "" for k in keys),
            ]
            for r in found
        ],
    )


@runs_app.command("list")
def list_runs(
    project: ProjectOpt = "default",
    filter_: Annotated[
        str | None, typer.Option("--filter", "-f", help='e.g. "metrics.auc > 0.8"')
    ] = None,
    order_by: Annotated[
        list[str] | None, typer.Option("--order-by", help="e.g. 'metrics.auc DESC'")
    ] = None,
    experiment: Annotated[list[str] | None, typer.Option("--experiment", "-e")] = None,
    max_results: Annotated[int, typer.Option("--max-results", "-n")] = 100,
    json_: JsonOpt = False,
) -> None:
    """List or search runs (MLflow's filter syntax). A metric, param or tag key that no run
    has is named on stderr with the keys that exist."""
    with client() as ml:
        page = ml.backend.search_runs(
            project,
            experiments=experiment,
            filter=filter_,
            order_by=order_by,
            max_results=max_results,
        )
    for message in page.warnings:
        err_console.print(f"Warning: {message}", markup=False)
    found = page.runs
    if json_:
        print_json(found)
    else:
        _show_runs(f"Runs of {project}", found)


@runs_app.command("show")
def show_run(run_id: str, json_: JsonOpt = False) -> None:
    """Show a run with its params, tags and latest metrics."""
    with client() as ml:
        run = ml.backend.get_run(run_id)
    if json_:
        print_json(run)
        return
    rows = [
        ["project", run.project],
        ["experiment", run.experiment],
        ["name", run.name],
        ["status", run.status.value],
        ["started", fmt_time(run.start_time)],
        ["ended", fmt_time(run.end_time)],
        ["by", run.created_by],
    ]
    rows += [[f"param {k}", v] for k, v in sorted(run.params.items())]
    rows += [[f"tag {k}", v] for k, v in sorted(run.tags.items())]
    rows += [[f"metric {k}", f"{v:.6g}"] for k, v in sorted(run.metrics.items())]
    table(f"Run {run.id}", ["field", "value"], rows)


@runs_app.command("create")
def create_run(
    project: ProjectOpt = "default",
    experiment: Annotated[str, typer.Option("--experiment", "-e")] = "default",
    name: Annotated[str | None, typer.Option()] = None,
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Start a run (for scripts that log through the CLI; it stays running until 'runs end')."""
    with client() as ml:
        # This process ends at once, so the run is not tied to it: only heartbeats count.
        run = ml.backend.create_run(
            project,
            experiment,
            name,
            parse_pairs(param, "Param"),
            parse_pairs(tag, "Tag"),
            track_process=False,
        )
    if json_:
        print_json(run)
    else:
        console.print(run.id)


@runs_app.command("log-param")
def log_param(run_id: str, key: str, value: str) -> None:
    """Record a parameter (immutable)."""
    with client() as ml:
        ml.backend.log_params(run_id, {key: value})


@runs_app.command("set-tag")
def set_tag(run_id: str, key: str, value: str) -> None:
    """Set a tag."""
    with client() as ml:
        ml.backend.set_tags(run_id, {key: value})


@runs_app.command("log-metric")
def log_metric(
    run_id: str, key: str, value: float, step: Annotated[int, typer.Option()] = 0
) -> None:
    """Record one metric value (durable when the command returns)."""
    from civicml.tracking.schemas import MetricValue

    with client() as ml:
        ml.backend.writer.submit(
            run_id, [MetricValue(key=key, value=value, step=step)], synchronous=True
        )


@runs_app.command("metrics")
def metric_history(run_id: str, key: str, json_: JsonOpt = False) -> None:
    """Every value of one metric, by step."""
    with client() as ml:
        values = ml.backend.metric_history(run_id, key)
    if json_:
        print_json(values)
    else:
        table(
            f"{key} of {run_id}",
            ["step", "value", "timestamp"],
            [[v.step, f"{v.value:.6g}", v.timestamp] for v in values],
        )


@runs_app.command("end")
def end_run(
    run_id: str, status: Annotated[str, typer.Option()] = "finished", json_: JsonOpt = False
) -> None:
    """End a run as finished, failed or killed."""
    with client() as ml:
        run = ml.backend.end_run(run_id, status)
    if json_:
        print_json(run)
    else:
        console.print(f"Run {run.id} is {run.status.value}")


@runs_app.command("log-artifact")
def log_artifact(
    run_id: str,
    file: Path,
    path: Annotated[str | None, typer.Option(help="Artifact path in the run.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Store a local file as an artifact of the run."""
    from civicml.sdk.client import RunHandle

    with client() as ml:
        handle = RunHandle(ml.backend, ml.backend.get_run(run_id))
        if path:
            info = handle.log_bytes(_read(file), path)
        else:
            info = handle.log_artifact(file)
    if json_:
        print_json(info)
    else:
        console.print(f"{info.path}  sha256:{info.digest}  {info.size} bytes")


def _read(file: Path) -> bytes:
    from civicml.core.errors import InvalidInputError

    if file.is_symlink() or not file.is_file():
        raise InvalidInputError(f"{file} is not a regular file.")
    return file.read_bytes()


@runs_app.command("artifacts")
def list_artifacts(
    run_id: str, prefix: Annotated[str | None, typer.Option()] = None, json_: JsonOpt = False
) -> None:
    """List a run's artifacts."""
    with client() as ml:
        found = ml.backend.list_artifacts(run_id, prefix)
    if json_:
        print_json(found)
    else:
        table(
            f"Artifacts of {run_id}",
            ["path", "size", "sha256"],
            [[a.path, a.size, a.digest[:16]] for a in found],
        )


@runs_app.command("download")
def download(
    run_id: str, path: str, output: Annotated[Path | None, typer.Option("--output", "-o")] = None
) -> None:
    """Write an artifact's verified bytes to a file (or stdout)."""
    with client() as ml:
        data = ml.backend.read_artifact(run_id, path)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)
        console.print(f"Wrote {len(data)} bytes to {output}")


@runs_app.command("recover")
def recover(json_: JsonOpt = False) -> None:
    """Mark runs whose process died (or whose heartbeat stopped) as killed."""
    with client() as ml:
        if ml.backend.remote:
            from civicml.core.errors import InvalidInputError

            raise InvalidInputError(
                "'runs recover' works on the embedded store; the server "
                "recovers abandoned runs by itself every minute."
            )
        killed = ml.backend.tracking.recover_abandoned()
    if json_:
        print_json(killed)
    else:
        console.print(f"Marked {len(killed)} abandoned run(s) killed")


runs_app.command("rules")(check_rules)  # defined in civicml.cli.rules
