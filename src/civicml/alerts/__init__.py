"""Alerts: rules on endpoint metrics and monitoring reports, delivered to webhooks, e-mail and
message brokers, with de-duplication and cool-down.

``AlertService`` manages a project's rules and reads its alerts and deliveries; it evaluates them
on demand, and ``AlertLoop`` (driven by the scheduler) evaluates them continuously. An alert
that fires records the audit event ``alert.fired``, which a schedule can trigger a pipeline on
(retraining). ``verify_signature`` is what a webhook receiver runs on each request.
"""

from civicml.alerts.channels import sign, verify_signature
from civicml.alerts.loop import AlertLoop
from civicml.alerts.schemas import (
    Alert,
    AlertStatus,
    EvaluationOutcome,
    EvaluationResult,
    Notification,
    Rule,
    RuleCreate,
    RuleTestResult,
    Severity,
    Source,
)
from civicml.alerts.service import AlertService

__all__ = [
    "Alert",
    "AlertLoop",
    "AlertService",
    "AlertStatus",
    "EvaluationOutcome",
    "EvaluationResult",
    "Notification",
    "Rule",
    "RuleCreate",
    "RuleTestResult",
    "Severity",
    "Source",
    "sign",
    "verify_signature",
]
