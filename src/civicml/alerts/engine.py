"""Evaluating alert rules and delivering their notifications, safely from many processes.

For each enabled rule and each of its subjects (an endpoint, or the dataset a report checked)
the metric is read (:mod:`civicml.alerts.metrics`) and compared (:mod:`civicml.alerts.conditions`):

* held, and no alert firing for the rule and subject → **fire**, unless the last alert of that
  subject resolved less than ``cooldown_s`` ago (*cool-down*);
* held, and an alert already firing → nothing (*de-duplication*: it is sent once);
* not held, and an alert firing → **resolve** (recorded and sent);
* no data (no traffic, too few requests, no report in the window) → nothing changes.

**Exactly once.** The state of each (rule, subject) is one row of ``alert_states`` with a
``version``. Firing and resolving are compare-and-set updates on that version (the first
firing of a subject: an insert under its primary key), in the same transaction as the alert
row, its notifications (the outbox) and its ``alert.fired`` / ``alert.resolved`` audit event —
so of any number of evaluators on one database only one changes a state, and a crash leaves
all of it or none. The winner delivers the notifications it queued (each a lease); a
notification whose process died stays ``pending`` and the next tick of any process, once the
lease expired, claims it by compare-and-set and delivers it. Every try is recorded.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from civicml.alerts._tables import (
    alert_delivery_attempts,
    alert_notifications,
    alert_rules,
    alert_states,
    alerts,
)
from civicml.alerts.channels import send, target
from civicml.alerts.conditions import Threshold, compare
from civicml.alerts.metrics import endpoint_values, prune, report_value, sample, window_totals
from civicml.alerts.schemas import Channel, EvaluationOutcome
from civicml.core.identity import Principal
from civicml.core.ids import new_id
from civicml.core.names import name_key
from civicml.core.process import hostname
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.monitoring._tables import reports
from civicml.serving._tables import endpoint_variants, endpoints
from civicml.store.context import Context

__all__ = ["Engine", "RuleRow", "rule_principal"]

log = logging.getLogger("civicml.alerts")

DELIVERY_LEASE_S = 300.0
PRUNE_EVERY_S = 3600.0
_CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)
_MAX_REPORTS = 1000


def rule_principal(row: Any, project: str) -> Principal:
    """Whom the evaluation loop acts as for rule ``row``: its creator, on its project only,
    with the roles they held there when creating it; the label ``alert:<rule>`` (no
    permission) marks its audit events."""
    key = project.lower()
    roles = [r for r in row.creator_roles.split(",") if r]
    return Principal(
        user=row.created_by,
        roles=frozenset({f"alert:{row.name}"}),
        projects=frozenset({key}),
        grants=frozenset((key, role) for role in roles),
    )


@dataclass(frozen=True, slots=True)
class RuleRow:
    """A rule row with its project's name."""

    row: Any
    project: str


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    """A metric value as JSON can hold it: a latency beyond the last bucket is "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else None
    return value


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class Engine:
    """Evaluates rules and delivers notifications for one process (``name`` marks its claims).

    Args:
        ctx: The stores and clock; evaluations act as ``ctx.principal`` (explicit calls) or
            as each rule's creator (:meth:`tick`).
        name: How this process is recorded on the notifications it claims.
    """

    def __init__(self, ctx: Context, name: str | None = None) -> None:
        self._ctx = ctx
        self.name = (name or f"{hostname()}:{os.getpid()}:{new_id()[:8]}")[:128]
        self._pruned_at = 0.0

    # The loop ---------------------------------------------------------------------------------
    def tick(self) -> list[str]:
        """Sample the endpoint counters, evaluate every rule that is due (its interval passed,
        or a report arrived since its last evaluation), deliver what that queued and what
        dead processes left; returns the ids of the alerts fired or resolved."""
        now = self._ctx.clock.now()
        self.sample(now)
        changed: list[str] = []
        queued: list[str] = []
        for rule in self._claim_due(now):
            ctx = self._ctx.as_principal(rule_principal(rule.row, rule.project))
            try:
                outcomes, ids = self.evaluate_rule(rule, ctx, now)
            except Exception:  # one broken rule never stops the others
                log.exception("alert rule %s/%s: evaluation failed", rule.project, rule.row.name)
                continue
            changed += [
                o.alert_id for o in outcomes if o.alert_id and o.action in ("fired", "resolved")
            ]
            queued += ids
        self.deliver(queued)
        self.deliver(self.claim_expired(self._ctx.clock.now()))
        return changed

    def sample(self, now: datetime) -> None:
        """Copy the serving counters into samples (and prune old samples once an hour)."""
        sample(self._ctx.db, now)
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            keep = timedelta(seconds=2 * 86_400)
            with self._ctx.db.write() as uow:
                prune(uow, now - keep)

    def _claim_due(self, now: datetime) -> list[RuleRow]:
        r = alert_rules
        newer_report = (
            select(reports.c.id)
            .where(
                reports.c.project_id == r.c.project_id,
                reports.c.created_at > func.coalesce(r.c.evaluated_at, r.c.created_at),
            )
            .exists()
        )
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(r, projects.c.name.label("project_name"))
                .join(projects, projects.c.id == r.c.project_id)
                .where(
                    r.c.enabled.is_(True),
                    (r.c.next_eval_at <= now) | ((r.c.source == "monitoring") & newer_report),
                )
                .order_by(r.c.next_eval_at, r.c.id)
                .limit(500)
            ).all()
        interval = timedelta(seconds=self._ctx.settings.alerts_interval_s)
        claimed: list[RuleRow] = []
        for row in rows:
            with self._ctx.db.write() as uow:
                done = uow.conn.execute(
                    update(r)
                    .where(
                        r.c.id == row.id,
                        r.c.next_eval_at == row.next_eval_at,
                        r.c.evaluated_at.is_not_distinct_from(row.evaluated_at),
                    )
                    .values(next_eval_at=now + interval, evaluated_at=now)
                ).rowcount
            if done:
                claimed.append(RuleRow(row, row.project_name))
        return claimed

    # One rule ---------------------------------------------------------------------------------
    def evaluate_rule(
        self, rule: RuleRow, ctx: Context, now: datetime
    ) -> tuple[list[EvaluationOutcome], list[str]]:
        """Evaluate ``rule`` for each of its subjects, acting as ``ctx.principal``; returns the
        outcomes and the ids of the notifications queued (for :meth:`deliver`)."""
        row = rule.row
        values = (
            self._endpoint_values(row, now)
            if row.source == "endpoint"
            else self._monitoring_values(row, ctx, now)
        )
        outcomes: list[EvaluationOutcome] = []
        queued: list[str] = []
        for subject, value in values:
            outcome, ids = self._judge(rule, ctx, subject, value, now)
            outcomes.append(outcome)
            queued += ids
        return outcomes, queued

    def _endpoint_values(self, row: Any, now: datetime) -> list[tuple[str, Any]]:
        with self._ctx.db.read() as conn:
            query = select(endpoints.c.id, endpoints.c.name).where(
                endpoints.c.project_id == row.project_id
            )
            if row.endpoint is not None:
                query = query.where(func.lower(endpoints.c.name) == name_key(row.endpoint))
            found: list[tuple[str, Any]] = []
            for endpoint in conn.execute(query.order_by(endpoints.c.name)).all():
                variant_ids: list[str] | None = None
                if row.variant is not None:
                    variant_ids = list(
                        conn.execute(
                            select(endpoint_variants.c.id).where(
                                endpoint_variants.c.endpoint_id == endpoint.id,
                                func.lower(endpoint_variants.c.name) == name_key(row.variant),
                            )
                        ).scalars()
                    )
                totals = (
                    None
                    if variant_ids == []
                    else window_totals(
                        conn, endpoint.id, now, row.window_s, variant_ids=variant_ids
                    )
                )
                value = (
                    None
                    if totals is None
                    else endpoint_values(totals, row.min_requests).get(row.metric)
                )
                found.append((endpoint.name, value))
        return found

    def _monitoring_values(self, row: Any, ctx: Context, now: datetime) -> list[tuple[str, Any]]:
        since = now - timedelta(seconds=row.window_s)
        query = (
            select(reports.c.id, reports.c.kind, reports.c.summary, reports.c.inputs)
            .where(reports.c.project_id == row.project_id, reports.c.created_at > since)
            .order_by(reports.c.created_at.desc(), reports.c.id.desc())
            .limit(_MAX_REPORTS)
        )
        if row.report_kind is not None:
            query = query.where(reports.c.kind == row.report_kind)
        with self._ctx.db.read() as conn:
            rows = conn.execute(query).all()
        latest: dict[str, Any] = {}
        for report in rows:
            subject = _report_subject(report)
            if row.dataset is not None and name_key(subject) != name_key(row.dataset):
                continue
            latest.setdefault(subject, report)
        found: list[tuple[str, Any]] = []
        for subject, report in sorted(latest.items()):
            summary = dict(report.summary or {})
            column = None
            if row.column_name is not None:
                column = self._column_result(ctx, report.id, row.column_name)
                if column is None:
                    found.append((subject, None))
                    continue
            found.append((subject, report_value(summary, row.metric, column)))
        return found

    @staticmethod
    def _column_result(ctx: Context, report_id: str, column: str) -> dict[str, Any] | None:
        from civicml.monitoring.service import MonitoringService

        try:
            result = MonitoringService(ctx).read_report(report_id)
        except Exception:  # not a drift report, or its file is gone: no data
            log.warning("report %s: cannot read its columns", report_id, exc_info=True)
            return None
        for item in result.columns:
            if item.column == column:
                return item.model_dump()
        return None

    def _judge(
        self, rule: RuleRow, ctx: Context, subject: str, value: Any, now: datetime
    ) -> tuple[EvaluationOutcome, list[str]]:
        row = rule.row
        threshold: Threshold = row.threshold
        breached = compare(value, row.op, threshold)
        value = _jsonable(value)
        with self._ctx.db.read() as conn:
            state = conn.execute(
                select(alert_states).where(
                    alert_states.c.rule_id == row.id, alert_states.c.subject == subject
                )
            ).first()
        firing = state is not None and state.status == "firing"
        current = state.alert_id if state is not None and firing else None

        def outcome(action: Any, alert_id: str | None = None) -> EvaluationOutcome:
            return EvaluationOutcome(
                rule=row.name,
                subject=subject,
                value=value,
                breached=breached,
                action=action,
                alert_id=alert_id,
            )

        if breached is None:
            return outcome("no_data", current), []
        if breached and firing:
            return outcome("firing", current), []
        if not breached and not firing:
            return outcome("ok"), []
        if breached:
            resolved = None if state is None else state.resolved_at
            if resolved is not None and now < resolved + timedelta(seconds=row.cooldown_s):
                return outcome("cooldown"), []
            done = self._fire(rule, ctx, subject, value, state, now)
        else:
            done = self._resolve(rule, ctx, subject, value, state, now)
        if done is None:
            return outcome("lost_race"), []
        alert_id, queued = done
        return outcome("fired" if breached else "resolved", alert_id), queued

    def _message(self, row: Any, subject: str, value: Any, fired: bool) -> str:
        shown = "no value" if value is None else _shown(value)
        condition = _condition_text(row)
        if fired:
            text = f"{row.name}: {row.metric} = {shown} on {subject} ({condition})"
        else:
            text = (
                f"{row.name} resolved: {row.metric} = {shown} on {subject}, no longer {condition}"
            )
        return text[:1024]

    def _fire(
        self, rule: RuleRow, ctx: Context, subject: str, value: Any, state: Any, now: datetime
    ) -> tuple[str, list[str]] | None:
        row = rule.row
        alert_id = new_id()
        message = self._message(row, subject, value, True)
        with self._ctx.db.write() as uow:
            conn = uow.conn
            if state is None:
                won = (
                    conn.execute(
                        _insert(conn, alert_states)
                        .values(
                            rule_id=row.id,
                            subject=subject,
                            status="firing",
                            alert_id=alert_id,
                            resolved_at=None,
                            version=1,
                            updated_at=now,
                        )
                        .on_conflict_do_nothing(index_elements=["rule_id", "subject"])
                        # rowcount is not kept for an INSERT on psycopg: ask for the row back
                        .returning(alert_states.c.rule_id)
                    ).first()
                    is not None
                )
            else:
                won = (
                    conn.execute(
                        update(alert_states)
                        .where(
                            alert_states.c.rule_id == row.id,
                            alert_states.c.subject == subject,
                            alert_states.c.version == state.version,
                            alert_states.c.status != "firing",
                        )
                        .values(
                            status="firing",
                            alert_id=alert_id,
                            version=state.version + 1,
                            updated_at=now,
                        )
                    ).rowcount
                    > 0
                )
            if not won:
                return None
            values = {
                "id": alert_id,
                "project_id": row.project_id,
                "rule_id": row.id,
                "rule_name": row.name,
                "subject": subject,
                "source": row.source,
                "severity": row.severity,
                "condition": _condition_text(row)[:512],
                "status": "firing",
                "value": value,
                "message": message,
                "fired_at": now,
                "resolved_at": None,
                "resolved_value": None,
            }
            conn.execute(insert(alerts).values(**values))
            payload = _payload(rule, values, "alert.fired", now)
            queued = self._queue(conn, row, alert_id, "fired", payload, now)
            AuditTrail(ctx).record(
                uow,
                "alert.fired",
                "alert",
                alert_id,
                project=rule.project,
                after={
                    "rule": row.name,
                    "subject": subject,
                    "severity": row.severity,
                    "value": value,
                    "metric": row.metric,
                    "condition": values["condition"],
                    "source": row.source,
                },
            )
        return alert_id, queued

    def _resolve(
        self, rule: RuleRow, ctx: Context, subject: str, value: Any, state: Any, now: datetime
    ) -> tuple[str, list[str]] | None:
        row = rule.row
        alert_id = state.alert_id
        with self._ctx.db.write() as uow:
            conn = uow.conn
            won = conn.execute(
                update(alert_states)
                .where(
                    alert_states.c.rule_id == row.id,
                    alert_states.c.subject == subject,
                    alert_states.c.version == state.version,
                    alert_states.c.status == "firing",
                )
                .values(
                    status="ok",
                    alert_id=None,
                    resolved_at=now,
                    version=state.version + 1,
                    updated_at=now,
                )
            ).rowcount
            if not won:
                return None
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id)
                .values(status="resolved", resolved_at=now, resolved_value=value)
            )
            fired = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
            values = dict(fired._mapping) if fired is not None else {}
            values.update(
                message=self._message(row, subject, value, False),
                resolved_value=value,
                resolved_at=now,
                status="resolved",
            )
            payload = _payload(rule, values, "alert.resolved", now)
            queued = self._queue(conn, row, alert_id, "resolved", payload, now)
            AuditTrail(ctx).record(
                uow,
                "alert.resolved",
                "alert",
                alert_id,
                project=rule.project,
                after={
                    "rule": row.name,
                    "subject": subject,
                    "severity": row.severity,
                    "value": value,
                    "metric": row.metric,
                    "condition": _condition_text(row)[:512],
                    "source": row.source,
                },
            )
        return alert_id, queued

    # Notifications ----------------------------------------------------------------------------
    def _queue(
        self,
        conn: Connection,
        row: Any,
        alert_id: str | None,
        event: str,
        payload: dict[str, Any],
        now: datetime,
    ) -> list[str]:
        ids: list[str] = []
        for index, raw in enumerate(row.channels or []):
            channel = _CHANNEL.validate_python(raw)
            notification_id = new_id()
            conn.execute(
                insert(alert_notifications).values(
                    id=notification_id,
                    project_id=row.project_id,
                    rule_id=row.id,
                    alert_id=alert_id,
                    event=event,
                    channel_index=index,
                    channel_type=channel.type,
                    target=target(channel),
                    channel=channel.model_dump(mode="json"),
                    payload={**payload, "notification_id": notification_id},
                    status="pending",
                    attempts=0,
                    error=None,
                    claimed_by=self.name,
                    lease_until=now + timedelta(seconds=DELIVERY_LEASE_S),
                    created_at=now,
                    sent_at=None,
                )
            )
            ids.append(notification_id)
        return ids

    def queue_test(self, rule: RuleRow, now: datetime) -> list[str]:
        """Queue a test notification of ``rule`` for each of its channels (delivered by
        :meth:`deliver`)."""
        row = rule.row
        values = {
            "id": None,
            "subject": "test",
            "severity": row.severity,
            "condition": _condition_text(row),
            "status": "test",
            "value": None,
            "message": f"Test notification of alert rule {row.name} ({_condition_text(row)}).",
            "fired_at": now,
            "resolved_at": None,
        }
        payload = _payload(rule, values, "alert.test", now)
        with self._ctx.db.write() as uow:
            return self._queue(uow.conn, row, None, "test", payload, now)

    def claim_expired(self, now: datetime) -> list[str]:
        """Claim the pending notifications whose process stopped (lease expired)."""
        n = alert_notifications
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(n.c.id, n.c.claimed_by)
                .where(n.c.status == "pending", n.c.lease_until < now)
                .order_by(n.c.created_at)
                .limit(100)
            ).all()
        mine: list[str] = []
        for row in rows:
            with self._ctx.db.write() as uow:
                taken = uow.conn.execute(
                    update(n)
                    .where(
                        n.c.id == row.id,
                        n.c.status == "pending",
                        n.c.claimed_by == row.claimed_by,
                        n.c.lease_until < now,
                    )
                    .values(
                        claimed_by=self.name,
                        lease_until=now + timedelta(seconds=DELIVERY_LEASE_S),
                    )
                ).rowcount
            if taken:
                mine.append(row.id)
        return mine

    def deliver(self, notification_ids: Iterable[str]) -> None:
        """Deliver each notification this process holds: tries with backoff, each recorded;
        a failure is recorded, never raised."""
        for notification_id in notification_ids:
            try:
                self._deliver_one(notification_id)
            except Exception:  # the database went away: the lease lets another retry later
                log.exception("alert notification %s: delivery failed", notification_id)

    def _deliver_one(self, notification_id: str) -> None:
        n = alert_notifications
        settings = self._ctx.settings
        with self._ctx.db.read() as conn:
            row = conn.execute(select(n).where(n.c.id == notification_id)).first()
        if row is None or row.status != "pending" or row.claimed_by != self.name:
            return
        channel = _CHANNEL.validate_python(row.channel)
        tries = settings.alerts_delivery_attempts
        attempt = int(row.attempts)
        while attempt < tries:
            attempt += 1
            started = time.perf_counter()
            sent = send(channel, row.payload, settings, notification_id=notification_id)
            took = (time.perf_counter() - started) * 1000
            last = sent.ok or not sent.retry or attempt >= tries
            status = "sent" if sent.ok else ("failed" if last else "pending")
            now = self._ctx.clock.now()
            with self._ctx.db.write() as uow:
                mine = uow.conn.execute(
                    update(n)
                    .where(n.c.id == notification_id, n.c.claimed_by == self.name)
                    .values(
                        attempts=attempt,
                        status=status,
                        error=sent.error,
                        sent_at=now if sent.ok else None,
                        lease_until=now + timedelta(seconds=DELIVERY_LEASE_S),
                    )
                ).rowcount
                if not mine:
                    return  # taken over by another process after our lease expired
                uow.conn.execute(
                    insert(alert_delivery_attempts).values(
                        id=new_id(),
                        notification_id=notification_id,
                        attempt=attempt,
                        at=now,
                        ok=sent.ok,
                        status_code=sent.status_code,
                        error=sent.error,
                        duration_ms=round(took, 3),
                    )
                )
            if last:
                if not sent.ok:
                    log.warning(
                        "alert notification %s to %s failed after %d tries: %s",
                        notification_id,
                        row.target,
                        attempt,
                        sent.error,
                    )
                return
            time.sleep(settings.alerts_delivery_backoff_s * 2 ** (attempt - 1))


def _report_subject(report: Any) -> str:
    inputs = report.inputs or {}
    current = inputs.get("current") if isinstance(inputs, dict) else None
    if isinstance(current, dict) and isinstance(current.get("dataset"), str):
        return str(current["dataset"])[:256]
    for key in ("endpoint", "dataset", "monitor"):
        if isinstance(inputs, dict) and isinstance(inputs.get(key), str):
            return str(inputs[key])[:256]
    return str(report.kind)


def _condition_text(row: Any) -> str:
    from civicml.alerts.conditions import Condition

    text = Condition(metric=row.metric, op=row.op, threshold=row.threshold).text
    return text if row.column_name is None else f"{text} (column {row.column_name})"


def _payload(rule: RuleRow, values: dict[str, Any], kind: str, now: datetime) -> dict[str, Any]:
    row = rule.row
    return {
        "type": kind,
        "alert_id": values.get("id"),
        "project": rule.project,
        "rule": row.name,
        "subject": values.get("subject"),
        "source": row.source,
        "severity": row.severity,
        "condition": values.get("condition"),
        "metric": row.metric,
        "threshold": row.threshold,
        "window_s": row.window_s,
        "status": values.get("status"),
        "value": values.get("resolved_value") if kind == "alert.resolved" else values.get("value"),
        "message": values.get("message"),
        "fired_at": _iso(values.get("fired_at")),
        "resolved_at": _iso(values.get("resolved_at")),
        "at": _iso(now),
    }
