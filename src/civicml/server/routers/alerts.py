"""Alerts: rules on endpoint metrics and monitoring reports, their alerts and deliveries.

The scheduler's loop evaluates the rules (setting ``alerts_enabled``); ``POST …/alerts/evaluate``
does it now (after flushing this server's endpoint counters). Managing rules, evaluating and
testing take ``monitoring.write`` on the project, reading ``monitoring.read``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from civicml.alerts.schemas import (
    Alert,
    EvaluationResult,
    Notification,
    Rule,
    RuleCreate,
    RuleTestResult,
)
from civicml.alerts.service import MAX_LIST, AlertService
from civicml.server.deps import Services, services
from civicml.server.paging import Page, page

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/alerts", tags=["alerts"])
Svc = Annotated[Services, Depends(services)]
Name = Annotated[str, Path(min_length=1, max_length=128, description="The rule's name.")]
AlertId = Annotated[str, Path(min_length=1, max_length=64, description="The alert's id.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST, description="Most recent items to return.")]


def _alerts(svc: Services) -> AlertService:
    return AlertService(svc.ctx)


@router.get("/rules", response_model=list[Rule])
def list_rules(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[Rule]:
    """The project's alert rules by name (`monitoring.read`)."""
    return page(_alerts(svc).list_rules(project), paging, request, response)


@router.post("/rules", response_model=Rule, status_code=201)
def create_rule(project: str, body: RuleCreate, svc: Svc, response: Response) -> Rule:
    """Create an alert rule (`monitoring.write`); a channel this server cannot deliver to (a
    webhook secret or broker URL not configured) is refused with 400."""
    rule = _alerts(svc).create_rule(project, body)
    where = f"/api/v1/projects/{quote(rule.project, safe='')}/alerts/rules"
    response.headers["Location"] = f"{where}/{quote(rule.name, safe='')}"
    return rule


@router.get("/rules/{name}", response_model=Rule)
def get_rule(project: str, name: Name, svc: Svc) -> Rule:
    """One alert rule (`monitoring.read`)."""
    return _alerts(svc).get_rule(project, name)


@router.delete("/rules/{name}", response_model=Rule)
def delete_rule(project: str, name: Name, svc: Svc) -> Rule:
    """Remove a rule; its alerts and deliveries stay listed (`monitoring.write`)."""
    return _alerts(svc).delete_rule(project, name)


@router.post("/rules/{name}/enable", response_model=Rule)
def enable_rule(project: str, name: Name, svc: Svc) -> Rule:
    """Evaluate the rule again (`monitoring.write`)."""
    return _alerts(svc).enable_rule(project, name)


@router.post("/rules/{name}/disable", response_model=Rule)
def disable_rule(project: str, name: Name, svc: Svc) -> Rule:
    """Stop evaluating the rule (`monitoring.write`)."""
    return _alerts(svc).disable_rule(project, name)


@router.post("/rules/{name}/test", response_model=RuleTestResult)
def test_rule(project: str, name: Name, svc: Svc) -> RuleTestResult:
    """Send a test notification to each of the rule's channels now (`monitoring.write`)."""
    return _alerts(svc).test_rule(project, name)


@router.get("/rules/{name}/notifications", response_model=list[Notification])
def rule_notifications(
    project: str, name: Name, svc: Svc, limit: Limit = 100
) -> list[Notification]:
    """The rule's most recent notifications and their delivery tries (`monitoring.read`)."""
    return _alerts(svc).notifications(project, name, limit=limit)


@router.post("/evaluate", response_model=EvaluationResult)
def evaluate(project: str, svc: Svc, request: Request) -> EvaluationResult:
    """Evaluate the project's enabled rules now and deliver what fired or resolved
    (`monitoring.write`)."""
    host = getattr(request.app.state, "serving", None)
    return _alerts(svc).evaluate(project, host=host)


@router.get("", response_model=list[Alert])
def list_alerts(
    project: str,
    svc: Svc,
    limit: Limit = 100,
    firing: Annotated[bool, Query(description="Only alerts still firing.")] = False,
    rule: Annotated[
        str | None, Query(max_length=128, description="Only this rule's alerts.")
    ] = None,
) -> list[Alert]:
    """The project's alerts, newest first (`monitoring.read`)."""
    return _alerts(svc).list_alerts(project, firing=firing, rule=rule, limit=limit)


@router.get("/{alert_id}", response_model=Alert)
def get_alert(project: str, alert_id: AlertId, svc: Svc) -> Alert:
    """One alert (`monitoring.read`)."""
    return _alerts(svc).get_alert(project, alert_id)


@router.get("/{alert_id}/deliveries", response_model=list[Notification])
def alert_deliveries(project: str, alert_id: AlertId, svc: Svc) -> list[Notification]:
    """Every notification of the alert (fired, resolved) with each delivery try
    (`monitoring.read`)."""
    return _alerts(svc).deliveries(project, alert_id)
