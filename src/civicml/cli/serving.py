"""``civicml endpoints``: deploy approved model versions, switch versions, invoke them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table
from civicml.core.errors import InvalidInputError

if TYPE_CHECKING:  # imported lazily: `civicml endpoints --help` stays fast
    from civicml.evaluation.explain_schemas import LocalExplanation
    from civicml.sdk.endpoints import EndpointsHandle
    from civicml.serving.schemas import EndpointInfo

endpoints_app = typer.Typer(
    help="Real-time endpoints: serve Approved model versions.", no_args_is_help=True
)
CaptureOpt = Annotated[
    float | None,
    typer.Option("--capture-percent", min=0, max=100, help="Share of requests captured, 0-100."),
]


def _handle(ml: Any, project: str) -> EndpointsHandle:
    return ml.project(project).endpoints  # type: ignore[no-any-return]


def _print(info: EndpointInfo, json_: bool, verb: str = "") -> None:
    if json_:
        print_json(info)
        return
    capture = f"{info.capture.percent:g}%" if info.capture.enabled else "off"
    console.print(
        f"{verb}{info.name}: {info.model_name} v{info.model_version} ({info.status.value}), "
        f"capture {capture}",
        markup=False,
    )
    if info.stats is not None:  # counted by the process that serves it (a server)
        stats = info.stats
        console.print(
            f"  since {fmt_time(stats.since)}: {stats.invocations} answered, "
            f"{stats.input_errors} refused input, {stats.output_errors} model output errors",
            markup=False,
        )


@endpoints_app.command("deploy")
def deploy(
    name: str,
    model: str,
    version: Annotated[str, typer.Argument(help="Version number or alias (Approved).")],
    project: ProjectOpt = "default",
    capture_percent: CaptureOpt = 100.0,
    json_: JsonOpt = False,
) -> None:
    """Serve VERSION of MODEL as endpoint NAME."""
    with client() as ml:
        endpoint = _handle(ml, project).deploy(
            name, model=model, version=version, capture_percent=capture_percent or 0.0
        )
    _print(endpoint.info, json_, "Deployed ")


@endpoints_app.command("list")
def list_endpoints(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List the endpoints of a project."""
    with client() as ml:
        found = [e.info for e in _handle(ml, project).list()]
    if json_:
        print_json(found)
        return
    table(
        f"Endpoints of {project}",
        ["name", "model", "version", "status", "capture", "updated", "by"],
        [
            [
                e.name,
                e.model_name,
                e.model_version,
                e.status.value,
                f"{e.capture.percent:g}%" if e.capture.enabled else "off",
                fmt_time(e.updated_at),
                e.updated_by,
            ]
            for e in found
        ],
    )


@endpoints_app.command("show")
def show(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show an endpoint."""
    with client() as ml:
        info = _handle(ml, project).get(name).info
    _print(info, json_)


@endpoints_app.command("update")
def update(
    name: str,
    version: Annotated[
        str | None, typer.Option("--version", help="Approved version to serve.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Another model to serve.")] = None,
    project: ProjectOpt = "default",
    capture_percent: CaptureOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Switch an endpoint to another version (no request fails) or change its capture."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        endpoint.update(version, model=model, capture_percent=capture_percent)
    _print(endpoint.info, json_, "Updated ")


@endpoints_app.command("delete")
def delete(name: str, project: ProjectOpt = "default") -> None:
    """Stop serving and remove an endpoint (its capture files stay)."""
    with client() as ml:
        _handle(ml, project).get(name).delete()
    console.print(f"Deleted endpoint {name}", markup=False)


@endpoints_app.command("capture-dataset")
def capture_dataset(
    name: str,
    project: ProjectOpt = "default",
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name (default NAME-capture).")
    ] = None,
    metadata: Annotated[
        bool,
        typer.Option(
            "--metadata",
            help="Add inference_id, inference_time, model_version and caller columns.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Store the requests captured so far as a dataset version (for a drift report)."""
    with client() as ml:
        endpoint = _handle(ml, project).get(name)
        version = endpoint.capture_to_dataset(dataset, metadata=metadata)
    if json_:
        print_json(version)
    else:
        console.print(
            f"{version.name} v{version.version}: {version.row_count} captured rows", markup=False
        )


@endpoints_app.command("invoke")
def invoke(
    name: str,
    file: Annotated[
        Path | None, typer.Argument(help='JSON file: {"records": [...]}, [...] or {...}.')
    ] = None,
    record: Annotated[
        str | None, typer.Option("--record", help="One record as JSON: '{\"age\": 41}'.")
    ] = None,
    project: ProjectOpt = "default",
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Also show why: SHAP attributions of each record's raw input columns.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Predict with an endpoint for the records of FILE or one --record."""
    rows = _records(file, record)
    with client() as ml:
        result = _handle(ml, project).get(name).invoke(rows, explain=explain)
    if json_:
        print_json(result)
        return
    columns = ["#", "prediction"] + [f"p({c})" for c in result.classes]
    probabilities = result.probabilities or [[] for _ in result.predictions]
    table(
        f"{name} (model version {result.model_version})",
        columns,
        [
            [i, p, *(f"{x:.4f}" for x in probs)]
            for i, (p, probs) in enumerate(zip(result.predictions, probabilities, strict=True))
        ],
    )
    if result.explanations:
        _print_explanations(result.explanations)


#: Attributions shown per record and output in the table (all of them are in --json).
TOP_ATTRIBUTIONS = 5


def _print_explanations(explanations: list[LocalExplanation]) -> None:
    space = explanations[0].output_space
    rows = []
    for i, found in enumerate(explanations):
        for output in found.outputs:
            ranked = sorted(output.attributions.items(), key=lambda kv: -abs(kv[1]))
            top = ", ".join(f"{c} {v:+.4f}" for c, v in ranked[:TOP_ATTRIBUTIONS])
            label = "value" if output.label is None else str(output.label)
            rows.append([i, label, f"{output.base_value:.4f}", f"{output.output:.4f}", top])
    table(
        f"Why ({explanations[0].explainer} SHAP, {space}: base + attributions = output)",
        ["#", "output", "base", "output value", "largest attributions"],
        rows,
    )


def _records(file: Path | None, record: str | None) -> Any:
    if (file is None) == (record is None):
        raise InvalidInputError(
            "Give the records as a JSON file or one --record, not both or neither.",
            hint='civicml endpoints invoke NAME --record \'{"age": 41, "region": "north"}\'',
        )
    source = f"--record {record!r}" if record is not None else str(file)
    try:
        text = record if record is not None else Path(str(file)).read_text(encoding="utf-8")
        value = json.loads(text)
    except (OSError, ValueError) as err:
        raise InvalidInputError(
            f"Cannot read records from {source}: {err}.",
            hint='Write JSON such as {"records": [{"age": 41}]} or one record {"age": 41}.',
        ) from err
    if isinstance(value, dict) and set(value) == {"records"}:
        value = value["records"]
    return value
