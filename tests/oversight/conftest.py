"""A project where 'tara' trained and registered a model version, embedded; 'rui' reviews and
'rosa' is a risk officer (the only role the test policy lets override a failed gate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import civicml as cm
from civicml.data.samples import benefit_applications
from tests.oversight.helpers import CUSTOM_ROLES, MODEL, PROJECT, ROLES, Scene


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """The scene on the embedded SQLite database."""
    yield from _scene(tmp_path, monkeypatch)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_scene(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Scene]:
    """The scene on SQLite and on the real PostgreSQL (a fresh database)."""
    if request.param == "postgresql":
        monkeypatch.setenv("CIVICML_DB_URL", request.getfixturevalue("pg_url"))
    yield from _scene(tmp_path, monkeypatch)


def _scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    monkeypatch.setenv("CIVICML_ROLES", json.dumps(ROLES))
    monkeypatch.setenv("CIVICML_CUSTOM_ROLES", json.dumps(CUSTOM_ROLES))
    home = tmp_path / "home"
    clients = {u: cm.connect(home=home, user=u) for u in ("tara", "rui", "rosa")}
    proj = clients["tara"].project(PROJECT)
    data = proj.datasets.ingest("applications", benefit_applications(600, seed=3))
    with proj.start_run() as run:
        trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
    mv = proj.models.register(MODEL, trained, run=run)
    yield Scene(home, clients["tara"], clients["rui"], clients["rosa"], mv, data)
    for client in clients.values():
        client.close()
