"""Alerts through a real server on a loopback port: REST (rules, evaluation, alerts, deliveries,
a test notification, error bodies), the remote SDK, the CLI against the server, and an
endpoint-metric rule fired by real invocations of a deployed endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from civicml.cli.main import main
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.alerts.receivers import SECRET, Webhook, webhook_receiver
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

P = "alerting"
RULES = f"{API}/projects/{P}/alerts/rules"
VIEWER = {"x-civicml-user": "val"}


@pytest.fixture(scope="module")
def hook() -> Iterator[Webhook]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, hook: Webhook) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("alerts-api"),
        alerts_webhook_secrets={"default": SECRET},
        alerts_delivery_backoff_s=0.01,
        roles={"val": ["viewer"]},
    )
    with serve_app(create_app(settings)) as base:
        with connect(base, user="alice") as ml:
            proj = ml.project(P)
            base_data = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100) % 3})
            proj.datasets.ingest("baseline", base_data)
            proj.datasets.ingest("claims", base_data.assign(x=base_data.x + 1000, y=7))
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60, headers={"x-civicml-user": "alice"}) as client:
        yield client


def _drift(api: httpx.Client) -> str:
    body = {
        "current": {"dataset": "claims", "version": "latest"},
        "baseline": {"dataset": "baseline", "version": 1},
    }
    made = api.post(f"{API}/projects/{P}/reports/drift", json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_rules_alerts_and_deliveries_through_rest(api: httpx.Client, hook: Webhook) -> None:
    body = {
        "name": "claims-drift",
        "source": "monitoring",
        "condition": "verdict == drift",
        "dataset": "claims",
        "severity": "critical",
        "channels": [{"type": "webhook", "url": hook.url}],
    }
    made = api.post(RULES, json=body)
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"{RULES}/claims-drift"
    rule = made.json()
    assert (rule["condition"], rule["window_s"], rule["channels"][0]["secret"]) == (
        "verdict == drift",
        86400,
        "default",
    )
    assert [r["name"] for r in api.get(RULES).json()] == ["claims-drift"]
    assert api.get(f"{RULES}/CLAIMS-DRIFT").json()["id"] == rule["id"]

    _drift(api)
    evaluated = api.post(f"{API}/projects/{P}/alerts/evaluate", json={})
    assert evaluated.status_code == 200, evaluated.text
    (outcome,) = evaluated.json()["outcomes"]
    assert (outcome["subject"], outcome["action"], outcome["value"]) == ("claims", "fired", "drift")
    assert [n["status"] for n in evaluated.json()["notifications"]] == ["sent"]
    assert hook.verified()[-1]["alert_id"] == outcome["alert_id"]

    again = api.post(f"{API}/projects/{P}/alerts/evaluate", json={}).json()
    assert again["outcomes"][0]["action"] == "firing" and again["notifications"] == []
    firing = api.get(f"{API}/projects/{P}/alerts", params={"firing": "true"}).json()
    assert [a["id"] for a in firing] == [outcome["alert_id"]]
    alert = api.get(f"{API}/projects/{P}/alerts/{outcome['alert_id']}").json()
    assert (alert["rule"], alert["severity"], alert["status"]) == (
        "claims-drift",
        "critical",
        "firing",
    )
    (delivery,) = api.get(f"{API}/projects/{P}/alerts/{outcome['alert_id']}/deliveries").json()
    assert (delivery["event"], delivery["status"], delivery["attempts"][0]["status_code"]) == (
        "fired",
        "sent",
        200,
    )
    tested = api.post(f"{RULES}/claims-drift/test", json={})
    assert tested.status_code == 200 and tested.json()["ok"] is True
    assert hook.verified()[-1]["type"] == "alert.test"
    sent = api.get(f"{RULES}/claims-drift/notifications", params={"limit": 10}).json()
    assert [n["event"] for n in sent] == ["test", "fired"]
    assert api.post(f"{RULES}/claims-drift/disable", json={}).json()["enabled"] is False
    assert api.post(f"{RULES}/claims-drift/enable", json={}).json()["enabled"] is True
    events = api.get(f"{API}/audit/events", params={"project": P, "limit": 1000}).json()
    fired = [e for e in events if e["action"] == "alert.fired"]
    assert fired and fired[-1]["after"]["rule"] == "claims-drift"


def test_bad_input_gets_one_error_body_with_a_hint(api: httpx.Client, url: str) -> None:
    body = {"name": "bad", "source": "endpoint", "condition": "p99 > 5"}
    got = assert_error(api.post(RULES, json=body), 422, "InvalidInputError", "Metric 'p99'")
    assert got["hint"] == "Did you mean 'p99_ms'?"
    hook = {"type": "webhook", "url": "https://ops.example/x", "secret": "nope"}
    body = {
        "name": "bad",
        "source": "monitoring",
        "condition": "verdict == drift",
        "channels": [hook],
    }
    assert_error(api.post(RULES, json=body), 400, "ConfigurationError", "No webhook secret")
    body = {
        "name": "bad",
        "source": "monitoring",
        "condition": "verdict == drift",
        "window_s": "300",
    }
    assert api.post(RULES, json=body).status_code == 422  # strict: a number, not text
    got = assert_error(api.get(f"{RULES}/nope"), 404, "NotFoundError", "Alert rule 'nope'")
    assert_error(api.get(f"{API}/projects/{P}/alerts/0000"), 404, "NotFoundError", "Alert '0000'")
    body = {"name": "claims-drift", "source": "monitoring", "condition": "verdict == drift"}
    api.post(RULES, json=body)
    assert_error(api.post(RULES, json=body), 409, "ConflictError", "already exists")
    denied = httpx.post(f"{url}{RULES}", json={**body, "name": "v"}, headers=VIEWER)
    assert_error(denied, 403, "PermissionDeniedError")
    assert httpx.get(f"{url}{RULES}", headers=VIEWER).status_code == 200


def test_the_remote_sdk_and_the_cli_against_the_server(
    url: str, hook: Webhook, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with connect(url, user="alice") as ml:
        alerts = ml.project(P).alerts
        rule = alerts.create_rule(
            "sdk-rule",
            source="monitoring",
            condition="n_drifted >= 1",
            report_kind="drift",
            channels=[{"type": "webhook", "url": hook.url}],
        )
        assert rule.report_kind == "drift" and alerts.rule("sdk-rule").id == rule.id
        result = alerts.evaluate()
        (mine,) = [o for o in result.outcomes if o.rule == "sdk-rule"]
        assert mine.action == "fired"
        assert alerts.get(mine.alert_id).rule == "sdk-rule"
        assert [d.status for d in alerts.deliveries(mine.alert_id)] == ["sent"]
        assert alerts.test("sdk-rule").ok
        assert alerts.list(rule="sdk-rule")[0].id == mine.alert_id
        assert alerts.disable_rule("sdk-rule").enabled is False
        assert alerts.delete_rule("sdk-rule").name == "sdk-rule"

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--url", url, "--user", "alice", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli(
        "alerts",
        "rules",
        "add",
        "cli-rule",
        "-p",
        P,
        "--source",
        "monitoring",
        "--when",
        "share_drifted >= 0.5",
        "--webhook",
        hook.url,
        "--severity",
        "info",
    )
    assert code == 0 and "Added alert rule cli-rule (share_drifted >= 0.5" in out
    code, out, _ = cli("alerts", "rules", "list", "-p", P, "--json")
    assert code == 0 and "cli-rule" in [r["name"] for r in json.loads(out)]
    code, out, _ = cli("alerts", "rules", "show", "cli-rule", "-p", P)
    assert code == 0 and "share_drifted >= 0.5" in out
    code, out, _ = cli("alerts", "evaluate", "-p", P, "--json")
    assert code == 0
    actions = {(o["rule"], o["action"]) for o in json.loads(out)["outcomes"]}
    assert ("cli-rule", "fired") in actions
    code, out, _ = cli("alerts", "list", "-p", P, "--firing", "--rule", "cli-rule", "--json")
    (alert,) = json.loads(out)
    code, out, _ = cli("alerts", "show", alert["id"], "-p", P)
    assert code == 0 and "cli-rule: share_drifted = 1 on claims" in out
    code, out, _ = cli("alerts", "test", "cli-rule", "-p", P)
    assert code == 0 and "sent" in out
    for action in ("disable", "enable", "remove"):
        code, _, _ = cli("alerts", "rules", action, "cli-rule", "-p", P)
        assert code == 0
    code, _, err = cli(
        "alerts", "rules", "add", "x", "-p", P, "--source", "monitoring", "--when", "p99_ms > 5"
    )
    assert code == 2 and err.startswith("Error: Metric 'p99_ms' is not one a monitoring rule")
    code, _, err = cli("alerts", "test", "nope", "-p", P)
    assert code == 2 and "Alert rule 'nope' does not exist" in err


def test_real_invocations_fire_an_endpoint_rule(url: str, api: httpx.Client) -> None:
    from tests.evaluation.helpers import FEATURES, MODEL, publish

    with connect(url, user="alice") as ml, connect(url, user="rosa") as reviewer:
        _, mv = publish(ml, "serving-alerts")
        reviewer.project("serving-alerts").models.approve(mv, note="validated")
    base = f"{API}/projects/serving-alerts"
    made = api.post(
        f"{base}/endpoints", json={"name": "ep", "model": MODEL, "version": 1, "capture": False}
    )
    assert made.status_code == 201, made.text
    rules = [
        {"name": "refusals", "condition": "error_rate_4xx > 0.2"},
        {"name": "slow", "condition": "p99_ms > 60000"},
        {"name": "answering", "condition": "p99_ms > 0"},
    ]
    for rule in rules:
        body = {**rule, "source": "endpoint", "endpoint": "ep", "window_s": 600}
        assert api.post(f"{base}/alerts/rules", json=body).status_code == 201
    api.post(f"{base}/alerts/evaluate", json={})  # sampling begins before any request
    from tests.evaluation.helpers import frame

    rows = frame(40).dropna()[FEATURES].head(10).to_dict(orient="records")
    for _ in range(3):
        answered = api.post(f"{base}/endpoints/ep/invocations", json={"records": rows})
        assert answered.status_code == 200, answered.text
    for _ in range(2):
        refused = api.post(f"{base}/endpoints/ep/invocations", json={"records": [{"age": 1}]})
        assert refused.status_code == 422, refused.text
    outcomes: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server flushes its counters before evaluating
        result = api.post(f"{base}/alerts/evaluate", json={}).json()
        outcomes.update({o["rule"]: o for o in result["outcomes"]})
        if outcomes.get("refusals", {}).get("action") in ("fired", "firing"):
            break
        time.sleep(0.2)
    assert outcomes["refusals"]["alert_id"], outcomes
    assert outcomes["answering"]["action"] in ("fired", "firing")
    assert outcomes["slow"]["action"] == "ok"
    firing = api.get(f"{base}/alerts", params={"firing": "true"}).json()
    assert sorted(a["rule"] for a in firing) == ["answering", "refusals"]
    assert {a["subject"] for a in firing} == {"ep"}
