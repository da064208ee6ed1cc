"""Liveness and readiness through the real server on loopback (no token needed, nothing
internal in the answers), and the readiness checks on their own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from civicml.core.errors import ServiceUnavailableError
from civicml.server import create_app
from civicml.server.routers.health import readiness
from tests.server.helpers import API, assert_error, isolated_settings, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    settings = isolated_settings(tmp_path_factory.mktemp("health"), auth="token")
    with serve(create_app(settings)) as url:
        yield url, settings.artifacts_root


def test_live_and_ready_answer_without_a_token(server: tuple[str, Path]) -> None:
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        live = http.get(f"{API}/health/live")
        ready = http.get(f"{API}/health/ready")
        health = http.get(f"{API}/health")
        other = http.get(f"{API}/projects")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "artifacts": "ok"}}
    assert health.status_code == 200 and health.json()["status"] == "ok"  # as before
    assert other.status_code == 401  # everything else still needs a token


def test_ready_is_503_naming_the_store_while_it_is_unreachable(server: tuple[str, Path]) -> None:
    url, root = server
    moved = root.with_name("artifacts-away")
    root.rename(moved)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            refused = http.get(f"{API}/health/ready")
            live = http.get(f"{API}/health/live")
    finally:
        moved.rename(root)
    body = assert_error(refused, 503, "ServiceUnavailableError", "the artifact store")
    assert refused.headers["retry-after"] == "5"
    assert body["details"] == [
        {"check": "database", "status": "ok"},
        {"check": "artifacts", "status": "failing"},
    ]
    assert str(root) not in refused.text and "artifacts-away" not in refused.text
    assert live.status_code == 200  # alive all the same: a restart would not help
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get(f"{API}/health/ready").status_code == 200


class _Down:
    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        raise ServiceUnavailableError("database unreachable")
        yield  # pragma: no cover


class _Unreachable:
    root = Path(__file__).parent

    def exists(self, digest: str) -> bool:
        raise ConnectionError("no route to the bucket")


def test_readiness_reports_each_check_and_swallows_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checks = readiness(SimpleNamespace(db=_Down(), artifacts=_Unreachable()))  # type: ignore[arg-type]
    assert checks == {"database": "failing", "artifacts": "failing"}
    logged = caplog.text
    assert "ServiceUnavailableError" in logged and "ConnectionError" in logged
    assert "no route to the bucket" not in logged  # the kind only, never the text
