"""``proj.alerts``: alert rules, alerts and their deliveries, embedded or against a server.

The same calls work embedded (the service in-process) and remote
(``/api/v1/projects/{project}/alerts``). Channels are given as dictionaries, e.g.
``{"type": "webhook", "url": "https://ops.agency.example/hooks/civicml"}``; secrets and broker
addresses are the server's settings, never part of a rule.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from civicml.alerts.schemas import (
    Alert,
    EvaluationResult,
    Notification,
    Rule,
    RuleCreate,
    RuleTestResult,
)
from civicml.core.errors import InvalidInputError

__all__ = ["AlertsHandle"]

_RULES: TypeAdapter[list[Rule]] = TypeAdapter(list[Rule])
_ALERTS: TypeAdapter[list[Alert]] = TypeAdapter(list[Alert])
_NOTIFICATIONS: TypeAdapter[list[Notification]] = TypeAdapter(list[Notification])


class AlertsHandle:
    """The alert rules and alerts of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> proj.alerts.create_rule(  # doctest: +SKIP
        ...     "slow-eligibility", source="endpoint", endpoint="eligibility",
        ...     condition="p99_ms > 50", window_s=300, severity="critical",
        ...     channels=[{"type": "webhook", "url": "https://ops.example/hooks/civicml"}])
        >>> proj.alerts.evaluate().outcomes  # doctest: +SKIP
        >>> proj.alerts.list(firing=True)  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    def _service(self) -> Any:
        from civicml.alerts.service import AlertService

        return AlertService(self._backend.ctx)

    @property
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(self._project, safe='')}/alerts"

    def _rule_path(self, name: str) -> str:
        return f"{self._base}/rules/{quote(name, safe='')}"

    # Rules ------------------------------------------------------------------------------------
    def create_rule(
        self,
        name: str,
        *,
        source: str,
        condition: str,
        endpoint: str | None = None,
        variant: str | None = None,
        dataset: str | None = None,
        report_kind: str | None = None,
        column: str | None = None,
        window_s: int | None = None,
        min_requests: int = 1,
        severity: str = "warning",
        cooldown_s: int = 300,
        channels: Sequence[Mapping[str, Any]] = (),
        description: str = "",
        enabled: bool = True,
    ) -> Rule:
        """Create an alert rule (``source``: ``"endpoint"`` or ``"monitoring"``).

        Args:
            name: Unique in the project.
            source: ``"endpoint"`` (serving counters) or ``"monitoring"`` (stored reports).
            condition: ``"<metric> <op> <value>"``, e.g. ``"p99_ms > 50"``,
                ``"error_rate > 0.01"`` or ``"verdict == drift"``.
            endpoint: Endpoint rules: only this endpoint (default every one).
            variant: Endpoint rules: only this variant of ``endpoint``.
            dataset: Monitoring rules: only reports on this dataset (default every one).
            report_kind: Monitoring rules: only reports of this kind, e.g. ``"drift"``.
            column: Monitoring rules: a column metric (``drift_score``, ``psi``...) of it.
            window_s: Seconds of traffic (endpoint; 300) or report age (monitoring; 86400).
            min_requests: Endpoint rules: fewer requests in the window is no data.
            severity: ``"info"``, ``"warning"`` or ``"critical"``.
            cooldown_s: No new alert for the same subject within this after one resolved.
            channels: Where to send, e.g. ``[{"type": "nats", "subject": "ops.alerts"}]``.
            description: What the rule is for.
            enabled: False creates it disabled.
        """
        request = _request(
            {
                "name": name,
                "source": source,
                "condition": condition,
                "endpoint": endpoint,
                "variant": variant,
                "dataset": dataset,
                "report_kind": report_kind,
                "column": column,
                "window_s": window_s,
                "min_requests": min_requests,
                "severity": severity,
                "cooldown_s": cooldown_s,
                "channels": [dict(c) for c in channels],
                "description": description,
                "enabled": enabled,
            }
        )
        if self._backend.remote:
            body = request.model_dump(mode="json", exclude_none=True)
            data = self._backend._json("POST", f"{self._base}/rules", json_body=body)
            return Rule.model_validate(data)
        return self._service().create_rule(self._project, request)  # type: ignore[no-any-return]

    def rules(self) -> builtins.list[Rule]:
        """The project's rules by name."""
        if self._backend.remote:
            return _RULES.validate_python(self._backend._json("GET", f"{self._base}/rules"))
        return builtins.list(self._service().list_rules(self._project))

    def rule(self, name: str) -> Rule:
        """One rule."""
        if self._backend.remote:
            return Rule.model_validate(self._backend._json("GET", self._rule_path(name)))
        return self._service().get_rule(self._project, name)  # type: ignore[no-any-return]

    def enable_rule(self, name: str) -> Rule:
        """Evaluate the rule again."""
        return self._change(name, "enable")

    def disable_rule(self, name: str) -> Rule:
        """Stop evaluating the rule."""
        return self._change(name, "disable")

    def _change(self, name: str, how: str) -> Rule:
        if self._backend.remote:
            data = self._backend._json("POST", f"{self._rule_path(name)}/{how}", json_body={})
            return Rule.model_validate(data)
        return getattr(self._service(), f"{how}_rule")(self._project, name)  # type: ignore[no-any-return]

    def delete_rule(self, name: str) -> Rule:
        """Remove the rule (its alerts and deliveries stay listed)."""
        if self._backend.remote:
            return Rule.model_validate(self._backend._json("DELETE", self._rule_path(name)))
        return self._service().delete_rule(self._project, name)  # type: ignore[no-any-return]

    def test(self, name: str) -> RuleTestResult:
        """Send a test notification of the rule to each of its channels now."""
        if self._backend.remote:
            data = self._backend._json("POST", f"{self._rule_path(name)}/test", json_body={})
            return RuleTestResult.model_validate(data)
        return self._service().test_rule(self._project, name)  # type: ignore[no-any-return]

    def notifications(self, rule: str, *, limit: int = 100) -> builtins.list[Notification]:
        """The rule's most recent notifications (tests included), newest first."""
        if self._backend.remote:
            data = self._backend._json(
                "GET", f"{self._rule_path(rule)}/notifications", params={"limit": limit}
            )
            return _NOTIFICATIONS.validate_python(data)
        return builtins.list(self._service().notifications(self._project, rule, limit=limit))

    # Alerts -----------------------------------------------------------------------------------
    def evaluate(self) -> EvaluationResult:
        """Evaluate the project's enabled rules now; deliver what fired or resolved."""
        if self._backend.remote:
            data = self._backend._json("POST", f"{self._base}/evaluate", json_body={})
            return EvaluationResult.model_validate(data)
        host = getattr(self._backend, "_serving", None)  # this process's endpoints, if any
        return self._service().evaluate(self._project, host=host)  # type: ignore[no-any-return]

    def list(
        self, *, firing: bool = False, rule: str | None = None, limit: int = 100
    ) -> builtins.list[Alert]:
        """The project's alerts, newest first (``firing=True``: only those still firing)."""
        if self._backend.remote:
            params: dict[str, Any] = {"limit": limit, "firing": "true" if firing else "false"}
            if rule is not None:
                params["rule"] = rule
            return _ALERTS.validate_python(self._backend._json("GET", self._base, params=params))
        found = self._service().list_alerts(self._project, firing=firing, rule=rule, limit=limit)
        return builtins.list(found)

    def get(self, alert_id: str) -> Alert:
        """One alert."""
        if self._backend.remote:
            path = f"{self._base}/{quote(alert_id, safe='')}"
            return Alert.model_validate(self._backend._json("GET", path))
        return self._service().get_alert(self._project, alert_id)  # type: ignore[no-any-return]

    def deliveries(self, alert_id: str) -> builtins.list[Notification]:
        """Every notification of the alert with each delivery try."""
        if self._backend.remote:
            path = f"{self._base}/{quote(alert_id, safe='')}/deliveries"
            return _NOTIFICATIONS.validate_python(self._backend._json("GET", path))
        return builtins.list(self._service().deliveries(self._project, alert_id))


def _request(values: dict[str, Any]) -> RuleCreate:
    """The create request, or one InvalidInputError saying what is wrong with it."""
    try:
        return RuleCreate.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise InvalidInputError(
            f"Invalid alert rule: {problems}.",
            hint="civicml alerts rules add --help lists the options (docs/alerts.md).",
        ) from None
