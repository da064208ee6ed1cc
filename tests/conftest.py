"""Shared fixtures: SQLite Context in tmp_path with a frozen clock; PostgreSQL when asked."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from civicml.core import FrozenClock, Principal, Settings
from civicml.store import Context, MetadataStore
from civicml.store.artifacts import artifact_store_for

PG_ADMIN_URL = os.environ.get(
    "CIVICML_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_SERVICES = os.environ.get("CIVICML_REQUIRE_SERVICES") == "1"


def service_available(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def skip_or_fail(reason: str) -> None:
    """Skip a test needing an absent service, unless CIVICML_REQUIRE_SERVICES=1 (then fail)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CIVICML_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's ~/.civicml, civicml.toml or CIVICML_* variables."""
    for key in list(os.environ):
        if key.startswith("CIVICML_") and key not in (
            "CIVICML_REQUIRE_SERVICES",
            "CIVICML_TEST_PG_URL",
        ):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CIVICML_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def principal() -> Principal:
    return Principal(user="alice", roles=frozenset({"admin"}))


def make_context(settings: Settings, principal: Principal, clock: FrozenClock) -> Context:
    return Context(
        db=MetadataStore(settings.database_url),
        artifacts=artifact_store_for(settings),
        principal=principal,
        settings=settings,
        clock=clock,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(home=tmp_path / "home")


@pytest.fixture
def ctx(settings: Settings, principal: Principal, clock: FrozenClock) -> Iterator[Context]:
    context = make_context(settings, principal, clock)
    yield context
    context.db.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    if not service_available("127.0.0.1", 5432):
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432")
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'civicml[postgres]')")
    name = f"civicml_test_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_ctx(
    pg_url: str, settings: Settings, principal: Principal, clock: FrozenClock
) -> Iterator[Context]:
    pg_settings = Settings.load(home=settings.home, db_url=pg_url)
    context = make_context(pg_settings, principal, clock)
    yield context
    context.db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ctx(request: pytest.FixtureRequest) -> Context:
    """The same test on SQLite and on the real PostgreSQL."""
    name = "ctx" if request.param == "sqlite" else "pg_ctx"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"civicml server at {url} did not become healthy in {timeout}s")


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn in a thread on a free loopback port; yields its base URL."""
    import threading

    import uvicorn

    from civicml.server import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    yield url
    server.should_exit = True
    thread.join(timeout=15)


@contextlib.contextmanager
def start_server(home: Path, log: Path) -> Iterator[str]:
    """``civicml server`` as a real subprocess on a free loopback port; yields its URL."""
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "CIVICML_HOME": str(home)}
    command = [
        sys.executable,
        "-m",
        "civicml.cli.main",
        "server",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``civicml server`` as a real subprocess on a free port; yields (URL, its CIVICML_HOME)."""
    home = tmp_path / "server-home"
    with start_server(home, tmp_path / "server.log") as url:
        yield url, home


@pytest.fixture(autouse=True)
def _fresh_cli_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI keeps its global options on one module-level object: start every test clean."""
    import dataclasses

    from civicml.cli import _common

    for option in dataclasses.fields(_common.State):
        monkeypatch.setattr(_common.STATE, option.name, option.default)
