"""Migration 0026: the unread index on lineage_nodes.project_id goes; the downgrade brings it
back; the nodes stay."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.store.helpers import migrate

_INDEX = "ix_lineage_nodes_project_id"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("pg_url"))


def _indexes(engine: object) -> set[str]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return {i["name"] for i in inspect(conn).get_indexes("lineage_nodes")}


def test_upgrade_drops_the_project_index_and_downgrade_restores_it(url: str) -> None:
    migrate(url, "0025")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO lineage_nodes (id, project_id, kind, ref, name, deleted, created_at) "
                "VALUES (:id, :p, 'run', :ref, 'e/run-1', false, '2026-12-01 10:00:00+00:00')"
            ),
            {"id": "n" * 32, "p": "p" * 32, "ref": "r" * 32},
        )
    assert _INDEX in _indexes(engine)

    migrate(url, "0026")
    assert _INDEX not in _indexes(engine)
    assert "uq_lineage_nodes_kind_ref" in {
        u["name"] for u in inspect(engine).get_unique_constraints("lineage_nodes")
    }

    migrate(url, "0025", down=True)
    assert _INDEX in _indexes(engine)
    migrate(url, "head")
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT project_id, ref FROM lineage_nodes")).all()
    engine.dispose()
    assert [tuple(r) for r in kept] == [("p" * 32, "r" * 32)]
