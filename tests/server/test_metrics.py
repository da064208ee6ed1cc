"""GET /metrics (Prometheus): the exporter's files and text, and the route through the real
server on loopback in each ``server_metrics`` mode. Several worker processes:
tests/server/test_workers.py."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import TokenCreate
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from civicml.server.metrics import MetricsExporter, new_metrics_dir
from civicml.serving.runtime import ModelHost
from civicml.serving.service import EndpointService
from civicml.serving.stats import LATENCY_BOUNDS_MS, VariantCounters, VariantSample
from tests.server.helpers import API, assert_error, isolated_settings, serve
from tests.server.test_auth import bearer, mint
from tests.serving.helpers import MODEL, PROJECT, records, register, train

INVOKE = f"{API}/projects/{PROJECT}/endpoints/web/invocations"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def total(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (sample, found), value in samples(text).items()
        if sample == name and set(labels.items()) <= set(found)
    )


def _counted(latencies_ns: list[int], names: tuple[str, str, str]) -> VariantSample:
    counters = VariantCounters("e1", names)
    for latency in latencies_ns:
        counters.answered(latency)
    counters.errors_4xx, counters.errors_5xx = 2, 1
    return counters.sample()


def test_the_exporter_writes_counters_and_a_histogram_prometheus_reads(tmp_path: Path) -> None:
    latencies = [50_000, 200_000, 2_000_000, 2_000_000, 40_000_000, 10**12]  # 0.05 ms … 1000 s
    sample = _counted(latencies, ("benefits", "web", "v1"))
    exporter = MetricsExporter(tmp_path, worker=0, samples=lambda: [sample])
    text = exporter.render().decode()
    exporter.close()
    v1 = {"project": "benefits", "endpoint": "web", "variant": "v1"}
    assert total(text, "civicml_endpoint_invocations_total", **v1) == 6
    assert total(text, "civicml_endpoint_errors_total", **v1, status="4xx") == 2
    assert total(text, "civicml_endpoint_errors_total", **v1, status="5xx") == 1
    histogram = "civicml_endpoint_latency_seconds"
    assert total(text, f"{histogram}_count", **v1) == 6
    assert math.isclose(total(text, f"{histogram}_sum", **v1), sum(latencies) / 1e9)
    buckets = {
        float(labels["le"]): value
        for (name, pairs), value in samples(text).items()
        if name == f"{histogram}_bucket"
        for labels in [dict(pairs)]
    }
    # cumulative, √10 apart from 0.1 ms to 100 s, and +Inf holds the 1000 s answer
    assert buckets[LATENCY_BOUNDS_MS[10] / 1000] == 1  # ≤ 0.1 ms
    assert buckets[LATENCY_BOUNDS_MS[20] / 1000] == 2  # ≤ 1 ms
    assert buckets[LATENCY_BOUNDS_MS[30] / 1000] == 4  # ≤ 10 ms
    assert buckets[LATENCY_BOUNDS_MS[70] / 1000] == 5  # ≤ 100 s
    assert buckets[math.inf] == 6
    assert len(buckets) == 14
    assert total(text, "civicml_worker_info", worker="0") == 1
    assert total(text, "civicml_worker_invocations", worker="0") == 6
    assert total(text, "process_resident_memory_bytes") > 0


def test_a_name_deployed_again_adds_up_and_a_fresh_directory_removes_dead_servers(
    tmp_path: Path,
) -> None:
    names = ("benefits", "web", "v1")
    first, second = _counted([1000] * 3, names), _counted([1000] * 4, names)
    exporter = MetricsExporter(tmp_path, worker=0, samples=lambda: [first, second])
    text = exporter.render().decode()
    exporter.close()
    assert total(text, "civicml_endpoint_invocations_total", variant="v1") == 7
    assert total(text, "civicml_endpoint_errors_total", variant="v1", status="4xx") == 4

    made = new_metrics_dir()
    try:
        assert made.is_dir() and made.stat().st_mode & 0o077 == 0  # private to its user
        stale = made.with_name("civicml-metrics-999999999-x")  # a pid no process has
        stale.mkdir()
        again = new_metrics_dir()
        assert not stale.exists() and made.is_dir()  # this process is alive: kept
        again.rmdir()
    finally:
        made.rmdir()


# Through the server -------------------------------------------------------------------------------
def _home(root: Path, **overrides: Any) -> Settings:
    """Settings whose home has project ``benefits`` with endpoint ``web`` (capture off)."""
    settings = isolated_settings(root, **overrides)
    ctx = open_context(settings)
    host = ModelHost(ctx)
    try:
        ProjectService(ctx).create(PROJECT)
        train(root / "model")
        register(ctx, root / "model")
        EndpointService(ctx, host).deploy(PROJECT, "web", MODEL, 1, capture=False)
    finally:
        host.close()
        ctx.db.close()
    return settings


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    root = tmp_path_factory.mktemp("metrics-token")
    settings = _home(
        root,
        auth="token",
        auth_max_failures=1_000_000,
        custom_roles={"scraper": ["metrics.read"]},
    )
    with serve(create_app(settings)) as url:
        yield url, settings


def test_metrics_count_every_invocation_by_variant_and_need_metrics_read(
    token_server: tuple[str, Settings],
) -> None:
    url, settings = token_server
    invoker = bearer(mint(settings, TokenCreate(name="app")).secret)  # admin
    scraper = mint(
        settings,
        TokenCreate(name="prometheus"),
        principal=Principal(user="prometheus", roles=frozenset({"scraper"})),
    ).secret
    viewer = mint(
        settings,
        TokenCreate(name="viewer"),
        principal=Principal(user="viewer", roles=frozenset({"ml-engineer"})),
    ).secret
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(5):
            answered = http.post(INVOKE, json={"records": records(1)}, headers=invoker)
            assert answered.status_code == 200, answered.text
        bad = http.post(INVOKE, json={"records": [{"age": 3}]}, headers=invoker)
        assert bad.status_code == 422, bad.text

        assert_error(http.get("/metrics"), 401, "AuthenticationError")
        refused = assert_error(
            http.get("/metrics", headers=bearer(viewer)), 403, "PermissionDeniedError"
        )
        assert "metrics.read" in refused["message"]
        scraped = http.get("/metrics", headers=bearer(scraper))
    assert scraped.status_code == 200, scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    v1 = {"project": PROJECT, "endpoint": "web", "variant": "v1"}
    assert total(text, "civicml_endpoint_invocations_total", **v1) == 5
    assert total(text, "civicml_endpoint_errors_total", **v1, status="4xx") == 1
    assert total(text, "civicml_endpoint_errors_total", **v1, status="5xx") == 0
    assert total(text, "civicml_endpoint_latency_seconds_count", **v1) == 5
    assert total(text, "civicml_worker_info", worker="0") == 1
    assert str(settings.home) not in text and "metrics-" not in text  # no server paths


@pytest.mark.parametrize("mode", ["loopback", "off"])
def test_loopback_mode_answers_without_a_token_and_off_serves_nothing(
    tmp_path: Path, mode: str
) -> None:
    settings = _home(tmp_path, auth="token", server_metrics=mode)
    admin = bearer(mint(settings, TokenCreate(name="admin")).secret)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        scraped = http.get("/metrics")
        forwarded = http.get("/metrics", headers={"x-forwarded-for": "203.0.113.9"})
        as_admin = http.get("/metrics", headers=admin)
        paths = http.get("/openapi.json").json()["paths"]
    if mode == "off":
        assert scraped.status_code == 401  # authentication comes first, as for any path
        assert as_admin.status_code == 404
        assert "/metrics" not in paths
        return
    assert as_admin.status_code == 200
    assert scraped.status_code == 200, scraped.text
    assert total(scraped.text, "civicml_worker_info", worker="0") == 1
    body = assert_error(forwarded, 403, "PermissionDeniedError")
    assert "loopback" in body["message"]
    assert scraped.headers["x-content-type-options"] == "nosniff"  # inside the guard
