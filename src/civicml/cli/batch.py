"""``civicml batch``: batch prediction jobs (run, list, show).

A job predicts every row of a dataset version with a model version and stores the predictions as
a new version of an output dataset (SageMaker's batch transform): chunk by chunk, memory bounded,
on Ray when ``compute`` names it. Embedded, ``run`` runs the job in this process; against a
server (``--url``) the server runs it and ``run`` waits for it (``--no-wait`` returns at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

if TYPE_CHECKING:
    from civicml.serving.batch_schemas import BatchJob

batch_app = typer.Typer(
    help="Batch predictions: a dataset version in, a predictions dataset version out.",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


def _output(job: BatchJob) -> str:
    if job.output_version is None:
        return ""
    return f"{job.output_dataset} v{job.output_version}"


def _show(job: BatchJob) -> None:
    duration = "" if job.duration_s is None else f"{job.duration_s:.2f} s"
    table(
        f"Batch job {job.id}",
        ["field", "value"],
        [
            ["project", job.project],
            ["status", job.status.value],
            ["model", f"{job.model_name} v{job.model_version}"],
            ["input", f"{job.input_dataset} v{job.input_version}"],
            ["output", _output(job) or f"{job.output_dataset} (not written)"],
            ["join", job.join.value + (f" (id {job.id_column})" if job.id_column else "")],
            ["explain", "yes" if job.explain else "no"],
            ["chunk rows", job.chunk_rows],
            ["executor", job.executor],
            ["rows", job.rows],
            ["chunks", job.chunks],
            ["created", f"{fmt_time(job.created_at)} by {job.created_by}"],
            ["started", fmt_time(job.started_at)],
            ["duration", duration],
            ["error", job.error],
        ],
    )


@batch_app.command("run")
def run(
    model: Annotated[str, typer.Argument(help="The registered model.", show_default=False)],
    version: Annotated[
        str, typer.Argument(help="Its version number or an alias.", show_default=False)
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", help="The input dataset.", show_default=False)
    ],
    output: Annotated[
        str,
        typer.Option("--output", help="The dataset the predictions become a version of."),
    ],
    dataset_version: Annotated[
        str, typer.Option("--dataset-version", help="The input's version number or 'latest'.")
    ] = "latest",
    join: Annotated[
        str,
        typer.Option(help="'input': input columns beside the outputs; 'none': only an id."),
    ] = "input",
    id_column: Annotated[
        str | None, typer.Option(help="With --join none: the column that identifies a row.")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add per-row SHAP attribution columns.")
    ] = False,
    chunk_rows: Annotated[int, typer.Option(help="Rows predicted at once.")] = 50_000,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Against a server: wait for the job.")
    ] = True,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Predict every row of a dataset version; the predictions become a new dataset version."""
    with client() as ml:
        job = ml.project(project).batch.run(
            model,
            int(version) if version.isdigit() else version,
            dataset=dataset,
            dataset_version=dataset_version,
            output=output,
            join=join,
            id_column=id_column,
            explain=explain,
            chunk_rows=chunk_rows,
            wait=wait,
        )
    if json_:
        print_json(job)
        return
    if job.output_version is None:
        console.print(f"Batch job {job.id} is {job.status.value}.")
        return
    console.print(
        f"Batch job {job.id} succeeded: {job.rows:,} row(s) in {job.chunks} chunk(s) -> "
        f"dataset {_output(job)}."
    )


@batch_app.command("list")
def list_jobs(
    project: ProjectOpt = "default",
    status: Annotated[
        str | None, typer.Option(help="Only jobs queued, running, succeeded or failed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most recent jobs.")] = 100,
    json_: JsonOpt = False,
) -> None:
    """List a project's batch jobs, newest first."""
    with client() as ml:
        found = ml.project(project).batch.list(limit=limit, status=status)
    if json_:
        print_json(found)
        return
    table(
        f"Batch jobs of {project}",
        ["id", "status", "model", "input", "output", "rows", "created"],
        [
            [
                j.id,
                j.status.value,
                f"{j.model_name} v{j.model_version}",
                f"{j.input_dataset} v{j.input_version}",
                _output(j),
                j.rows,
                fmt_time(j.created_at),
            ]
            for j in found
        ],
    )


@batch_app.command("show")
def show(job_id: JobArg, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show a batch job: status, counts, timings, its output version or why it failed."""
    with client() as ml:
        job = ml.project(project).batch.get(job_id)
    if json_:
        print_json(job)
        return
    _show(job)
