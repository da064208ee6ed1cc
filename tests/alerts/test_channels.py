"""Each channel against a real receiver on loopback: a webhook server checking the HMAC, an SMTP
server, and the NATS, Redis and Mosquitto servers; retries, failures recorded without secrets."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from civicml.alerts import AlertService, RuleCreate, sign, verify_signature
from civicml.alerts.channels import scrub, send
from civicml.alerts.schemas import WebhookChannel
from civicml.core import FrozenClock
from civicml.core.errors import ConfigurationError, MissingExtraError
from civicml.store import Context
from tests.alerts.helpers import PROJECT, alert_settings, context, drift_report, ingest
from tests.alerts.receivers import (
    SECRET,
    mqtt_subscriber,
    nats_subscriber,
    redis_subscriber,
    smtp_receiver,
    wait_for,
    webhook_receiver,
)
from tests.conftest import free_port


def _rule(ctx: Context, channels: list[dict[str, Any]], name: str = "drifting") -> Any:
    request = RuleCreate(
        name=name, source="monitoring", condition="verdict == drift", channels=channels
    )
    return AlertService(ctx).create_rule(PROJECT, request)


def _drift(ctx: Context) -> None:
    ingest(ctx, "baseline")
    ingest(ctx, "claims", offset=1000)
    drift_report(ctx, "claims")


# Webhooks --------------------------------------------------------------------------------------
def test_a_webhook_gets_a_signed_body_once_when_fired_and_once_when_resolved(
    actx: Context, clock: FrozenClock
) -> None:
    with webhook_receiver() as hook:
        _rule(actx, [{"type": "webhook", "url": hook.url}])
        _drift(actx)
        svc = AlertService(actx)
        fired = svc.evaluate(PROJECT)
        svc.evaluate(PROJECT)  # still firing: not sent again
        clock.advance(minutes=1)
        ingest(actx, "claims", offset=0)
        drift_report(actx, "claims")
        svc.evaluate(PROJECT)
    assert [r["verified"] for r in hook.requests] == [True, True]
    first, second = hook.verified()
    alert_id = fired.outcomes[0].alert_id
    assert {k: first[k] for k in ("type", "alert_id", "project", "rule", "subject")} == {
        "type": "alert.fired",
        "alert_id": alert_id,
        "project": PROJECT,
        "rule": "drifting",
        "subject": "claims",
    }
    assert (first["severity"], first["value"], first["condition"]) == (
        "warning",
        "drift",
        "verdict == drift",
    )
    assert (second["type"], second["value"], second["alert_id"]) == (
        "alert.resolved",
        "no_drift",
        alert_id,
    )
    headers = hook.requests[0]["headers"]
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", headers["X-Civicml-Signature"])
    assert abs(int(headers["X-Civicml-Timestamp"]) - time.time()) < 60
    (notification, _) = svc.deliveries(PROJECT, alert_id)
    assert headers["X-Civicml-Delivery"] == notification.id
    assert [(n.event, n.status, len(n.attempts)) for n in svc.deliveries(PROJECT, alert_id)] == [
        ("fired", "sent", 1),
        ("resolved", "sent", 1),
    ]
    assert fired.notifications[0].attempts[0].status_code == 200


def test_signatures_refuse_a_changed_body_a_wrong_secret_and_a_replay() -> None:
    body = b'{"type":"alert.fired"}'
    now = int(time.time())
    headers = {"X-Civicml-Timestamp": str(now), "X-Civicml-Signature": sign(SECRET, now, body)}
    assert verify_signature(SECRET, headers, body)
    assert not verify_signature(SECRET, headers, body + b" ")
    assert not verify_signature("another secret", headers, body)
    assert not verify_signature(SECRET, headers, body, now=now + 301)  # replayed later
    assert not verify_signature(SECRET, {**headers, "X-Civicml-Timestamp": "soon"}, body)


def test_a_webhook_is_retried_with_backoff_and_every_try_recorded(actx: Context) -> None:
    with webhook_receiver() as hook:
        hook.answers = [503, 500]  # then 200
        rule = _rule(actx, [{"type": "webhook", "url": hook.url}])
        result = AlertService(actx).test_rule(PROJECT, rule.name)
    assert result.ok
    (notification,) = result.notifications
    assert notification.status == "sent"
    assert [(a.attempt, a.ok, a.status_code) for a in notification.attempts] == [
        (1, False, 503),
        (2, False, 500),
        (3, True, 200),
    ]
    assert len({r["headers"]["X-Civicml-Delivery"] for r in hook.requests}) == 1
    assert [r["body"]["type"] for r in hook.requests] == ["alert.test"] * 3


def test_a_refusing_receiver_is_not_retried_and_a_wrong_secret_is_refused(
    tmp_path: Any, clock: FrozenClock
) -> None:
    settings = alert_settings(tmp_path / "home", alerts_webhook_secrets={"default": "not-it"})
    ctx = context(settings, clock)
    from civicml.governance.projects import ProjectService

    ProjectService(ctx).create(PROJECT)
    try:
        with webhook_receiver() as hook:  # it checks with SECRET: our signature fails (401)
            _rule(ctx, [{"type": "webhook", "url": hook.url}])
            result = AlertService(ctx).test_rule(PROJECT, "drifting")
        assert not result.ok
        (notification,) = result.notifications
        assert notification.status == "failed"
        assert [(a.ok, a.status_code) for a in notification.attempts] == [(False, 401)]
        assert notification.error == "HTTP 401 Unauthorized"
        assert hook.requests[0]["verified"] is False
    finally:
        ctx.db.close()


def test_an_unreachable_webhook_fails_after_its_tries_without_leaking_the_url(
    actx: Context,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook?token=do-not-show"
    _rule(actx, [{"type": "webhook", "url": url}])
    result = AlertService(actx).test_rule(PROJECT, "drifting")
    (notification,) = result.notifications
    assert (notification.status, len(notification.attempts)) == ("failed", 3)
    assert notification.target == url.split("?", maxsplit=1)[0]
    for attempt in notification.attempts:
        assert attempt.error and "ConnectError" in attempt.error
        assert "do-not-show" not in attempt.error and SECRET not in attempt.error
    rule = AlertService(actx).get_rule(PROJECT, "drifting")
    assert AlertService(actx).notifications(PROJECT, rule.name)[0].id == notification.id


def test_webhook_urls_are_http_without_credentials() -> None:
    for bad in ("ftp://host/x", "file:///etc/passwd", "http://user:pw@host/x", "https://"):
        with pytest.raises(ValueError, match="url"):
            WebhookChannel(type="webhook", url=bad)


# E-mail ----------------------------------------------------------------------------------------
def test_an_email_reaches_a_real_smtp_server(tmp_path: Any, clock: FrozenClock) -> None:
    with smtp_receiver() as box:
        settings = alert_settings(
            tmp_path / "home",
            alerts_smtp_host=box.host,
            alerts_smtp_port=box.port,
            alerts_smtp_from="civicml@agency.example",
        )
        ctx = context(settings, clock)
        from civicml.governance.projects import ProjectService

        ProjectService(ctx).create(PROJECT)
        try:
            _rule(ctx, [{"type": "email", "to": ["ops@agency.example", "ml@agency.example"]}])
            _drift(ctx)
            result = AlertService(ctx).evaluate(PROJECT)
            assert [n.status for n in result.notifications] == ["sent"]
            assert wait_for(lambda: len(box.messages) == 1)
        finally:
            ctx.db.close()
    (mail,) = box.messages
    assert mail["From"] == "civicml@agency.example"
    assert mail["To"] == "ops@agency.example, ml@agency.example"
    assert mail["Subject"] == f"[civicml] FIRED warning: drifting on claims ({PROJECT})"
    text = mail.get_payload(decode=True).decode()
    assert "drifting: verdict = drift on claims (verdict == drift)" in text
    assert '"type":"alert.fired"' in text


def test_an_email_logs_in_with_the_configured_credentials(
    tmp_path: Any, clock: FrozenClock
) -> None:
    with smtp_receiver(login=("civicml", "smtp-pass-42")) as box:
        settings = alert_settings(
            tmp_path / "home",
            alerts_smtp_host=box.host,
            alerts_smtp_port=box.port,
            alerts_smtp_from="civicml@agency.example",
            alerts_smtp_username="civicml",
            alerts_smtp_password="smtp-pass-42",
        )
        ctx = context(settings, clock)
        from civicml.governance.projects import ProjectService

        ProjectService(ctx).create(PROJECT)
        try:
            _rule(ctx, [{"type": "email", "to": ["ops@agency.example"]}])
            assert AlertService(ctx).test_rule(PROJECT, "drifting").ok
            assert wait_for(lambda: len(box.messages) == 1)
        finally:
            ctx.db.close()
    assert box.messages[0]["Subject"].startswith("[civicml] TEST warning: drifting")


def test_a_refused_smtp_connection_is_recorded(tmp_path: Any, clock: FrozenClock) -> None:
    settings = alert_settings(
        tmp_path / "home",
        alerts_smtp_host="127.0.0.1",
        alerts_smtp_port=free_port(),
        alerts_smtp_from="civicml@agency.example",
        alerts_smtp_username="civicml",
        alerts_smtp_password="smtp-password-123",
    )
    ctx = context(settings, clock)
    from civicml.governance.projects import ProjectService

    ProjectService(ctx).create(PROJECT)
    try:
        _rule(ctx, [{"type": "email", "to": ["ops@agency.example"]}])
        (notification,) = AlertService(ctx).test_rule(PROJECT, "drifting").notifications
    finally:
        ctx.db.close()
    assert (notification.status, len(notification.attempts)) == ("failed", 3)
    assert notification.error and "ConnectionRefusedError" in notification.error
    assert "smtp-password-123" not in notification.error


# Message brokers -------------------------------------------------------------------------------
def test_nats_gets_the_alert(actx: Context) -> None:
    with nats_subscriber("civicml.test.alerts") as got:
        _rule(actx, [{"type": "nats", "subject": "civicml.test.alerts"}])
        _drift(actx)
        result = AlertService(actx).evaluate(PROJECT)
        assert [n.status for n in result.notifications] == ["sent"]
        assert wait_for(lambda: len(got) == 1)
    message = json.loads(got[0])
    assert (message["type"], message["subject"], message["rule"]) == (
        "alert.fired",
        "claims",
        "drifting",
    )


def test_redis_pubsub_and_stream_get_the_alert(actx: Context) -> None:
    import redis

    stream = f"civicml-test-{time.time_ns()}"
    with redis_subscriber("civicml-test-alerts") as got:
        _rule(
            actx,
            [
                {"type": "redis", "channel": "civicml-test-alerts"},
                {"type": "redis", "channel": stream, "mode": "stream"},
            ],
        )
        _drift(actx)
        result = AlertService(actx).evaluate(PROJECT)
        assert [n.status for n in result.notifications] == ["sent", "sent"]
        assert wait_for(lambda: len(got) == 1)
    assert json.loads(got[0])["type"] == "alert.fired"
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        ((_, fields),) = client.xrange(stream)
        assert json.loads(fields[b"alert"])["subject"] == "claims"
    finally:
        client.delete(stream)
        client.close()


def test_mqtt_gets_the_alert(actx: Context) -> None:
    with mqtt_subscriber("civicml/test/alerts") as got:
        _rule(actx, [{"type": "mqtt", "topic": "civicml/test/alerts", "qos": 1}])
        result = AlertService(actx).test_rule(PROJECT, "drifting")
        assert result.ok, result
        assert wait_for(lambda: len(got) == 1)
    assert json.loads(got[0])["type"] == "alert.test"


def test_an_unreachable_broker_is_recorded_without_its_password(
    tmp_path: Any, clock: FrozenClock
) -> None:
    port = free_port()
    settings = alert_settings(
        tmp_path / "home",
        alerts_redis_url=f"redis://:broker-pass-77@127.0.0.1:{port}/0",
        alerts_nats_url=f"nats://user:nats-pass-88@127.0.0.1:{port}",
        alerts_mqtt_url=f"mqtt://user:mqtt-pass-99@127.0.0.1:{port}",
        alerts_delivery_attempts=1,
        alerts_delivery_timeout_s=2.0,
    )
    ctx = context(settings, clock)
    from civicml.governance.projects import ProjectService

    ProjectService(ctx).create(PROJECT)
    try:
        _rule(
            ctx,
            [
                {"type": "redis", "channel": "x"},
                {"type": "nats", "subject": "x"},
                {"type": "mqtt", "topic": "x"},
            ],
        )
        result = AlertService(ctx).test_rule(PROJECT, "drifting")
    finally:
        ctx.db.close()
    assert not result.ok
    for notification in result.notifications:
        assert notification.status == "failed" and notification.error
        for secret in ("broker-pass-77", "nats-pass-88", "mqtt-pass-99"):
            assert secret not in notification.error


def test_a_broker_without_its_setting_or_client_is_refused(
    actx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = actx.settings.model_copy(update={"alerts_nats_url": None})
    ctx = Context(actx.db, actx.artifacts, actx.principal, settings, actx.clock)
    with pytest.raises(ConfigurationError, match="NATS alerts need the alerts_nats_url setting"):
        _rule(ctx, [{"type": "nats", "subject": "x"}])
    import importlib

    real = importlib.import_module

    def no_redis(name: str, *args: Any) -> Any:
        if name == "redis":
            raise ImportError("No module named 'redis'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_redis)
    with pytest.raises(MissingExtraError) as caught:
        _rule(actx, [{"type": "redis", "channel": "x"}])
    assert caught.value.hint == "pip install 'civicml[alerts]'"
    sent = send(
        WebhookChannel(type="webhook", url="http://127.0.0.1:1/x", secret="nope"),
        {"type": "alert.test"},
        actx.settings,
        notification_id="n1",
    )
    assert (sent.ok, sent.retry) == (False, False)
    assert sent.error is not None and "No webhook secret named 'nope'" in sent.error


def test_scrub_removes_every_configured_secret(actx: Context) -> None:
    text = f"failed with {SECRET} and redis://127.0.0.1:6379/0 inside"
    assert scrub(text, actx.settings) == "failed with *** and *** inside"
