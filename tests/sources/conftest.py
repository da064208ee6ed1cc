"""A project on SQLite with source settings and a frozen clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from civicml.core import FrozenClock, Principal, Settings
from civicml.governance.projects import ProjectService
from civicml.store import Context
from tests.conftest import make_context
from tests.sources.helpers import PROJECT, RABBIT


def source_settings(home: Path, **overrides: object) -> Settings:
    return Settings.load(
        home=home,
        source_connections={"rabbit": RABBIT, "files": f"sqlite:///{home}/files.db"},
        **overrides,
    )


@pytest.fixture
def ssettings(tmp_path: Path) -> Settings:
    return source_settings(tmp_path / "home")


@pytest.fixture
def sctx(ssettings: Settings, clock: FrozenClock) -> Iterator[Context]:
    ctx = make_context(ssettings, Principal(user="alice", roles=frozenset({"admin"})), clock)
    ProjectService(ctx).create(PROJECT)
    yield ctx
    ctx.db.close()
