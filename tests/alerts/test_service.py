"""The alerts service: rules, monitoring-report alerts that fire once, resolve and cool down,
endpoint-metric alerts over a window, permissions, audit events, and several evaluators."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from civicml.alerts import AlertService, RuleCreate
from civicml.alerts._tables import alert_notifications, alerts
from civicml.alerts.engine import Engine
from civicml.core import FrozenClock, Principal
from civicml.core.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.governance._tables import audit_events
from civicml.governance.audit import AuditTrail
from civicml.store import Context
from tests.alerts.helpers import PROJECT, drift_report, ingest


def _rule(ctx: Context, name: str = "drifting", **fields: Any) -> Any:
    fields.setdefault("source", "monitoring")
    fields.setdefault("condition", "verdict == drift")
    return AlertService(ctx).create_rule(PROJECT, RuleCreate(name=name, **fields))


def _actions(result: Any) -> list[tuple[str, str, str]]:
    return [(o.rule, o.subject, o.action) for o in result.outcomes]


def _audit(ctx: Context, prefix: str) -> list[Any]:
    with ctx.db.read() as conn:
        return list(
            conn.execute(
                select(audit_events)
                .where(audit_events.c.action.like(f"{prefix}%"))
                .order_by(audit_events.c.seq)
            ).all()
        )


# Rules --------------------------------------------------------------------------------------
def test_rules_are_created_listed_disabled_and_removed_with_audit_events(actx: Context) -> None:
    svc = AlertService(actx)
    rule = _rule(actx, severity="critical", cooldown_s=60, description="retrain on drift")
    assert (rule.condition, rule.window_s, rule.severity.value) == (
        "verdict == drift",
        86_400,
        "critical",
    )
    assert [r.name for r in svc.list_rules(PROJECT)] == ["drifting"]
    assert svc.get_rule(PROJECT, "DRIFTING").id == rule.id  # names are case-blind
    assert svc.disable_rule(PROJECT, "drifting").enabled is False
    assert svc.enable_rule(PROJECT, "drifting").enabled is True
    svc.delete_rule(PROJECT, "drifting")
    assert svc.list_rules(PROJECT) == []
    assert [e.action for e in _audit(actx, "alert.rule")] == [
        "alert.rule.created",
        "alert.rule.disabled",
        "alert.rule.enabled",
        "alert.rule.deleted",
    ]
    assert AuditTrail(actx).verify().ok


def test_bad_rules_are_refused_with_what_to_do(actx: Context) -> None:
    _rule(actx)
    with pytest.raises(ConflictError, match="conflicts with the existing alert rule"):
        _rule(actx, name="Drifting")
    with pytest.raises(
        InvalidInputError, match=re.escape("Metric 'p99_ms' is not one a monitoring rule")
    ):
        _rule(actx, name="x", condition="p99_ms > 5")
    with pytest.raises(NotFoundError, match="Endpoint 'nowhere' does not exist"):
        _rule(actx, name="y", source="endpoint", condition="p99_ms > 5", endpoint="nowhere")
    with pytest.raises(NotFoundError, match="Alert rule 'drifted' does not exist") as caught:
        AlertService(actx).get_rule(PROJECT, "drifted")
    assert caught.value.hint == "Did you mean 'drifting'?"
    with pytest.raises(ValueError, match="endpoint, variant do\\(es\\) not apply"):
        RuleCreate(
            name="z", source="monitoring", condition="verdict == drift", endpoint="e", variant="v"
        )


def test_channels_this_server_cannot_deliver_to_are_refused(actx: Context) -> None:
    hook = {"type": "webhook", "url": "https://ops.example/hook", "secret": "missing"}
    with pytest.raises(ConfigurationError, match="No webhook secret named 'missing'") as caught:
        _rule(actx, channels=[hook])
    assert caught.value.hint is not None and "CIVICML_ALERTS_WEBHOOK_SECRETS" in caught.value.hint
    with pytest.raises(ConfigurationError, match="alerts_smtp_host and alerts_smtp_from"):
        _rule(actx, name="mail", channels=[{"type": "email", "to": ["ops@agency.example"]}])
    strict = actx.settings.model_copy(update={"alerts_webhook_allowed_hosts": ["*.agency.example"]})
    ctx = Context(actx.db, actx.artifacts, actx.principal, strict, actx.clock)
    with pytest.raises(ConfigurationError, match="not in the alerts_webhook_allowed_hosts"):
        _rule(ctx, name="h", channels=[{"type": "webhook", "url": "http://169.254.169.254/x"}])
    ok = _rule(ctx, name="h", channels=[{"type": "webhook", "url": "https://hooks.agency.example"}])
    assert ok.channels[0].type == "webhook"


def test_reading_needs_monitoring_read_and_changing_monitoring_write(actx: Context) -> None:
    _rule(actx)
    from civicml.governance.projects import ProjectService

    ProjectService(actx).grant(PROJECT, "vera", "viewer")
    viewer = AlertService(actx.as_principal(Principal(user="vera", roles=frozenset())))
    assert [r.name for r in viewer.list_rules(PROJECT)] == ["drifting"]
    assert viewer.list_alerts(PROJECT) == []
    for attempt in (
        lambda: viewer.create_rule(
            PROJECT, RuleCreate(name="v", source="monitoring", condition="verdict == drift")
        ),
        lambda: viewer.evaluate(PROJECT),
        lambda: viewer.disable_rule(PROJECT, "drifting"),
        lambda: viewer.delete_rule(PROJECT, "drifting"),
        lambda: viewer.test_rule(PROJECT, "drifting"),
    ):
        with pytest.raises(PermissionDeniedError, match=re.escape("monitoring.write")):
            attempt()
    stranger = AlertService(actx.as_principal(Principal(user="sam", roles=frozenset())))
    with pytest.raises(NotFoundError):
        stranger.list_rules(PROJECT)


# Monitoring reports: fire once, resolve, cool down --------------------------------------------
def test_a_drift_report_fires_once_resolves_and_cools_down(
    any_actx: Context, clock: FrozenClock
) -> None:
    ctx = any_actx
    ingest(ctx, "baseline")
    ingest(ctx, "claims", offset=1000)
    _rule(ctx, cooldown_s=600)
    svc = AlertService(ctx)
    assert _actions(svc.evaluate(PROJECT)) == []  # no report yet: no subject
    drift_report(ctx, "claims")
    first = svc.evaluate(PROJECT)
    assert _actions(first) == [("drifting", "claims", "fired")]
    assert first.outcomes[0].value == "drift"
    assert _actions(svc.evaluate(PROJECT)) == [("drifting", "claims", "firing")]  # not again
    (alert,) = svc.list_alerts(PROJECT, firing=True)
    assert (alert.subject, alert.status.value, alert.value) == ("claims", "firing", "drift")

    clock.advance(minutes=1)
    ingest(ctx, "claims", offset=0)  # the data is back to normal
    drift_report(ctx, "claims")
    assert _actions(svc.evaluate(PROJECT)) == [("drifting", "claims", "resolved")]
    resolved = svc.get_alert(PROJECT, alert.id)
    assert (resolved.status.value, resolved.resolved_value) == ("resolved", "no_drift")
    assert resolved.resolved_at == clock.now()
    assert svc.list_alerts(PROJECT, firing=True) == []

    clock.advance(minutes=1)
    ingest(ctx, "claims", offset=2000)  # drifts again, within the cool-down
    drift_report(ctx, "claims")
    assert _actions(svc.evaluate(PROJECT)) == [("drifting", "claims", "cooldown")]
    clock.advance(minutes=10)
    assert _actions(svc.evaluate(PROJECT)) == [("drifting", "claims", "fired")]
    assert len(svc.list_alerts(PROJECT)) == 2

    fired = _audit(ctx, "alert.fired")
    assert len(fired) == 2 and len(_audit(ctx, "alert.resolved")) == 1
    assert fired[0].entity_id == alert.id
    after = json.loads(fired[0].after)
    assert {k: after[k] for k in ("rule", "subject", "severity", "value")} == {
        "rule": "drifting",
        "subject": "claims",
        "severity": "warning",
        "value": "drift",
    }
    assert AuditTrail(ctx).verify().ok


def test_each_dataset_is_its_own_subject_and_old_reports_are_no_data(
    actx: Context, clock: FrozenClock
) -> None:
    ingest(actx, "baseline")
    ingest(actx, "claims", offset=1000)
    ingest(actx, "payments", offset=0)
    _rule(actx, window_s=3600)
    _rule(actx, name="claims-only", dataset="claims")
    drift_report(actx, "claims")
    drift_report(actx, "payments")
    svc = AlertService(actx)
    assert sorted(_actions(svc.evaluate(PROJECT))) == [
        ("claims-only", "claims", "fired"),
        ("drifting", "claims", "fired"),
        ("drifting", "payments", "ok"),
    ]
    clock.advance(hours=2)  # the reports are older than drifting's window
    assert sorted(_actions(svc.evaluate(PROJECT))) == [("claims-only", "claims", "firing")]


def test_a_column_metric_reads_the_report(actx: Context) -> None:
    ingest(actx, "baseline")
    ingest(actx, "claims", offset=1000)
    _rule(actx, name="x-moved", condition="drift_detected == true", column="x")
    _rule(actx, name="y-moved", condition="drift_score < 0.05", column="y")  # a p-value
    _rule(actx, name="no-such", condition="psi > 0.1", column="missing")
    drift_report(actx, "claims")
    outcomes = {o.rule: o for o in AlertService(actx).evaluate(PROJECT).outcomes}
    assert (outcomes["x-moved"].action, outcomes["x-moved"].value) == ("fired", True)
    assert outcomes["y-moved"].action == "ok"  # y did not move
    assert (outcomes["no-such"].action, outcomes["no-such"].value) == ("no_data", None)


def test_a_disabled_rule_is_not_evaluated_and_a_removed_one_resolves_its_alert(
    actx: Context,
) -> None:
    ingest(actx, "baseline")
    ingest(actx, "claims", offset=1000)
    _rule(actx)
    drift_report(actx, "claims")
    svc = AlertService(actx)
    svc.disable_rule(PROJECT, "drifting")
    assert svc.evaluate(PROJECT).outcomes == []
    svc.enable_rule(PROJECT, "drifting")
    svc.evaluate(PROJECT)
    svc.delete_rule(PROJECT, "drifting")
    (alert,) = svc.list_alerts(PROJECT)
    assert alert.status.value == "resolved"


# Several evaluators ----------------------------------------------------------------------------
def test_evaluators_racing_on_one_database_fire_each_alert_once(
    any_actx: Context, clock: FrozenClock
) -> None:
    ctx = any_actx
    ingest(ctx, "baseline")
    ingest(ctx, "claims", offset=1000)
    _rule(ctx)
    drift_report(ctx, "claims")
    contexts = [
        Context(
            type(ctx.db)(ctx.settings.database_url),
            ctx.artifacts,
            ctx.principal,
            ctx.settings,
            clock,
        )
        for _ in range(4)
    ]
    barrier = threading.Barrier(len(contexts))
    results: list[Any] = []
    errors: list[BaseException] = []

    def evaluate(c: Context) -> None:
        try:
            barrier.wait(10)
            results.append(AlertService(c, Engine(c)).evaluate(PROJECT))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=evaluate, args=(c,)) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in contexts:
        c.db.close()
    assert errors == []
    actions = sorted(o.action for r in results for o in r.outcomes)
    assert actions.count("fired") == 1, actions
    assert set(actions) <= {"fired", "firing", "lost_race"}
    with ctx.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(alerts)).scalar() == 1
    assert len(_audit(ctx, "alert.fired")) == 1


# Endpoint metrics ------------------------------------------------------------------------------
def test_endpoint_metrics_count_a_window_of_the_serving_counters(
    any_actx: Context, clock: FrozenClock, model_dir: Any
) -> None:
    from tests.alerts.helpers import deploy, flush, variant_id

    actx = any_actx

    endpoint = deploy(actx, model_dir)
    variant = variant_id(actx, endpoint.id)
    svc = AlertService(actx)
    _rule(actx, name="errors", source="endpoint", condition="error_rate > 0.1", window_s=300)
    _rule(actx, name="slow", source="endpoint", condition="p99_ms > 50", window_s=300)
    _rule(
        actx,
        name="busy",
        source="endpoint",
        condition="requests >= 100",
        endpoint="eligibility",
        window_s=300,
        min_requests=1,
    )
    # Sampling begins: a process had answered 1000 requests before; they are in no window.
    flush(actx, endpoint.id, variant, "host-a", clock.now(), invocations=1000, errors_4xx=500)
    assert sorted(_actions(svc.evaluate(PROJECT))) == [
        ("busy", "eligibility", "no_data"),
        ("errors", "eligibility", "no_data"),
        ("slow", "eligibility", "no_data"),
    ]
    # 60 s later: 100 more answers (20 of them refused), slow ones, from two processes.
    clock.advance(seconds=60)
    flush(actx, endpoint.id, variant, "host-a", clock.now(), invocations=1080, errors_4xx=520)
    flush(actx, endpoint.id, variant, "host-b", clock.now(), invocations=0, ms=80.0)
    result = svc.evaluate(PROJECT)
    outcomes = {o.rule: o for o in result.outcomes}
    assert outcomes["busy"].value == 100.0 and outcomes["busy"].action == "fired"
    assert outcomes["errors"].value == pytest.approx(0.2) and outcomes["errors"].action == "fired"
    assert outcomes["slow"].action == "ok"  # host-a's answers took about 2 ms
    # host-b answers 50 slow requests: the p99 of the window moves past 50 ms.
    clock.advance(seconds=60)
    flush(actx, endpoint.id, variant, "host-b", clock.now(), invocations=50, ms=80.0)
    outcomes = {o.rule: o for o in svc.evaluate(PROJECT).outcomes}
    assert outcomes["slow"].action == "fired"
    assert 80.0 <= outcomes["slow"].value <= 80.0 * 1.26
    # Six minutes without traffic: the window holds no request, nothing changes (no data)...
    clock.advance(seconds=360)
    outcomes = {o.rule: o for o in svc.evaluate(PROJECT).outcomes}
    assert outcomes["errors"].action == "no_data"
    # ...and good traffic resolves them.
    flush(actx, endpoint.id, variant, "host-a", clock.now(), invocations=1180, errors_4xx=520)
    outcomes = {o.rule: o for o in svc.evaluate(PROJECT).outcomes}
    assert (outcomes["errors"].action, outcomes["errors"].value) == ("resolved", 0.0)
    assert outcomes["slow"].action == "resolved"


# Notifications left by a process that died ------------------------------------------------
def test_a_notification_whose_process_died_is_delivered_by_the_next_tick(
    actx: Context, clock: FrozenClock
) -> None:
    from tests.alerts.receivers import webhook_receiver

    ingest(actx, "baseline")
    ingest(actx, "claims", offset=1000)
    with webhook_receiver() as hook:
        _rule(actx, channels=[{"type": "webhook", "url": hook.url}])
        drift_report(actx, "claims")
        dead = Engine(actx, name="dead-process")
        svc = AlertService(actx, dead)
        dead.deliver = lambda ids: None  # type: ignore[method-assign]  # it dies before sending
        assert _actions(svc.evaluate(PROJECT)) == [("drifting", "claims", "fired")]
        with actx.db.read() as conn:
            (row,) = conn.execute(select(alert_notifications)).all()
        assert (row.status, row.claimed_by) == ("pending", "dead-process")
        alive = Engine(actx, name="alive")
        assert alive.claim_expired(clock.now()) == []  # its lease has not expired yet
        clock.advance(minutes=10)
        alive.tick()
        assert [b["type"] for b in hook.verified()] == ["alert.fired"]
        (alert,) = AlertService(actx).list_alerts(PROJECT)
        (sent,) = AlertService(actx).deliveries(PROJECT, alert.id)
        assert (sent.status, len(sent.attempts)) == ("sent", 1)


def test_the_loop_evaluates_due_rules_and_new_reports_promptly(
    actx: Context, clock: FrozenClock
) -> None:
    ingest(actx, "baseline")
    ingest(actx, "claims", offset=1000)
    _rule(actx)
    engine = Engine(actx, name="loop")
    assert engine.tick() == []  # due, nothing to judge
    clock.advance(seconds=1)
    drift_report(actx, "claims")
    (fired,) = engine.tick()  # not due for alerts_interval_s, but a report arrived
    assert AlertService(actx).get_alert(PROJECT, fired).subject == "claims"
    assert engine.tick() == []
    with actx.db.write() as uow:  # another process claimed the rule first: not evaluated here
        from civicml.alerts._tables import alert_rules

        uow.conn.execute(update(alert_rules).values(next_eval_at=clock.now() + timedelta(hours=1)))
    clock.advance(seconds=30)
    ingest(actx, "claims", offset=0)
    drift_report(actx, "claims")
    (resolved,) = engine.tick()
    assert resolved == fired
    assert AlertService(actx).get_alert(PROJECT, fired).status.value == "resolved"


def test_the_scheduler_drives_the_alert_loop(actx: Context) -> None:
    from civicml.pipelines.scheduler import Scheduler

    ingest(actx, "baseline")
    ingest(actx, "claims", offset=1000)
    _rule(actx)
    drift_report(actx, "claims")
    scheduler = Scheduler(actx, name="s1", interval_s=1, lease_s=60)
    try:
        assert scheduler.alerts is not None
        scheduler.run_once(timeout_s=60)  # a tick kicks the alert pass; run_once waits for it
    finally:
        scheduler.stop(wait=True)
    (alert,) = AlertService(actx).list_alerts(PROJECT, firing=True)
    assert alert.rule == "drifting"
    (event,) = _audit(actx, "alert.fired")
    assert (event.actor, event.roles) == ("alice", "alert:drifting")  # as the rule's creator
    off = actx.settings.model_copy(update={"alerts_enabled": False})
    quiet = Scheduler(Context(actx.db, actx.artifacts, actx.principal, off, actx.clock))
    assert quiet.alerts is None
    quiet.stop()
