"""``civicml pipelines``: run a ``@cm.pipeline`` by reference, list, show, retry, cancel, graph.

A pipeline's steps are Python functions, so ``run`` and ``retry`` import them
(``path/to/file.py:training`` or ``package.module:training``) and run them here, on the embedded
platform; the reading commands and ``cancel`` also work against a server (``--url``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    from civicml.pipelines.dsl import Pipeline
    from civicml.pipelines.schemas import Execution

pipelines_app = typer.Typer(
    help="Pipelines: run @cm.pipeline functions, list and show executions, retry, cancel, graph.",
    no_args_is_help=True,
)

RefArg = Annotated[
    str,
    typer.Argument(
        help="The pipeline: path/to/file.py:function or package.module:function.",
        show_default=False,
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="A parameter value, KEY=VALUE (repeatable); VALUE is read as JSON when it parses.",
    ),
]
WorkersOpt = Annotated[int, typer.Option(help="How many independent steps run at once.")]


def load_pipeline(ref: str) -> Pipeline:
    """The ``@cm.pipeline`` function that ``ref`` (``file.py:name`` or ``module:name``) names."""
    from civicml.core.errors import InvalidInputError
    from civicml.pipelines.dsl import Pipeline

    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise InvalidInputError(
            f"Pipeline reference {ref!r} is not FILE.py:FUNCTION or MODULE:FUNCTION.",
            hint="Write e.g. civicml pipelines run pipelines/training.py:training",
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise InvalidInputError(
                f"Pipeline file {target!r} does not exist.",
                hint="Give the path of the .py file that defines the pipeline.",
            )
        name = f"_civicml_pipeline_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise InvalidInputError(f"Cannot import {target!r} as Python.", hint="Name a .py file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))  # its sibling modules import
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(name, None)
            raise InvalidInputError(
                f"Importing {target!r} failed: {type(err).__name__}: {err}",
                hint="Fix the error in the file (run it with python to see the traceback).",
            ) from err
    else:
        if "" not in sys.path:
            sys.path.insert(0, "")  # modules of the current directory, as `python -m` finds
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise InvalidInputError(
                f"Cannot import module {target!r}: {err}",
                hint="Run from the directory that holds it, or give the file: path/to/file.py:fn",
            ) from err
    found = getattr(module, attr, None)
    if not isinstance(found, Pipeline):
        what = "is not defined" if found is None else f"is a {type(found).__qualname__}"
        raise InvalidInputError(
            f"{attr!r} in {target!r} {what}, not a @cm.pipeline function.",
            hint="Decorate the function with @cm.pipeline and name it after the colon.",
        )
    return found


def _values(items: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in parse_pairs(items, "Param").items():
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


def _embedded(ml: Any, what: str) -> None:
    if ml.backend.remote:
        from civicml.core.errors import ConfigurationError

        raise ConfigurationError(
            f"Pipelines {what} where their code is: the steps are Python functions of this "
            "process, and a civicml server cannot run them.",
            hint="Drop --url (and CIVICML_URL) and run on the embedded platform (--home).",
        )


def _summary(execution: Execution) -> None:
    counts: dict[str, int] = {}
    for s in execution.steps:
        counts[s.status.value] = counts.get(s.status.value, 0) + 1
    steps = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(
        f"Execution {execution.id} of {execution.pipeline}: {execution.status.value} ({steps})"
    )


def _show(execution: Execution) -> None:
    from civicml.pipelines.graph_html import duration

    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in execution.parameters.items())
    table(
        f"Execution {execution.id}",
        ["field", "value"],
        [
            ["pipeline", execution.pipeline],
            ["project", execution.project],
            ["version", execution.version[:12]],
            ["status", execution.status.value],
            ["started", fmt_time(execution.started_at)],
            ["ended", fmt_time(execution.ended_at)],
            ["by", execution.created_by],
            ["parameters", params],
        ],
    )
    table(
        "Steps",
        ["step", "status", "duration", "cached from", "run", "error"],
        [
            [s.step, s.status.value, duration(s), s.cached_from, s.run_id, s.error]
            for s in execution.steps
        ],
    )


@pipelines_app.command("run")
def run(
    ref: RefArg,
    project: ProjectOpt = "default",
    param: ParamOpt = None,
    max_workers: WorkersOpt = 4,
    json_: JsonOpt = False,
) -> None:
    """Run a pipeline here (embedded); unchanged steps come from the cache. Exits 1 when the
    execution failed."""
    with client() as ml:
        _embedded(ml, "run")
        pipe = load_pipeline(ref)
        ml.backend.ensure_project(project)
        execution = ml.pipelines.run(
            pipe, project=project, params=_values(param), max_workers=max_workers
        )
    _report(execution, json_)


@pipelines_app.command("retry")
def retry(execution_id: str, ref: RefArg, json_: JsonOpt = False) -> None:
    """Resume a failed, cancelled or waiting execution with the pipeline's code (embedded)."""
    with client() as ml:
        _embedded(ml, "are retried")
        pipe = load_pipeline(ref)
        execution = ml.pipelines.retry(execution_id, pipe)
    _report(execution, json_)


def _report(execution: Execution, json_: bool) -> None:
    if json_:
        print_json(execution)
    else:
        _summary(execution)
    if execution.status.value == "failed":
        raise typer.Exit(1)


@pipelines_app.command("list")
def list_executions(
    project: ProjectOpt = "default",
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List a project's pipeline executions, newest first."""
    with client() as ml:
        found = ml.pipelines.list(project, pipeline=pipeline)
    if json_:
        print_json(found)
        return
    table(
        f"Pipeline executions of {project}",
        ["id", "pipeline", "status", "started", "ended", "by", "cached"],
        [
            [
                e.id,
                e.pipeline,
                e.status.value,
                fmt_time(e.started_at),
                fmt_time(e.ended_at),
                e.created_by,
                f"{sum(s.status.value == 'cached' for s in e.steps)}/{len(e.steps)}",
            ]
            for e in found
        ],
    )


@pipelines_app.command("show")
def show(execution_id: str, json_: JsonOpt = False) -> None:
    """Show an execution: its steps with status, duration, cache hit, run and error."""
    with client() as ml:
        execution = ml.pipelines.get(execution_id)
    if json_:
        print_json(execution)
    else:
        _show(execution)


@pipelines_app.command("cancel")
def cancel(execution_id: str, json_: JsonOpt = False) -> None:
    """Mark a running or waiting execution cancelled (retry resumes it)."""
    with client() as ml:
        execution = ml.pipelines.cancel(execution_id)
    if json_:
        print_json(execution)
    else:
        console.print(f"Cancelled execution {execution.id} of {execution.pipeline}.")


@pipelines_app.command("graph")
def graph(
    execution_id: str,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the HTML page.")
    ] = Path("graph.html"),
) -> None:
    """Write an execution's graph as one HTML page: each step's status, duration, cache hit."""
    with client() as ml:
        page = ml.pipelines.graph_html(execution_id)
    output.write_text(page, encoding="utf-8")
    console.print(f"Wrote {output}")
