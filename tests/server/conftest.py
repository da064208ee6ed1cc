"""An httpx client on the live server for the REST API tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def api(live_server: str) -> Iterator[httpx.Client]:
    """httpx on the real app under uvicorn (see ``live_server`` in tests/conftest.py)."""
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client
