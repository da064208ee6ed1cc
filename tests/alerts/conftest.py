"""A project on SQLite (or PostgreSQL) with alert settings, a frozen clock and a saved model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from civicml.core import FrozenClock, Settings
from civicml.governance.projects import ProjectService
from civicml.store import Context
from tests.alerts.helpers import PROJECT, alert_settings, context


@pytest.fixture
def asettings(tmp_path: Path) -> Settings:
    return alert_settings(tmp_path / "home")


@pytest.fixture
def actx(asettings: Settings, clock: FrozenClock) -> Iterator[Context]:
    ctx = context(asettings, clock)
    ProjectService(ctx).create(PROJECT)
    yield ctx
    ctx.db.close()


@pytest.fixture
def pg_actx(pg_url: str, asettings: Settings, clock: FrozenClock) -> Iterator[Context]:
    settings = alert_settings(asettings.home, db_url=pg_url)
    ctx = context(settings, clock)
    ProjectService(ctx).create(PROJECT)
    yield ctx
    ctx.db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_actx(request: pytest.FixtureRequest) -> Context:
    """The same test on SQLite and on the real PostgreSQL."""
    return request.getfixturevalue("actx" if request.param == "sqlite" else "pg_actx")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.serving.helpers import train

    directory = tmp_path_factory.mktemp("alert-model") / "v1"
    train(directory)
    return directory
