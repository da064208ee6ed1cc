"""Pipeline executions: list, read, the HTML graph, cancel.

Pipelines are Python functions of the process that runs them, so the server does not run them
(``civicml pipelines run`` and ``ml.pipelines.run`` do, embedded); it reads the executions they
recorded and can mark a running or waiting one cancelled.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from civicml.pipelines.schemas import Execution
from civicml.pipelines.service import PipelineService
from civicml.server.deps import Services, services
from civicml.server.html import html_response
from civicml.server.paging import Page, page

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["pipelines"])
Svc = Annotated[Services, Depends(services)]


def _pipelines(svc: Services) -> PipelineService:
    return PipelineService(svc.ctx)


@router.get("/projects/{project}/pipelines/executions", response_model=list[Execution])
def list_executions(
    project: str,
    svc: Svc,
    paging: Page,
    request: Request,
    response: Response,
    pipeline: Annotated[str | None, Query(description="Only this pipeline's.")] = None,
) -> list[Execution]:
    """The project's pipeline executions, newest first (`experiments.read`)."""
    found = _pipelines(svc).list(project, pipeline=pipeline)
    return page(found, paging, request, response)


@router.get("/pipelines/executions/{execution_id}", response_model=Execution)
def get_execution(execution_id: str, svc: Svc) -> Execution:
    """One execution with its steps, cache keys and edges (`experiments.read`)."""
    return _pipelines(svc).get(execution_id)


@router.get("/pipelines/executions/{execution_id}/graph.html", response_class=Response)
def execution_graph(execution_id: str, svc: Svc) -> Response:
    """The execution's graph as a self-contained HTML page (inline SVG; no scripts)."""
    return html_response(_pipelines(svc).graph_html(execution_id))


@router.post("/pipelines/executions/{execution_id}/cancel", response_model=Execution)
def cancel_execution(execution_id: str, svc: Svc) -> Execution:
    """Mark a running or waiting execution cancelled (`experiments.write`)."""
    return _pipelines(svc).cancel(execution_id)
