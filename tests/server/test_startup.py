"""Start-up: a server freezes the objects it starts with, so full garbage collections (a pause
every request in flight waits out) no longer walk the modules, the app and the stores."""

from __future__ import annotations

import gc
from typing import Any

import httpx
import pytest

from civicml.server import app as app_module
from civicml.server import create_app
from tests.server.helpers import API, isolated_settings, serve


def test_a_started_server_has_frozen_its_start_up_objects(tmp_path: Any) -> None:
    settings = isolated_settings(tmp_path)
    gc.unfreeze()
    try:
        with serve(create_app(settings, freeze_gc=True)) as url:
            assert httpx.get(f"{url}{API}/health", timeout=30).status_code == 200
            assert gc.get_freeze_count() > 10_000  # modules, app, stores
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


def test_apps_made_for_tests_do_not_freeze(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(app_module.gc, "freeze", lambda: calls.append("freeze"))
    with serve(create_app(isolated_settings(tmp_path))) as url:
        assert httpx.get(f"{url}{API}/health", timeout=30).status_code == 200
    assert calls == []


def test_civicml_server_asks_for_the_freeze(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_create_app(settings: Any, **kwargs: Any) -> Any:
        asked.update(kwargs)
        raise Stop

    monkeypatch.setattr(app_module, "create_app", fake_create_app)
    with pytest.raises(Stop):
        app_module.serve(isolated_settings(tmp_path))
    assert asked == {"freeze_gc": True}
