"""One real server per test module, and an httpx client on it.

Starting a server costs more than most API tests, so each module shares one; tests name their
projects uniquely (``project`` fixture) and compare before/after rather than assume emptiness.
Tests that damage the store use the per-test ``live_server`` from tests/conftest.py instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from civicml.server import create_app
from tests.server.helpers import API, Server, isolated_settings, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real app under uvicorn in a thread, on its own home, for the whole module."""
    settings = isolated_settings(tmp_path_factory.mktemp("server"))
    with serve(create_app(settings)) as url:
        yield Server(url, settings)


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def project(api: httpx.Client) -> str:
    """A new, empty project with a unique name."""
    name = f"proj-{uuid.uuid4().hex[:10]}"
    assert api.post(f"{API}/projects", json={"name": name}).status_code == 201
    return name
