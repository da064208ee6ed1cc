"""A real server per test module for the data front-end tests, with the project created."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from civicml.server import create_app
from tests.data.helpers import PROJECT
from tests.server.helpers import API, isolated_settings, serve


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(tmp_path_factory.mktemp("data-server"))
    with serve(create_app(settings)) as base:
        with httpx.Client(base_url=base) as api:
            api.put(f"{API}/projects/{PROJECT}")
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client
