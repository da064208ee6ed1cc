"""Sources: database tables and queries and message streams ingested as dataset versions.

Adding, changing, running and removing sources take ``sources.write`` on the project (a run
also ``datasets.write``), reading them ``sources.read``. Nothing answered holds a credential.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from civicml.server.deps import Services, services
from civicml.server.paging import Page, page
from civicml.sources.schemas import Source, SourceCreate, SourceRun, SourceStatus, SourceUpdate
from civicml.sources.service import MAX_RUNS, SourceService

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["sources"])
Svc = Annotated[Services, Depends(services)]
Name = Annotated[str, Path(min_length=1, max_length=128, description="The source's name.")]
Limit = Annotated[int, Query(ge=1, le=MAX_RUNS, description="Most recent runs to return.")]


def _where(source: Source) -> str:
    return (
        f"/api/v1/projects/{quote(source.project, safe='')}/sources/{quote(source.name, safe='')}"
    )


@router.get("/sources", response_model=list[Source])
def list_sources(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[Source]:
    """The project's sources by name (`sources.read`)."""
    return page(SourceService(svc.ctx).list(project), paging, request, response)


@router.post("/sources", response_model=Source, status_code=201)
def create_source(project: str, body: SourceCreate, svc: Svc, response: Response) -> Source:
    """Add a database or stream source (`sources.write`)."""
    source = SourceService(svc.ctx).create(project, body)
    response.headers["Location"] = _where(source)
    return source


@router.get("/sources/{name}", response_model=Source)
def get_source(project: str, name: Name, svc: Svc) -> Source:
    """One source with its committed position (`sources.read`)."""
    return SourceService(svc.ctx).get(project, name)


@router.patch("/sources/{name}", response_model=Source)
def update_source(project: str, name: Name, body: SourceUpdate, svc: Svc) -> Source:
    """Change the schedule or description, or pause / resume (`sources.write`)."""
    return SourceService(svc.ctx).update(project, name, body)


@router.delete("/sources/{name}", response_model=Source)
def delete_source(project: str, name: Name, svc: Svc) -> Source:
    """Remove a source and its run records; its dataset versions stay (`sources.write`)."""
    return SourceService(svc.ctx).delete(project, name)


@router.post("/sources/{name}/run", response_model=SourceRun, status_code=201)
def run_source(project: str, name: Name, svc: Svc, response: Response) -> SourceRun:
    """Run the source now: what is new becomes dataset versions (`sources.write`,
    `datasets.write`)."""
    run = SourceService(svc.ctx).run(project, name)
    response.headers["Location"] = f"/api/v1/projects/{quote(project, safe='')}/sources/" + (
        f"{quote(run.source, safe='')}/runs"
    )
    return run


@router.get("/sources/{name}/runs", response_model=list[SourceRun])
def list_runs(project: str, name: Name, svc: Svc, limit: Limit = 20) -> list[SourceRun]:
    """The source's runs, newest first (`sources.read`)."""
    return SourceService(svc.ctx).runs(project, name, limit=limit)


@router.get("/sources/{name}/status", response_model=SourceStatus)
def source_status(
    project: str,
    name: Name,
    svc: Svc,
    lag: Annotated[bool, Query(description="Ask the database or broker for the lag.")] = True,
) -> SourceStatus:
    """The source, its lag and the throughput of its last runs (`sources.read`)."""
    return SourceService(svc.ctx).status(project, name, lag=lag)
