"""The alerts service: rules per project, their alerts and deliveries, evaluation and tests.

Creating, enabling, disabling and removing rules, evaluating them and sending a test take
``monitoring.write`` on the project; reading rules, alerts and deliveries takes
``monitoring.read``. Every change is one unit of work with its audit event
(``alert.rule.created`` / ``enabled`` / ``disabled`` / ``deleted`` / ``tested``; the
evaluation records ``alert.fired`` and ``alert.resolved``, see :mod:`civicml.alerts.engine`).
The scheduler's loop evaluates rules by itself (:class:`civicml.alerts.loop.AlertLoop`);
:meth:`AlertService.evaluate` does it now, for one project.
"""

from __future__ import annotations

import builtins
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.alerts._tables import (
    alert_delivery_attempts,
    alert_notifications,
    alert_rules,
    alert_states,
    alerts,
)
from civicml.alerts.channels import check_channel
from civicml.alerts.conditions import parse_condition
from civicml.alerts.engine import Engine, RuleRow, _condition_text
from civicml.alerts.schemas import (
    Alert,
    AlertStatus,
    Channel,
    DeliveryAttempt,
    EvaluationResult,
    Notification,
    Rule,
    RuleCreate,
    RuleTestResult,
    Severity,
    Source,
)
from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.ids import new_id
from civicml.core.names import already_exists, name_key, validate_name
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.serving._queries import endpoint_row
from civicml.serving._tables import endpoint_variants
from civicml.serving.runtime import ModelHost
from civicml.store.context import Context

__all__ = ["MAX_LIST", "AlertService"]

MAX_LIST = 1_000
DEFAULT_WINDOW_S = {"endpoint": 300, "monitoring": 86_400}
_CHANNELS: TypeAdapter[list[Channel]] = TypeAdapter(list[Channel])


class AlertService:
    """Alert rules, alerts and deliveries of a project, for ``ctx.principal``.

    Args:
        ctx: The stores, the caller and the clock.
        engine: The evaluating engine (default: one for this service).

    Example:
        >>> svc = AlertService(ctx)  # doctest: +SKIP
        >>> svc.create_rule("benefits", RuleCreate(name="slow", source="endpoint",  # doctest: +SKIP
        ...     condition="p99_ms > 50", endpoint="eligibility"))
        >>> svc.evaluate("benefits").outcomes  # doctest: +SKIP
    """

    def __init__(self, ctx: Context, engine: Engine | None = None) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)
        self._engine = engine or Engine(ctx)

    # Rules ------------------------------------------------------------------------------------
    def create_rule(self, project: str, request: RuleCreate) -> Rule:
        """Create a rule in ``project``.

        Raises:
            PermissionDeniedError: The caller lacks ``monitoring.write``.
            InvalidInputError: A bad name or condition (unknown metric, wrong kind of value).
            NotFoundError: The endpoint or variant it names does not exist.
            ConfigurationError: A channel this server cannot deliver to (a webhook secret, the
                SMTP server or a broker URL not configured; a host not allowed).
            ConflictError: A rule of that name exists in the project.
        """
        proj = self._projects.get(project, "monitoring.write")
        name = validate_name("Alert rule", request.name)
        condition = parse_condition(request.condition, request.source, column=request.column)
        for channel in request.channels:
            check_channel(channel, self._ctx.settings)
        self._check_endpoint(proj, request)
        for label, value in (("Dataset", request.dataset),):
            if value is not None:
                validate_name(label, value)
        roles = sorted(self._projects.access.roles_on(proj.id, proj.name))
        now = self._ctx.clock.now()
        values: dict[str, Any] = {
            "id": new_id(),
            "project_id": proj.id,
            "name": name,
            "description": request.description,
            "source": request.source.value,
            "endpoint": request.endpoint,
            "variant": request.variant,
            "dataset": request.dataset,
            "report_kind": request.report_kind,
            "metric": condition.metric,
            "column_name": request.column,
            "op": condition.op,
            "threshold": condition.threshold,
            "window_s": request.window_s or DEFAULT_WINDOW_S[request.source.value],
            "min_requests": request.min_requests,
            "severity": request.severity.value,
            "cooldown_s": request.cooldown_s,
            "channels": [c.model_dump(mode="json") for c in request.channels],
            "enabled": request.enabled,
            "next_eval_at": now,
            "evaluated_at": None,
            "created_at": now,
            "created_by": self._ctx.principal.user,
            "creator_roles": ",".join(roles),
            "updated_at": now,
        }
        try:
            with self._ctx.db.write() as uow:
                existing = self._find(uow.conn, proj, name)
                if existing is not None:
                    raise _exists(name, existing.name, proj)
                uow.conn.execute(insert(alert_rules).values(**values))
                self._audit.record(
                    uow,
                    "alert.rule.created",
                    "alert_rule",
                    values["id"],
                    project=proj.name,
                    after=_audited(values),
                )
        except IntegrityError as err:  # created concurrently
            raise _exists(name, name, proj) from err
        return to_rule(values, proj.name)

    def _check_endpoint(self, proj: Project, request: RuleCreate) -> None:
        if request.endpoint is None:
            return
        with self._ctx.db.read() as conn:
            endpoint = endpoint_row(conn, proj, request.endpoint)
            if request.variant is None:
                return
            names = list(
                conn.execute(
                    select(endpoint_variants.c.name).where(
                        endpoint_variants.c.endpoint_id == endpoint.id
                    )
                ).scalars()
            )
        if name_key(request.variant) not in {name_key(n) for n in names}:
            raise NotFoundError(
                f"Endpoint {endpoint.name!r} has no variant {request.variant!r}.",
                hint=closest(request.variant, names) or f"Its variants: {', '.join(names)}.",
            )

    def list_rules(self, project: str) -> builtins.list[Rule]:
        """The project's rules by name."""
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(alert_rules)
                .where(alert_rules.c.project_id == proj.id)
                .order_by(alert_rules.c.name)
            ).all()
        return [to_rule(r._mapping, proj.name) for r in rows]

    def get_rule(self, project: str, name: str) -> Rule:
        """One rule (found regardless of letter case).

        Raises:
            NotFoundError: No such rule (with the closest names), or project.
        """
        proj = self._projects.get(project, "monitoring.read")
        return to_rule(self._row(proj, name)._mapping, proj.name)

    def enable_rule(self, project: str, name: str) -> Rule:
        """Evaluate the rule again (from the next tick)."""
        return self._enable(project, name, True)

    def disable_rule(self, project: str, name: str) -> Rule:
        """Stop evaluating the rule; an alert firing stays firing until it is enabled and
        resolves."""
        return self._enable(project, name, False)

    def _enable(self, project: str, name: str, enabled: bool) -> Rule:
        proj = self._projects.get(project, "monitoring.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = self._row(proj, name, uow.conn)
            uow.conn.execute(
                update(alert_rules)
                .where(alert_rules.c.id == row.id)
                .values(enabled=enabled, updated_at=now, next_eval_at=now)
            )
            if row.enabled != enabled:
                self._audit.record(
                    uow,
                    "alert.rule.enabled" if enabled else "alert.rule.disabled",
                    "alert_rule",
                    row.id,
                    project=proj.name,
                    before={"name": row.name, "enabled": row.enabled},
                    after={"name": row.name, "enabled": enabled},
                )
            fresh = self._row(proj, name, uow.conn)
        return to_rule(fresh._mapping, proj.name)

    def delete_rule(self, project: str, name: str) -> Rule:
        """Remove a rule; its alerts and deliveries stay listed (an alert still firing is
        marked resolved, with no notification).

        Raises:
            NotFoundError: No such rule.
        """
        proj = self._projects.get(project, "monitoring.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = self._row(proj, name, uow.conn)
            uow.conn.execute(
                update(alerts)
                .where(alerts.c.rule_id == row.id, alerts.c.status == "firing")
                .values(status="resolved", resolved_at=now)
            )
            uow.conn.execute(delete(alert_states).where(alert_states.c.rule_id == row.id))
            uow.conn.execute(delete(alert_rules).where(alert_rules.c.id == row.id))
            self._audit.record(
                uow,
                "alert.rule.deleted",
                "alert_rule",
                row.id,
                project=proj.name,
                before=_audited(row._mapping),
            )
        return to_rule(row._mapping, proj.name)

    # Alerts and deliveries ----------------------------------------------------------------------
    def list_alerts(
        self,
        project: str,
        *,
        firing: bool = False,
        rule: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Alert]:
        """The project's alerts, newest first: only those firing with ``firing``, only one
        rule's with ``rule`` (at most ``limit``, ≤ 1,000)."""
        _check_limit(limit)
        proj = self._projects.get(project, "monitoring.read")
        query = select(alerts).where(alerts.c.project_id == proj.id)
        if firing:
            query = query.where(alerts.c.status == "firing")
        if rule is not None:
            query = query.where(func.lower(alerts.c.rule_name) == name_key(rule))
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                query.order_by(alerts.c.fired_at.desc(), alerts.c.id.desc()).limit(limit)
            ).all()
        return [to_alert(r, proj.name) for r in rows]

    def get_alert(self, project: str, alert_id: str) -> Alert:
        """One alert of the project.

        Raises:
            NotFoundError: No alert of the project has that id.
        """
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            row = self._alert_row(conn, proj, alert_id)
        return to_alert(row, proj.name)

    def deliveries(self, project: str, alert_id: str) -> builtins.list[Notification]:
        """Every notification of the alert (fired, resolved; each channel) with its tries."""
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            alert = self._alert_row(conn, proj, alert_id)
            return self._notifications(conn, alert_notifications.c.alert_id == alert.id)

    def notifications(
        self, project: str, rule: str, *, limit: int = 100
    ) -> builtins.list[Notification]:
        """The rule's most recent notifications (tests included), newest first."""
        _check_limit(limit)
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            row = self._row(proj, rule, conn)
            return self._notifications(conn, alert_notifications.c.rule_id == row.id, newest=limit)

    @staticmethod
    def _notifications(
        conn: Any, where: Any, newest: int | None = None
    ) -> builtins.list[Notification]:
        n = alert_notifications
        query = select(n).where(where)
        query = (
            query.order_by(n.c.created_at.desc(), n.c.id.desc()).limit(newest)
            if newest is not None
            else query.order_by(n.c.created_at, n.c.channel_index, n.c.id)
        )
        rows = conn.execute(query).all()
        ids = [r.id for r in rows]
        tries: dict[str, builtins.list[DeliveryAttempt]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(
                select(alert_delivery_attempts)
                .where(alert_delivery_attempts.c.notification_id.in_(ids))
                .order_by(alert_delivery_attempts.c.attempt)
            ).all():
                tries[a.notification_id].append(
                    DeliveryAttempt(
                        attempt=a.attempt,
                        at=a.at,
                        ok=a.ok,
                        status_code=a.status_code,
                        error=a.error,
                        duration_ms=a.duration_ms,
                    )
                )
        return [
            Notification(
                id=r.id,
                alert_id=r.alert_id,
                rule=str((r.payload or {}).get("rule", "")),
                event=r.event,
                channel=r.channel_index,
                channel_type=r.channel_type,
                target=r.target,
                status=r.status,
                attempts=tries[r.id],
                error=r.error,
                created_at=r.created_at,
                sent_at=r.sent_at,
            )
            for r in rows
        ]

    # Evaluation -------------------------------------------------------------------------------
    def evaluate(self, project: str, *, host: ModelHost | None = None) -> EvaluationResult:
        """Evaluate every enabled rule of ``project`` now, and deliver what fired or resolved.

        Args:
            project: Project name.
            host: This process's model host, if it serves endpoints: its counters are
                flushed first, so what it answered until now is counted.

        Safe beside the scheduler's loop and other evaluators: each alert fires and resolves
        once (compare-and-set), so a second evaluation at the same time reports
        ``firing`` or ``lost_race`` instead of sending again.

        Raises:
            PermissionDeniedError: The caller lacks ``monitoring.write``.
        """
        proj = self._projects.get(project, "monitoring.write")
        if host is not None:
            host.flush_variant_stats()
        now = self._ctx.clock.now()
        self._engine.sample(now)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(alert_rules)
                .where(alert_rules.c.project_id == proj.id, alert_rules.c.enabled.is_(True))
                .order_by(alert_rules.c.name)
            ).all()
        outcomes = []
        queued: builtins.list[str] = []
        for row in rows:
            found, ids = self._engine.evaluate_rule(RuleRow(row, proj.name), self._ctx, now)
            outcomes += found
            queued += ids
        if rows:
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    update(alert_rules)
                    .where(alert_rules.c.id.in_([r.id for r in rows]))
                    .values(evaluated_at=now)
                )
        self._engine.deliver(queued)
        sent: builtins.list[Notification] = []
        if queued:
            with self._ctx.db.read() as conn:
                sent = self._notifications(conn, alert_notifications.c.id.in_(queued))
        return EvaluationResult(
            project=proj.name, evaluated_at=now, outcomes=outcomes, notifications=sent
        )

    def test_rule(self, project: str, name: str) -> RuleTestResult:
        """Send a test notification of the rule to each of its channels now.

        Raises:
            PermissionDeniedError: The caller lacks ``monitoring.write``.
            NotFoundError: No such rule.
            InvalidInputError: The rule has no channel.
        """
        proj = self._projects.get(project, "monitoring.write")
        row = self._row(proj, name)
        if not row.channels:
            raise InvalidInputError(
                f"Alert rule {row.name!r} has no channel to test.",
                hint="Add a channel when creating the rule (--webhook, --email, --nats, "
                "--redis, --mqtt).",
            )
        now = self._ctx.clock.now()
        queued = self._engine.queue_test(RuleRow(row, proj.name), now)
        with self._ctx.db.write() as uow:
            self._audit.record(
                uow,
                "alert.rule.tested",
                "alert_rule",
                row.id,
                project=proj.name,
                after={"name": row.name, "channels": len(queued)},
            )
        self._engine.deliver(queued)
        with self._ctx.db.read() as conn:
            sent = self._notifications(conn, alert_notifications.c.id.in_(queued))
        return RuleTestResult(
            rule=row.name, notifications=sent, ok=all(s.status == "sent" for s in sent)
        )

    # Internals --------------------------------------------------------------------------------
    @staticmethod
    def _find(conn: Any, proj: Project, name: str) -> Any:
        return conn.execute(
            select(alert_rules).where(
                alert_rules.c.project_id == proj.id,
                func.lower(alert_rules.c.name) == name_key(name),
            )
        ).first()

    def _row(self, proj: Project, name: str, conn: Any = None) -> Any:
        if conn is None:
            with self._ctx.db.read() as reader:
                return self._row(proj, name, reader)
        row = self._find(conn, proj, name)
        if row is None:
            names = conn.execute(
                select(alert_rules.c.name).where(alert_rules.c.project_id == proj.id)
            ).scalars()
            raise NotFoundError(
                f"Alert rule {name!r} does not exist in project {proj.name!r}.",
                hint=closest(name, list(names))
                or f"List them: civicml alerts rules list -p {proj.name}",
            )
        return row

    @staticmethod
    def _alert_row(conn: Any, proj: Project, alert_id: str) -> Any:
        row = conn.execute(
            select(alerts).where(alerts.c.id == alert_id, alerts.c.project_id == proj.id)
        ).first()
        if row is None:
            raise NotFoundError(
                f"Alert {alert_id[:64]!r} does not exist in project {proj.name!r}.",
                hint=f"List them: civicml alerts list -p {proj.name}",
            )
        return row


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise InvalidInputError(
            f"limit must be between 1 and {MAX_LIST}, not {limit!r}.", hint="Try 100."
        )


def _exists(name: str, existing: str, proj: Project) -> ConflictError:
    return ConflictError(
        already_exists("Alert rule", name, existing, scope=f"project {proj.name!r}"),
        hint=f"Choose another name, or remove it: civicml alerts rules remove {existing} "
        f"-p {proj.name}",
    )


def _audited(values: Any) -> dict[str, Any]:
    return {
        "name": values["name"],
        "source": values["source"],
        "condition": _condition_text(_Row(values)),
        "endpoint": values["endpoint"],
        "variant": values["variant"],
        "dataset": values["dataset"],
        "report_kind": values["report_kind"],
        "window_s": values["window_s"],
        "severity": values["severity"],
        "cooldown_s": values["cooldown_s"],
        "channels": [c.get("type") for c in values["channels"] or []],
        "enabled": values["enabled"],
        "creator_roles": values["creator_roles"],
    }


class _Row:
    """Attribute access to a mapping of rule values (for the shared condition text)."""

    def __init__(self, values: Any) -> None:
        self.metric = values["metric"]
        self.op = values["op"]
        self.threshold = values["threshold"]
        self.column_name = values["column_name"]


def to_rule(values: Any, project: str) -> Rule:
    """A rule row (or the values inserted) as its schema."""
    return Rule(
        id=values["id"],
        project=project,
        name=values["name"],
        description=values["description"],
        source=Source(values["source"]),
        condition=_condition_text(_Row(values)),
        metric=values["metric"],
        op=values["op"],
        threshold=values["threshold"],
        endpoint=values["endpoint"],
        variant=values["variant"],
        dataset=values["dataset"],
        report_kind=values["report_kind"],
        column=values["column_name"],
        window_s=values["window_s"],
        min_requests=values["min_requests"],
        severity=Severity(values["severity"]),
        cooldown_s=values["cooldown_s"],
        channels=_CHANNELS.validate_python(values["channels"] or []),
        enabled=values["enabled"],
        evaluated_at=values["evaluated_at"],
        created_at=values["created_at"],
        created_by=values["created_by"],
        updated_at=values["updated_at"],
    )


def to_alert(row: Any, project: str) -> Alert:
    """An alert row as its schema."""
    return Alert(
        id=row.id,
        project=project,
        rule=row.rule_name,
        subject=row.subject,
        source=Source(row.source),
        severity=Severity(row.severity),
        condition=row.condition,
        status=AlertStatus(row.status),
        value=row.value,
        message=row.message,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        resolved_value=row.resolved_value,
    )
