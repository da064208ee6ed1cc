"""``civicml monitoring``: drift reports between dataset versions, listed and shown."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

if TYPE_CHECKING:  # imported lazily: `civicml monitoring --help` stays fast
    from civicml.monitoring.records import Report
    from civicml.monitoring.schemas import DriftReport
    from civicml.sdk.monitoring import MonitoringHandle

monitoring_app = typer.Typer(
    help="Monitoring: data drift reports between dataset versions.", no_args_is_help=True
)
reports_app = typer.Typer(help="Stored monitoring reports.", no_args_is_help=True)
monitoring_app.add_typer(reports_app, name="reports")

OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Also write the HTML report to this file.")
]


def _handle(ml: Any, project: str) -> MonitoringHandle:
    """The monitoring handle of ``project`` (created when missing, as the other groups do)."""
    return ml.project(project).monitoring  # type: ignore[no-any-return]


@monitoring_app.command("drift")
def drift(
    dataset: Annotated[
        str | None, typer.Argument(help="Dataset to check, e.g. captured inputs.")
    ] = None,
    baseline: Annotated[
        str, typer.Option("--baseline", "-b", help="Baseline dataset, e.g. the training data.")
    ] = "",
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            "-e",
            help="Instead of DATASET: an endpoint's captured requests (stored as a dataset "
            "version first).",
        ),
    ] = None,
    version: Annotated[
        str, typer.Option("--version", help="Version of DATASET, or 'latest'.")
    ] = "latest",
    baseline_version: Annotated[
        str, typer.Option("--baseline-version", help="Version of the baseline, or 'latest'.")
    ] = "latest",
    columns: Annotated[
        list[str] | None,
        typer.Option("--column", "-c", help="Compare only this column (repeatable)."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Heading of the report.")] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(
            "--min-rows",
            min=1,
            help="Fewest rows each side needs for a verdict (default: the drift_min_rows "
            "setting, 30); below it the verdict is 'insufficient data'.",
        ),
    ] = None,
    project: ProjectOpt = "default",
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Compare DATASET (or an endpoint's captured requests) with a baseline, store the drift
    report and print its verdict."""
    from civicml.core.errors import InvalidInputError

    if (dataset is None) == (endpoint is None) or not baseline:
        raise InvalidInputError(
            "Name what to check (DATASET or --endpoint, not both) and a --baseline.",
            hint="e.g. civicml monitoring drift --endpoint eligibility --baseline applications",
        )
    with client() as ml:
        handle = _handle(ml, project)
        current: Any = (
            (dataset, version) if endpoint is None else ml.project(project).endpoints.get(endpoint)
        )
        report = handle.drift(
            current,
            baseline=(baseline, baseline_version),
            columns=columns,
            title=title,
            min_rows=min_rows,
        )
        if output is not None:
            output.write_text(handle.html(report), encoding="utf-8")
        if json_:
            print_json(report)
            return
        result = handle.result(report)
    _print_report(report, result)
    if output is not None:
        console.print(f"HTML report written to {output}", markup=False)


@reports_app.command("list")
def list_reports(
    project: ProjectOpt = "default",
    kind: Annotated[str | None, typer.Option(help="Only reports of this kind: drift.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List the reports of a project, newest first."""
    with client() as ml:
        found = _handle(ml, project).reports(kind=kind)
    if json_:
        print_json(found)
        return
    table(
        f"Reports of {project}",
        ["id", "kind", "title", "verdict", "drifted", "violations", "created", "by"],
        [
            [
                r.id,
                r.kind,
                r.title,
                r.summary.verdict,
                f"{r.summary.n_drifted}/{r.summary.n_columns}",
                r.summary.violations,
                fmt_time(r.created_at),
                r.created_by,
            ]
            for r in found
        ],
    )


@reports_app.command("show")
def show_report(
    report_id: Annotated[str, typer.Argument(metavar="ID", help="Report id.")],
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a report: verdict, per-column tests and violations."""
    from civicml.sdk.monitoring import MonitoringHandle

    with client() as ml:
        handle = MonitoringHandle(ml.backend, "default")  # report ids are global
        report = handle.report(report_id)
        if output is not None:
            output.write_text(handle.html(report), encoding="utf-8")
        if json_:
            print_json(report)
            return
        result = handle.result(report)
    _print_report(report, result)


def _print_report(report: Report, result: DriftReport) -> None:
    s = report.summary
    if s.verdict == "insufficient_data":
        floor = report.inputs.min_rows or result.min_rows
        console.print(
            f"{report.title}: INSUFFICIENT DATA - {s.insufficient_data or 'too few rows'}; "
            f"no column judged (floor: --min-rows / setting drift_min_rows = {floor}), "
            f"{s.violations} constraint violation(s). Report {report.id}",
            markup=False,
        )
    else:
        verdict = "DRIFT DETECTED" if s.dataset_drift else "No drift"
        console.print(
            f"{report.title}: {verdict} - {s.n_drifted} of {s.n_columns} columns drifted "
            f"({100 * s.share_drifted:.1f}%; threshold {100 * report.inputs.drift_share:.1f}%), "
            f"{s.violations} constraint violation(s). Report {report.id}",
            markup=False,
        )
    table(
        "Columns",
        ["column", "kind", "test", "score", "threshold", "drift", "missing (cur)"],
        [
            [
                c.column,
                c.kind,
                c.stattest_label,
                _num(c.drift_score),
                _num(c.threshold),
                _column_verdict(c.drift_detected),
                f"{100 * c.missing_share_current:.1f}%",
            ]
            for c in result.columns
        ],
    )
    if result.violations:
        table(
            "Constraint violations",
            ["column", "check", "description"],
            [[v.feature_name, v.constraint_check_type, v.description] for v in result.violations],
        )


def _column_verdict(detected: bool | None) -> str:
    return "not judged" if detected is None else ("DRIFT" if detected else "ok")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
