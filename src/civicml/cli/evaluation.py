"""``civicml evaluate``: bias and explanation reports of dataset and model versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table
from civicml.core.errors import InvalidInputError

if TYPE_CHECKING:  # imported lazily: `civicml evaluate --help` stays fast
    from civicml.evaluation.records import BiasSummary, Evaluation, ExplanationSummary
    from civicml.sdk.evaluations import EvaluationsHandle

evaluate_app = typer.Typer(
    help="Responsible AI: bias metrics (SageMaker Clarify's) and SHAP explanations, stored as "
    "reports.",
    no_args_is_help=True,
)

OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Also write the HTML report to this file.")
]


def _handle(ml: Any, project: str) -> EvaluationsHandle:
    """The evaluations handle of ``project`` (created when missing, as the other groups do)."""
    return ml.project(project).evaluations  # type: ignore[no-any-return]


def _parse_facet(text: str) -> str | dict[str, Any]:
    """``sex``, ``sex=female,male`` (those values) or ``age>60`` (a continuous facet)."""
    if ">" in text:
        column, _, cut = text.partition(">")
        try:
            return {"column": column.strip(), "threshold": float(cut)}
        except ValueError as err:
            raise InvalidInputError(
                f"Facet {text!r}: threshold {cut!r} is not a number.",
                hint="Write e.g. --facet 'age>60' (facet d = the rows above 60).",
            ) from err
    if "=" in text:
        column, _, values = text.partition("=")
        chosen = [v.strip() for v in values.split(",") if v.strip()]
        if not chosen:
            raise InvalidInputError(
                f"Facet {text!r} names no value.", hint="Write e.g. --facet sex=female"
            )
        return {"column": column.strip(), "values": chosen}
    return text.strip()


def _model_version(ml: Any, project: str, name: str, version: str | None) -> tuple[str, str]:
    """``(name, version)``; without a version, the model's latest one."""
    if version is not None:
        return name, version
    latest = ml.project(project).models.get(name).latest_version
    if latest is None:
        raise InvalidInputError(
            f"Model {name!r} has no versions yet.",
            hint=f"Register one first: civicml models register {name} -p {project}",
        )
    return name, str(latest)


@evaluate_app.command("bias")
def bias(
    dataset: Annotated[str, typer.Argument(help="Dataset with the labels and facets.")],
    label: Annotated[str, typer.Option("--label", "-l", help="The observed label column.")],
    positive_label: Annotated[
        list[str],
        typer.Option("--positive-label", help="Favourable label value (repeatable), e.g. 1."),
    ],
    facets: Annotated[
        list[str],
        typer.Option(
            "--facet",
            "-f",
            help="Facet column (repeatable): 'sex' (every value), 'sex=female,male' (those "
            "values) or 'age>60' (continuous: the rows above 60).",
        ),
    ],
    version: Annotated[
        str, typer.Option("--version", help="Version of DATASET, or 'latest'.")
    ] = "latest",
    group: Annotated[
        str | None, typer.Option("--group", help="Column of strata for CDDL / CDDPL.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Also measure this classification model's predictions."),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="Version or alias of --model (default: latest)."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Heading of the report.")] = None,
    project: ProjectOpt = "default",
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Measure bias on DATASET (and a model's predictions), store the report, print it."""
    specs = [_parse_facet(f) for f in facets]
    with client() as ml:
        handle = _handle(ml, project)
        chosen = None if model is None else _model_version(ml, project, model, model_version)
        evaluation = handle.bias(
            (dataset, version),
            label=label,
            positive_label=positive_label,
            facets=specs,
            group=group,
            model=chosen,
            title=title,
        )
        if output is not None:
            output.write_text(handle.html(evaluation), encoding="utf-8")
    _print(evaluation, json_, output)


@evaluate_app.command("explain")
def explain(
    model: Annotated[str, typer.Argument(help="Registered model to explain.")],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset with the model's input columns.")
    ],
    version: Annotated[
        str | None, typer.Option("--version", help="Version or alias of MODEL (default: latest).")
    ] = None,
    dataset_version: Annotated[
        str, typer.Option("--dataset-version", help="Version of the dataset, or 'latest'.")
    ] = "latest",
    rows: Annotated[int, typer.Option(help="Most rows explained (a seeded sample).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Partial dependence of this many top columns.")
    ] = 5,
    title: Annotated[str | None, typer.Option(help="Heading of the report.")] = None,
    project: ProjectOpt = "default",
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Explain MODEL on a dataset with SHAP, store the report and print the top columns."""
    with client() as ml:
        handle = _handle(ml, project)
        evaluation = handle.explain(
            _model_version(ml, project, model, version),
            (dataset, dataset_version),
            rows=rows,
            seed=seed,
            top_k=top_k,
            title=title,
        )
        if output is not None:
            output.write_text(handle.html(evaluation), encoding="utf-8")
    _print(evaluation, json_, output)


@evaluate_app.command("list")
def list_evaluations(
    project: ProjectOpt = "default",
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: bias_pre_training, bias_post_training, explanation."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only evaluations of this model.")] = None,
    version: Annotated[
        str | None, typer.Option(help="Only those of this version (or alias) of --model.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List the evaluations of a project, newest first."""
    with client() as ml:
        found = _handle(ml, project).list(kind=kind, model=model, version=version)
    if json_:
        print_json(found)
        return
    table(
        f"Evaluations of {project}",
        ["id", "kind", "title", "model", "dataset", "created", "by"],
        [
            [
                e.id,
                e.kind,
                e.title,
                "" if e.model is None else f"{e.model.name} v{e.model.version}",
                f"{e.dataset.dataset} v{e.dataset.version}",
                fmt_time(e.created_at),
                e.created_by,
            ]
            for e in found
        ],
    )


@evaluate_app.command("show")
def show(
    evaluation_id: Annotated[str, typer.Argument(metavar="ID", help="Evaluation id.")],
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show an evaluation: every bias figure, or the importance of each column."""
    from civicml.sdk.evaluations import EvaluationsHandle

    with client() as ml:
        handle = EvaluationsHandle(ml.backend, "default")  # evaluation ids are global
        evaluation = handle.get(evaluation_id)
        if output is not None:
            output.write_text(handle.html(evaluation), encoding="utf-8")
    _print(evaluation, json_, output)


@evaluate_app.command("export")
def export(
    evaluation_id: Annotated[str, typer.Argument(metavar="ID", help="Evaluation id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    format: Annotated[
        str | None,
        typer.Option(help="html (the page) or json (the full result); default: from the suffix."),
    ] = None,
) -> None:
    """Write an evaluation's HTML report or its full JSON result to a file."""
    from civicml.sdk.evaluations import EvaluationsHandle

    chosen = format or ("json" if output.suffix.lower() == ".json" else "html")
    if chosen not in ("html", "json"):
        raise InvalidInputError(
            f"Export format {chosen!r} is not known.", hint="Use --format html or --format json."
        )
    with client() as ml:
        handle = EvaluationsHandle(ml.backend, "default")
        if chosen == "html":
            text = handle.html(evaluation_id)
        else:
            result = handle.result(evaluation_id)
            text = json.dumps(json.loads(result.model_dump_json()), indent=2, ensure_ascii=False)
    output.write_text(text, encoding="utf-8")
    console.print(
        f"{chosen.upper()} of evaluation {evaluation_id} written to {output}", markup=False
    )


def _print(evaluation: Evaluation, json_: bool, output: Path | None) -> None:
    from civicml.evaluation.records import BiasSummary, ExplanationSummary

    if json_:
        print_json(evaluation)
        return
    on = f"{evaluation.dataset.dataset} v{evaluation.dataset.version}"
    what = (
        on
        if evaluation.model is None
        else (f"{evaluation.model.name} v{evaluation.model.version} on {on}")
    )
    console.print(
        f"{evaluation.title} ({evaluation.kind}, {what}). Evaluation {evaluation.id}",
        markup=False,
    )
    summary = evaluation.summary
    if isinstance(summary, BiasSummary):
        _print_bias(summary)
    elif isinstance(summary, ExplanationSummary):
        _print_explanation(summary)
    if output is not None:
        console.print(f"HTML report written to {output}", markup=False)


def _print_bias(summary: BiasSummary) -> None:
    console.print(
        f"Label {summary.label}, positive = {', '.join(summary.positive_label)}. Facet d is the "
        "value in each column, facet a every other row.",
        markup=False,
    )
    for facet in summary.facets:
        by_value = summary.values.get(facet, {})
        labels = list(by_value)
        codes = list(dict.fromkeys(code for v in by_value.values() for code in v))
        table(
            f"Facet {facet}",
            ["metric", *labels],
            [[code, *(_num(by_value[v].get(code)) for v in labels)] for code in codes],
        )


def _print_explanation(summary: ExplanationSummary) -> None:
    console.print(
        f"Explained output {summary.output} ({summary.output_space}, {summary.explainer} "
        f"explainer) over {summary.n_rows:,} rows; partial dependence of "
        f"{', '.join(summary.pd_columns) or 'no column'}.",
        markup=False,
    )
    total = sum(f.importance for f in summary.top_features) or 1.0
    table(
        "Global importance (mean |SHAP|)",
        ["column", "importance", "share"],
        [
            [f.column, _num(f.importance), f"{100 * f.importance / total:.1f}%"]
            for f in summary.top_features
        ],
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
