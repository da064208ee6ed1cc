"""Projects and experiments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.types import INT64_MAX
from civicml.governance.schemas import Grant, GrantRequest, Project
from civicml.server.deps import Services, services
from civicml.server.paging import Page, page
from civicml.tracking.schemas import MAX_RUNS_PAGE, Experiment

router = APIRouter(prefix="/api/v1", tags=["projects"])
Svc = Annotated[Services, Depends(services)]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique project name, e.g. 'benefits-eligibility'.")
    description: str = Field(default="", max_length=10_000, description="Free text.")


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Experiment name, unique in its project.")
    description: str = Field(default="", max_length=10_000, description="Free text.")


@router.get("/projects", response_model=list[Project])
def list_projects(svc: Svc, paging: Page, request: Request, response: Response) -> list[Project]:
    return page(svc.projects.list(), paging, request, response)


@router.post("/projects", response_model=Project, status_code=201)
def create_project(body: ProjectCreate, svc: Svc, response: Response) -> Project:
    project = svc.projects.create(body.name, description=body.description)
    response.headers["Location"] = f"/api/v1/projects/{project.name}"
    return project


@router.put("/projects/{project}", response_model=Project)
def ensure_project(project: str, svc: Svc) -> Project:
    """Get the project, creating it when missing (idempotent)."""
    return svc.projects.ensure(project, "projects.read")


@router.get("/projects/{project}", response_model=Project)
def get_project(project: str, svc: Svc) -> Project:
    return svc.projects.get(project, "projects.read")


@router.get("/projects/{project}/members", response_model=list[Grant])
def list_members(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[Grant]:
    """Who holds which role on the project by grant (`projects.read`)."""
    return page(svc.projects.members(project), paging, request, response)


@router.post("/projects/{project}/members", response_model=Grant, status_code=201)
def grant_role(project: str, body: GrantRequest, svc: Svc) -> Grant:
    """Grant a role on the project to a user (`members.write`; granting it again is a no-op)."""
    return svc.projects.grant(project, body.user, body.role)


@router.delete("/projects/{project}/members/{user}/roles/{role}", status_code=204)
def revoke_role(project: str, user: str, role: str, svc: Svc) -> None:
    """Take a role on the project away from a user (`members.write`)."""
    svc.projects.revoke(project, user, role)


@router.get("/projects/{project}/experiments", response_model=list[Experiment])
def list_experiments(
    project: str,
    svc: Svc,
    max_results: Annotated[int, Query(ge=1, le=MAX_RUNS_PAGE)] = MAX_RUNS_PAGE,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> list[Experiment]:
    """Experiments by name, at most ``max_results`` (1-1,000) from ``offset``."""
    return svc.tracking.list_experiments(project, max_results=max_results, offset=offset)


@router.get("/projects/{project}/experiments/{name}", response_model=Experiment)
def get_experiment(project: str, name: str, svc: Svc) -> Experiment:
    return svc.tracking.get_experiment(project, name)


@router.post("/projects/{project}/experiments", response_model=Experiment, status_code=201)
def create_experiment(
    project: str, body: ExperimentCreate, svc: Svc, response: Response
) -> Experiment:
    exp = svc.tracking.create_experiment(project, body.name, description=body.description)
    response.headers["Location"] = f"/api/v1/projects/{project}/experiments/{exp.name}"
    return exp
