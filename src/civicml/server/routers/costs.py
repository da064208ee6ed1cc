"""Costs: the cost report (JSON and HTML), project budgets, and a run's measured usage."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from civicml.costs.schemas import MAX_AMOUNT, BudgetStatus, CostReport, GroupBy, RunUsage
from civicml.costs.service import CostService
from civicml.server.deps import Services, services
from civicml.server.html import html_response
from civicml.tracking.usage import record_run_usage

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["costs"])
Svc = Annotated[Services, Depends(services)]
Since = Annotated[
    datetime | None,
    Query(description="Start (ISO date or time, UTC when no offset); default: this month's."),
]
Until = Annotated[datetime | None, Query(description="End, exclusive; default: now.")]
By = Annotated[GroupBy, Query(description="One row per run, pipeline, endpoint or project.")]


class BudgetBody(BaseModel):
    """A project's monthly budget."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    amount: float = Field(
        ge=0, le=MAX_AMOUNT, description="Amount per calendar month (UTC), in the currency."
    )
    warn_fraction: float = Field(
        default=0.8, gt=0, le=1, description="Share of the amount that triggers the warning."
    )
    hard_stop: bool = Field(
        default=False, description="Refuse new runs and pipeline executions once it is spent."
    )


def _costs(svc: Services) -> CostService:
    return CostService(svc.ctx)


@router.get("/costs", response_model=CostReport)
def all_costs(svc: Svc, since: Since = None, until: Until = None, by: By = "project") -> CostReport:
    """Usage and cost of every project the caller may read (`projects.read`)."""
    return _costs(svc).report(None, since=since, until=until, by=by)


@router.get("/projects/{project}/costs", response_model=CostReport)
def project_costs(
    project: str, svc: Svc, since: Since = None, until: Until = None, by: By = "project"
) -> CostReport:
    """Usage and cost of one project over a period, by run, pipeline, endpoint or project
    (`projects.read`)."""
    return _costs(svc).report(project, since=since, until=until, by=by)


@router.get("/projects/{project}/costs.html", response_class=Response)
def project_costs_html(
    project: str, svc: Svc, since: Since = None, until: Until = None, by: By = "project"
) -> Response:
    """The cost report as a self-contained HTML page with a bar chart (no scripts)."""
    return html_response(_costs(svc).report_html(project, since=since, until=until, by=by))


@router.get("/projects/{project}/budget", response_model=BudgetStatus | None)
def get_budget(project: str, svc: Svc) -> BudgetStatus | None:
    """The project's budget and this month's spend against it; null when it has none
    (`projects.read`)."""
    return _costs(svc).get_budget(project)


@router.put("/projects/{project}/budget", response_model=BudgetStatus)
def set_budget(project: str, body: BudgetBody, svc: Svc) -> BudgetStatus:
    """Set or replace the project's monthly budget (`members.write`)."""
    return _costs(svc).set_budget(
        project, amount=body.amount, warn_fraction=body.warn_fraction, hard_stop=body.hard_stop
    )


@router.delete("/projects/{project}/budget", status_code=204)
def clear_budget(project: str, svc: Svc) -> Response:
    """Remove the project's budget (`members.write`)."""
    _costs(svc).clear_budget(project)
    return Response(status_code=204)


@router.post("/runs/{run_id}/usage", status_code=204)
def add_run_usage(
    run_id: Annotated[str, Path(min_length=1, max_length=64, description="Run id.")],
    body: RunUsage,
    svc: Svc,
) -> Response:
    """Add usage measured where the run's work ran to the run (`experiments.write`)."""
    record_run_usage(svc.ctx, run_id, body)
    return Response(status_code=204)
