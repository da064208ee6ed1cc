"""Monitoring: make drift reports between dataset versions, list them, serve their files.

The HTML report is served with its own Content-Security-Policy: nothing may load or run, and the
one inline ``<style>`` element is allowed by its SHA-256 (no ``'unsafe-inline'``). The report has
no scripts, no ``style=`` attributes and no external resources (its plots are inline SVG).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.types import Float, PositiveInt64
from civicml.monitoring.records import Report
from civicml.monitoring.service import MonitoringService
from civicml.server.deps import Services, services
from civicml.server.html import html_policy, html_response
from civicml.server.paging import Page, page

__all__ = ["html_policy", "router"]  # html_policy: re-exported, where it used to live

router = APIRouter(tags=["monitoring"])
Svc = Annotated[Services, Depends(services)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionSelector(_Body):
    dataset: str = Field(description="Dataset name, e.g. 'applications'.")
    version: PositiveInt64 | str = Field(
        default="latest", description="Version number, or 'latest' (resolved when run)."
    )


class DriftCreate(_Body):
    current: VersionSelector = Field(description="The data to check, e.g. captured inputs.")
    baseline: VersionSelector = Field(description="The reference, e.g. the training data.")
    columns: list[str] | None = Field(
        default=None, description="Compare only these columns (default: every shared column)."
    )
    title: str | None = Field(default=None, max_length=256, description="Report heading.")
    categorical: list[str] | None = Field(
        default=None, description="Columns to treat as categorical whatever their type."
    )
    numerical: list[str] | None = Field(
        default=None, description="Columns to treat as numeric whatever their type."
    )
    drift_share: Float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="The dataset drifts when at least this share of columns drift.",
    )
    min_rows: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        strict=True,
        description="Fewest rows each version needs for a verdict; below it the verdict is "
        "'insufficient_data'. Default: the server's drift_min_rows setting (30).",
    )


def _monitoring(svc: Services) -> MonitoringService:
    return MonitoringService(svc.ctx)


@router.post("/api/v1/projects/{project}/reports/drift", response_model=Report, status_code=201)
def create_drift_report(project: str, body: DriftCreate, svc: Svc, response: Response) -> Report:
    """Compare two dataset versions and store the drift report (JSON and HTML)."""
    report = _monitoring(svc).drift(
        project,
        current=(body.current.dataset, body.current.version),
        baseline=(body.baseline.dataset, body.baseline.version),
        columns=body.columns,
        title=body.title,
        categorical=body.categorical,
        numerical=body.numerical,
        drift_share=body.drift_share,
        min_rows=body.min_rows,
    )
    response.headers["Location"] = f"/api/v1/reports/{report.id}"
    return report


@router.get("/api/v1/projects/{project}/reports", response_model=list[Report])
def list_reports(
    project: str,
    svc: Svc,
    kind: Annotated[str | None, Query(description="Only reports of this kind: 'drift'.")] = None,
    *,
    paging: Page,
    request: Request,
    response: Response,
) -> list[Report]:
    """The reports of a project, newest first."""
    return page(_monitoring(svc).list_reports(project, kind), paging, request, response)


@router.get("/api/v1/reports/{report_id}", response_model=Report)
def get_report(report_id: str, svc: Svc) -> Report:
    """A report: its verdict in brief, the dataset versions compared and its files."""
    return _monitoring(svc).get_report(report_id)


@router.get("/api/v1/reports/{report_id}/html", response_class=Response)
def report_html(report_id: str, svc: Svc) -> Response:
    """The self-contained HTML report (inline CSS and SVG; no scripts, nothing fetched)."""
    with _monitoring(svc).open_report_file(report_id, "report.html") as handle:
        data = handle.read()
    return html_response(data)


@router.get("/api/v1/reports/{report_id}/json", response_class=Response)
def report_json(report_id: str, svc: Svc) -> Response:
    """The full drift report as stored: per-column tests, thresholds, verdicts, violations."""
    with _monitoring(svc).open_report_file(report_id, "report.json") as handle:
        data = handle.read()
    return Response(data, media_type="application/json")
