"""Variants, shadow and guarded rollouts through the real server on loopback, under load.

A load generator keeps several clients invoking the endpoint while the test changes weights or
steps a rollout. The phase counter is odd while a change is being made and even once it is
done, so only requests that started and finished inside one even phase count towards that
phase's traffic split, which is checked against its expected share with a binomial tolerance
(4.5 standard deviations: a false alarm about once in 150,000 runs). Every request of every
phase, changes included, must succeed. Bakes are short (0.3 s) and rollouts are ticked
explicitly (the server's own ticker is off here, and tested on its own at the end).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from civicml.governance.projects import ProjectService
from civicml.sdk.client import connect
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from civicml.training import TabularModel
from tests.server.helpers import API, assert_error, isolated_settings, serve
from tests.serving.helpers import MODEL, PROJECT, records, register

BASE = f"{API}/projects/{PROJECT}/endpoints"
PHASE_REQUESTS = 300  # clean requests per phase before its split is checked
BAKE_S = 0.3


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, model_dirs: tuple[Path, Path]) -> Iterator[str]:
    settings = isolated_settings(tmp_path_factory.mktemp("rollout-server"), rollout_enabled=False)
    ctx = open_context(settings)
    try:
        ProjectService(ctx).create(PROJECT)
        register(ctx, model_dirs[0])
        register(ctx, model_dirs[1])
    finally:
        ctx.db.close()
    app = create_app(settings)
    with serve(app) as base:
        yield base
    app.state.serving.close()


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


class Load:
    """Clients invoking one endpoint until stopped; each result tagged with its phases."""

    def __init__(self, url: str, endpoint: str, clients: int = 6) -> None:
        self.url, self.endpoint = url, endpoint
        self.phase = 0
        self.results: list[tuple[int, int, int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]
        self._rows = records(1)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                before = self.phase
                response = http.post(
                    f"{BASE}/{self.endpoint}/invocations", json={"records": self._rows}
                )
                variant = response.headers.get("civicml-variant")
                self.results.append((before, self.phase, response.status_code, variant))

    def clean(self, phase: int) -> list[str | None]:
        return [v for a, b, _, v in list(self.results) if a == b == phase]

    def settle(self) -> Counter[str | None]:
        """Wait for PHASE_REQUESTS clean requests of the current phase; their variants."""
        phase = self.phase
        deadline = time.monotonic() + 120
        while len(self.clean(phase)) < PHASE_REQUESTS:
            assert time.monotonic() < deadline, "the load generator stalled"
            time.sleep(0.01)
        return Counter(self.clean(phase))

    def change(self, action: Any) -> Any:
        """Run ``action`` between two phases (the odd phase holds the change itself)."""
        self.phase += 1
        try:
            return action()
        finally:
            self.phase += 1

    def failures(self) -> list[tuple[int, str | None]]:
        return [(status, v) for _, _, status, v in list(self.results) if status != 200]


def _check_share(split: Counter[str | None], variant: str, share: float) -> None:
    n = sum(split.values())
    count = split.get(variant, 0)
    if share in (0.0, 1.0):
        assert count == share * n, (split, variant, share)
        return
    sigma = math.sqrt(n * share * (1 - share))
    assert abs(count - n * share) <= 4.5 * sigma, (split, variant, share)


def _tick_until_it_moves(api: httpx.Client, endpoint: str) -> dict[str, Any]:
    """Tick after each bake until the rollout's step or status changes."""
    before = api.get(f"{BASE}/{endpoint}/rollout").json()
    while True:
        time.sleep(BAKE_S)
        ticked = api.post(f"{BASE}/{endpoint}/rollout/tick")
        assert ticked.status_code == 200, ticked.text
        after: dict[str, Any] = ticked.json()
        if (after["current_step"], after["status"]) != (before["current_step"], before["status"]):
            return after


def _deploy(api: httpx.Client, name: str, **extra: Any) -> None:
    body = {"name": name, "model": MODEL, "version": 1, **extra}
    response = api.post(BASE, json=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("strategy", "options", "shares"),
    [
        ("canary", {"canary_percent": 10}, [0.1, 1.0]),
        ("linear", {"linear_steps": 3}, [1 / 3, 2 / 3, 1.0]),
        ("all_at_once", {}, [1.0]),
    ],
)
def test_a_rollout_under_load_fails_no_request_and_splits_as_asked(
    api: httpx.Client, url: str, strategy: str, options: dict[str, Any], shares: list[float]
) -> None:
    name = f"roll-{strategy.replace('_', '-')}"
    _deploy(api, name)
    body = {
        "version": 2,
        "strategy": strategy,
        "bake_s": BAKE_S,
        "alarms": ["5xx_rate>0", "4xx_rate>0.01"],
        **options,
    }
    with Load(url, name) as load:
        _check_share(load.settle(), "v1", 1.0)
        started = load.change(lambda: api.put(f"{BASE}/{name}", json=body))
        assert started.status_code == 200, started.text
        assert started.json()["rollout"]["steps"] == pytest.approx([100 * s for s in shares])
        for step, share in enumerate(shares):
            _check_share(load.settle(), "v2", share)
            moved = load.change(lambda: _tick_until_it_moves(api, name))
            if step + 1 < len(shares):
                assert (moved["status"], moved["current_step"]) == ("in_progress", step + 1)
        assert moved["status"] == "succeeded", moved
        _check_share(load.settle(), "v2", 1.0)
    assert load.failures() == []
    info = api.get(f"{BASE}/{name}").json()
    assert [v["name"] for v in info["variants"]] == ["v2"] and info["model_version"] == 2


def test_an_automatic_rollback_under_load_fails_no_request(api: httpx.Client, url: str) -> None:
    _deploy(api, "roll-back")
    body = {
        "version": 2,
        "strategy": "canary",
        "canary_percent": 30,
        "bake_s": 600,  # the alarm cuts the bake short
        "alarms": ["p99_ms>0.001"],  # any answer takes longer: the new version trips it
    }
    with Load(url, "roll-back") as load:
        _check_share(load.settle(), "v1", 1.0)
        assert load.change(lambda: api.put(f"{BASE}/roll-back", json=body)).status_code == 200
        _check_share(load.settle(), "v2", 0.3)
        rolled = load.change(lambda: api.post(f"{BASE}/roll-back/rollout/tick")).json()
        assert rolled["status"] == "rolled_back", rolled
        assert rolled["reason"].startswith("alarm p99_ms>0.001 fired: p99 ")
        assert rolled["readings"][0]["fired"] is True
        _check_share(load.settle(), "v1", 1.0)
    assert load.failures() == []
    info = api.get(f"{BASE}/roll-back").json()
    assert [(v["name"], v["weight"]) for v in info["variants"]] == [("v1", 1.0)]
    history = api.get(f"{BASE}/roll-back/rollouts").json()
    assert [r["status"] for r in history] == ["rolled_back"]
    events = api.get(f"{API}/audit/events", params={"limit": 10_000}).json()
    assert "endpoint.rollout_rolled_back" in [e["action"] for e in events]


def test_weights_change_under_load_without_a_failed_request(api: httpx.Client, url: str) -> None:
    _deploy(api, "weights", variant="blue")
    green = api.put(f"{BASE}/weights/variants/green", json={"version": 2})
    assert green.status_code == 200, green.text
    with Load(url, "weights") as load:
        _check_share(load.settle(), "blue", 1.0)  # green has weight 0: pinned requests only
        changed = load.change(
            lambda: api.put(f"{BASE}/weights/traffic", json={"weights": {"blue": 30, "green": 70}})
        )
        assert changed.status_code == 200, changed.text
        assert [v["share"] for v in changed.json()["variants"]] == pytest.approx([0.3, 0.7])
        _check_share(load.settle(), "green", 0.7)
        load.change(lambda: api.put(f"{BASE}/weights/traffic", json={"weights": {"blue": 0}}))
        _check_share(load.settle(), "green", 1.0)
    assert load.failures() == []


def test_pinning_by_header_and_the_variant_in_each_answer(api: httpx.Client) -> None:
    _deploy(api, "pins", variant="blue")
    assert api.put(f"{BASE}/pins/variants/green", json={"version": 2}).status_code == 200
    rows = records(2)
    for path in (f"{BASE}/pins/invocations", f"/endpoints/pins/invocations?project={PROJECT}"):
        plain = api.post(path, json=rows)
        assert plain.headers["civicml-variant"] == plain.json()["variant"] == "blue"
        pinned = api.post(path, json=rows, headers={"civicml-variant": "green"})
        assert pinned.headers["civicml-variant"] == "green" and pinned.json()["model_version"] == 2
        azure = api.post(path, json=rows, headers={"azureml-model-deployment": "green"})
        assert azure.json()["variant"] == "green"
        body = assert_error(
            api.post(path, json=rows, headers={"civicml-variant": "gren"}),
            404,
            "NotFoundError",
            "Endpoint 'pins' has no variant 'gren'",
        )
        assert body["hint"] == "Did you mean 'green'?"
    query = api.post(f"{BASE}/pins/invocations", params={"variant": "green"}, json=rows)
    assert query.json()["variant"] == "green"


def test_a_shadow_never_changes_live_answers_and_is_compared(
    api: httpx.Client, model_dirs: tuple[Path, Path]
) -> None:
    _deploy(api, "shadowed")
    shadow = api.put(f"{BASE}/shadowed/shadow", json={"version": 2, "percent": 100})
    assert shadow.status_code == 200, shadow.text
    rows = records(120, seed=9)
    answers = [api.post(f"{BASE}/shadowed/invocations", json=[row]) for row in rows]
    assert {(a.status_code, a.headers["civicml-variant"]) for a in answers} == {(200, "v1")}
    live = TabularModel.load(model_dirs[0]).predict_proba(rows)
    np.testing.assert_allclose([a.json()["probabilities"][0] for a in answers], live, rtol=1e-12)
    made = api.post(f"{BASE}/shadowed/shadow/reports", json={"min_pairs": 100})
    assert made.status_code == 201, made.text
    report = made.json()
    assert made.headers["location"].endswith(f"/shadow/reports/{report['id']}")
    assert report["summary"]["pairs"] == 120
    full = api.get(f"{BASE}/shadowed/shadow/reports/{report['id']}/json").json()
    assert full["pairs"] == 120 and full["live_variants"] == ["v1"]
    page = api.get(f"{BASE}/shadowed/shadow/reports/{report['id']}/html")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    listed = api.get(f"{BASE}/shadowed/shadow/reports").json()
    assert [r["id"] for r in listed] == [report["id"]]
    assert api.get(f"{BASE}/shadowed/shadow/reports/{report['id']}").json() == report
    assert api.delete(f"{BASE}/shadowed/shadow").status_code == 200
    assert_error(api.delete(f"{BASE}/shadowed/shadow"), 409, "ConflictError", "no shadow")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error", "message"),
    [
        ("PUT", "/errs", {"version": 2, "strategy": "green"}, 422, "ValidationError", None),
        ("PUT", "/errs", {"version": 2, "bake_s": 5}, 422, "InvalidInputError", "strategy"),
        ("PUT", "/errs", {"version": 2, "strategy": "canary", "alarms": ["p9>1"]}, 422,
         "InvalidInputError", "Alarm 'p9>1'"),
        ("PUT", "/errs/traffic", {"weights": {"v1": -1}}, 422, "InvalidInputError", "Weight -1"),
        ("PUT", "/errs/traffic", {"weights": {"v1": 0}}, 409, "ConflictError", "No live variant"),
        ("PUT", "/errs/traffic", {"weights": {"v9": 1}}, 404, "NotFoundError", "no variant 'v9'"),
        ("PUT", "/errs/variants/green", {"version": 3}, 404, "NotFoundError", None),
        ("PUT", "/errs/shadow", {"version": 2, "percent": 0}, 422, "ValidationError", None),
        ("DELETE", "/errs/variants/v1", None, 409, "ConflictError", "No live variant"),
        ("GET", "/errs/rollout", None, 404, "NotFoundError", "has had no guarded update"),
        ("POST", "/errs/rollout/cancel", {}, 409, "ConflictError", "no rollout in progress"),
        ("POST", "/errs/shadow/reports", {}, 409, "ConflictError", "has no shadow variant"),
        ("GET", "/errs/shadow/reports/nope", None, 404, "NotFoundError", "no shadow report"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_one_error_body(
    api: httpx.Client,
    method: str,
    path: str,
    body: Any,
    status: int,
    error: str,
    message: str | None,
) -> None:
    if api.get(f"{BASE}/errs").status_code == 404:
        _deploy(api, "errs")
    response = api.request(method, f"{BASE}{path}", json=body)
    if error == "ValidationError":
        assert response.status_code == 422, response.text
        return
    assert_error(response, status, error, message)


def test_the_remote_sdk_drives_variants_and_rollouts(url: str) -> None:
    with connect(url) as ml:
        endpoints = ml.project(PROJECT).endpoints
        ep = endpoints.deploy("sdk-roll", model=MODEL, version=1)
        ep.set_variant("green", 2)
        assert [v.name for v in ep.variants()] == ["green", "v1"]
        assert ep.predict(records(1), variant="green").variant == "green"
        ep.set_traffic({"green": 1, "v1": 1})
        assert [round(v.share, 3) for v in ep.info.variants] == [0.5, 0.5]
        ep.remove_variant("green")
        ep.update(2, strategy="canary", canary="20%", bake="0.3s", alarms=["error_rate>0.5"])
        assert ep.info.rollout is not None and ep.info.rollout.current_percent == 20
        status = ep.rollout.status()
        assert (status.status.value, status.alarms) == ("in_progress", ["error_rate>0.5"])
        cancelled = ep.rollout.cancel("changed my mind")
        assert cancelled.status.value == "cancelled"
        assert [r.status.value for r in ep.rollout.list()] == ["cancelled"]
        ep.set_shadow(2, percent=50)
        assert ep.info.variants[-1].role.value == "shadow"
        ep.remove_shadow()


def test_the_servers_own_ticker_finishes_a_rollout(
    tmp_path: Path, model_dirs: tuple[Path, Path]
) -> None:
    settings = isolated_settings(tmp_path, rollout_interval_s=0.05)
    ctx = open_context(settings)
    try:
        ProjectService(ctx).create(PROJECT)
        register(ctx, model_dirs[0])
        register(ctx, model_dirs[1])
    finally:
        ctx.db.close()
    app = create_app(settings)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as api:
        _deploy(api, "auto")
        body = {"version": 2, "strategy": "linear", "linear_steps": 2, "bake_s": 0}
        assert api.put(f"{BASE}/auto", json=body).status_code == 200
        deadline = time.monotonic() + 60
        while api.get(f"{BASE}/auto/rollout").json()["status"] == "in_progress":
            assert time.monotonic() < deadline, "the server never ticked the rollout"
            time.sleep(0.05)
        assert api.get(f"{BASE}/auto/rollout").json()["status"] == "succeeded"
        events = api.get(f"{API}/audit/events", params={"limit": 1000}).json()
        last = [e for e in events if e["action"] == "endpoint.rollout_succeeded"]
        assert len(last) == 1 and any(r.startswith("rollout:") for r in last[0]["roles"])
    app.state.serving.close()
