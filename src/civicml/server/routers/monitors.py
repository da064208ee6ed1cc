"""Monitors: scheduled data-quality, model-quality, bias-drift and attribution-drift monitors of
endpoints, their executions and reports, and the ground truth they join by inference id.

Managing and running monitors and uploading ground truth take ``monitoring.write`` on the
project, reading ``monitoring.read``. Reports are served as the drift reports are: HTML with a
policy that lets only the page's own ``<style>`` apply, JSON as stored.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from civicml.monitors.schemas import (
    Execution,
    GroundTruthRecords,
    GroundTruthUpload,
    Monitor,
    MonitorCreate,
    MonitorUpdate,
)
from civicml.monitors.service import MAX_LIST, MonitorService
from civicml.server.bodies import upload_body
from civicml.server.deps import Services, services
from civicml.server.html import html_response
from civicml.server.paging import Page, page

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["monitors"])
Svc = Annotated[Services, Depends(services)]
Name = Annotated[str, Path(min_length=1, max_length=128, description="The monitor's name.")]
Endpoint = Annotated[str, Path(min_length=1, max_length=128, description="The endpoint.")]
ExecutionId = Annotated[str, Path(min_length=1, max_length=64, description="Execution id.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST, description="Most recent items to return.")]


class ConstraintsBody(BaseModel):
    """New constraints of a monitor."""

    model_config = ConfigDict(extra="forbid")
    constraints: dict[str, Any] = Field(
        description="The monitor type's constraints document (docs/monitors.md)."
    )


class BaselineBody(BaseModel):
    """What to compute a new baseline from (all optional)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str | None = Field(
        default=None, max_length=128, description="A dataset; default the training data."
    )
    version: int | str | None = Field(default=None, description="Its version (or 'latest').")
    model_version: int | None = Field(
        default=None, ge=1, description="The model version; default the endpoint's primary."
    )


def _monitors(svc: Services, request: Request | None = None) -> MonitorService:
    host = None if request is None else getattr(request.app.state, "serving", None)
    return MonitorService(svc.ctx, None if host is None else host.capture)


def _where(monitor: Monitor) -> str:
    return (
        f"/api/v1/projects/{quote(monitor.project, safe='')}/monitors/"
        f"{quote(monitor.name, safe='')}"
    )


@router.get("/monitors", response_model=list[Monitor])
def list_monitors(
    project: str,
    svc: Svc,
    paging: Page,
    request: Request,
    response: Response,
    endpoint: Annotated[
        str | None, Query(max_length=128, description="Only this endpoint's monitors.")
    ] = None,
) -> list[Monitor]:
    """The project's monitors by name (`monitoring.read`)."""
    return page(_monitors(svc).list(project, endpoint=endpoint), paging, request, response)


@router.post("/monitors", response_model=Monitor, status_code=201)
def create_monitor(project: str, body: MonitorCreate, svc: Svc, response: Response) -> Monitor:
    """Create a monitor of an endpoint and compute its baseline (`monitoring.write`)."""
    monitor = _monitors(svc).create(project, body)
    response.headers["Location"] = _where(monitor)
    return monitor


@router.get("/monitors/{name}", response_model=Monitor)
def get_monitor(project: str, name: Name, svc: Svc) -> Monitor:
    """One monitor with its baseline, constraints and latest execution (`monitoring.read`)."""
    return _monitors(svc).get(project, name)


@router.patch("/monitors/{name}", response_model=Monitor)
def update_monitor(project: str, name: Name, body: MonitorUpdate, svc: Svc) -> Monitor:
    """Change the schedule, window or description, or pause / resume (`monitoring.write`)."""
    return _monitors(svc).update(project, name, body)


@router.delete("/monitors/{name}", response_model=Monitor)
def delete_monitor(project: str, name: Name, svc: Svc) -> Monitor:
    """Remove a monitor (`monitoring.write`)."""
    return _monitors(svc).delete(project, name)


@router.put("/monitors/{name}/constraints", response_model=Monitor)
def set_constraints(project: str, name: Name, body: ConstraintsBody, svc: Svc) -> Monitor:
    """Replace the monitor's constraints (`monitoring.write`)."""
    return _monitors(svc).set_constraints(project, name, body.constraints)


@router.post("/monitors/{name}/baseline", response_model=Monitor)
def rebaseline(project: str, name: Name, body: BaselineBody, svc: Svc) -> Monitor:
    """Compute a new baseline and take its suggested constraints (`monitoring.write`)."""
    return _monitors(svc).rebaseline(
        project, name, dataset=body.dataset, version=body.version, model_version=body.model_version
    )


@router.post("/monitors/{name}/run", response_model=Execution, status_code=201)
def run_monitor(
    project: str, name: Name, svc: Svc, request: Request, response: Response
) -> Execution:
    """Run the monitor now on the window ending now (`monitoring.write`)."""
    execution = _monitors(svc, request).run(project, name)
    response.headers["Location"] = f"{request.url.path.rsplit('/', 1)[0]}/executions/{execution.id}"
    return execution


@router.get("/monitors/{name}/executions", response_model=list[Execution])
def list_executions(project: str, name: Name, svc: Svc, limit: Limit = 100) -> list[Execution]:
    """The monitor's executions, newest first (`monitoring.read`)."""
    return _monitors(svc).executions(project, name, limit=limit)


@router.get("/monitors/{name}/executions/{execution_id}", response_model=Execution)
def get_execution(project: str, name: Name, execution_id: ExecutionId, svc: Svc) -> Execution:
    """One execution: status, figures, violations and files (`monitoring.read`)."""
    return _monitors(svc).execution(project, name, execution_id)


@router.get("/monitors/{name}/executions/{execution_id}/html", response_class=Response)
def execution_html(project: str, name: Name, execution_id: ExecutionId, svc: Svc) -> Response:
    """The execution's self-contained HTML report (`monitoring.read`)."""
    with _monitors(svc).open_file(project, name, execution_id, "report.html") as handle:
        return html_response(handle.read())


@router.get("/monitors/{name}/executions/{execution_id}/json", response_class=Response)
def execution_json(project: str, name: Name, execution_id: ExecutionId, svc: Svc) -> Response:
    """The execution's report.json as stored (`monitoring.read`)."""
    with _monitors(svc).open_file(project, name, execution_id, "report.json") as handle:
        return Response(handle.read(), media_type="application/json")


@router.get("/monitors/{name}/html", response_class=Response)
def monitor_html(project: str, name: Name, svc: Svc, limit: Limit = 200) -> Response:
    """The monitor's page: each figure over its executions, plotted (`monitoring.read`)."""
    return html_response(_monitors(svc).page(project, name, limit=limit))


@router.post(
    "/endpoints/{endpoint}/ground-truth", response_model=GroundTruthUpload, status_code=201
)
def upload_records(
    project: str, endpoint: Endpoint, body: GroundTruthRecords, svc: Svc
) -> GroundTruthUpload:
    """Labels of captured predictions as JSON records (`monitoring.write`)."""
    return _monitors(svc).upload_ground_truth(project, endpoint, body.records)


@router.post(
    "/endpoints/{endpoint}/ground-truth/file", response_model=GroundTruthUpload, status_code=201
)
async def upload_file(
    project: str,
    endpoint: Endpoint,
    request: Request,
    svc: Svc,
    format: Annotated[str, Query(description="csv, parquet or jsonl.")] = "csv",
    inference_id: Annotated[
        str, Query(min_length=1, max_length=256, description="The inference id column.")
    ] = "inference_id",
    label: Annotated[
        str, Query(min_length=1, max_length=256, description="The label column.")
    ] = "label",
) -> GroundTruthUpload:
    """Labels as a CSV, Parquet or JSON Lines file (`application/octet-stream`;
    `monitoring.write`)."""
    async with upload_body(request) as spool:
        return await run_in_threadpool(
            lambda: _monitors(svc).upload_ground_truth(
                project, endpoint, spool, format=format, inference_id=inference_id, label=label
            )
        )


@router.get("/endpoints/{endpoint}/ground-truth", response_model=list[GroundTruthUpload])
def list_uploads(
    project: str, endpoint: Endpoint, svc: Svc, limit: Limit = 100
) -> list[GroundTruthUpload]:
    """The endpoint's ground-truth uploads, newest first (`monitoring.read`)."""
    return _monitors(svc).ground_truth(project, endpoint, limit=limit)
