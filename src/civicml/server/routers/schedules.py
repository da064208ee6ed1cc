"""Schedules: cron schedules and event triggers that start pipelines.

The server's scheduler thread (setting ``scheduler_enabled``) or ``civicml scheduler`` fires
them; these routes manage them. Creating, pausing, resuming and deleting take
``experiments.write`` on the project, reading ``experiments.read``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from civicml.pipelines.schedule_schemas import Firing, Schedule, ScheduleCreate
from civicml.pipelines.schedules import MAX_FIRINGS, ScheduleService
from civicml.server.deps import Services, services
from civicml.server.paging import Page, page

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/schedules", tags=["schedules"])
Svc = Annotated[Services, Depends(services)]
Name = Annotated[str, Path(min_length=1, max_length=128, description="The schedule's name.")]


def _schedules(svc: Services) -> ScheduleService:
    return ScheduleService(svc.ctx)


@router.get("", response_model=list[Schedule])
def list_schedules(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[Schedule]:
    """The project's schedules by name (`experiments.read`)."""
    return page(_schedules(svc).list(project), paging, request, response)


@router.post("", response_model=Schedule, status_code=201)
def create_schedule(project: str, body: ScheduleCreate, svc: Svc) -> Schedule:
    """Create a schedule (`experiments.write`); its pipeline module must be inside the
    server's `pipeline_modules` setting (400 otherwise)."""
    return _schedules(svc).create(project, body)


@router.get("/{name}", response_model=Schedule)
def get_schedule(project: str, name: Name, svc: Svc) -> Schedule:
    """One schedule (`experiments.read`)."""
    return _schedules(svc).get(project, name)


@router.post("/{name}/pause", response_model=Schedule)
def pause_schedule(project: str, name: Name, svc: Svc) -> Schedule:
    """Stop firing it (`experiments.write`)."""
    return _schedules(svc).pause(project, name)


@router.post("/{name}/resume", response_model=Schedule)
def resume_schedule(project: str, name: Name, svc: Svc) -> Schedule:
    """Fire it again from now on (`experiments.write`)."""
    return _schedules(svc).resume(project, name)


@router.delete("/{name}", response_model=Schedule)
def delete_schedule(project: str, name: Name, svc: Svc) -> Schedule:
    """Delete it and its firing records; their executions stay (`experiments.write`)."""
    return _schedules(svc).delete(project, name)


@router.get("/{name}/firings", response_model=list[Firing])
def list_firings(
    project: str,
    name: Name,
    svc: Svc,
    limit: Annotated[
        int, Query(ge=1, le=MAX_FIRINGS, description="Most recent firings to return.")
    ] = 100,
) -> list[Firing]:
    """The schedule's most recent firings, newest first (`experiments.read`)."""
    return _schedules(svc).firings(project, name, limit=limit)
