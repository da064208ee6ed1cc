"""Migration 0025: dataset versions gain a content hash (NULL for the rows already there) and its
index; the downgrade removes both and keeps the rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, inspect, text

from tests.store.helpers import migrate

_INDEX = "ix_dataset_versions_dataset_id_content_hash"


def _add_version(conn: Connection) -> None:
    now = "2026-12-01 10:00:00+00:00"
    conn.execute(
        text(
            "INSERT INTO projects (id, name, description, created_at, created_by) "
            "VALUES (:id, 'elig', '', :now, 'alice')"
        ),
        {"id": "p" * 32, "now": now},
    )
    conn.execute(
        text(
            "INSERT INTO datasets (id, project_id, name, description, next_version, created_at, "
            "created_by) VALUES (:id, :p, 'applications', '', 2, :now, 'alice')"
        ),
        {"id": "d" * 32, "p": "p" * 32, "now": now},
    )
    conn.execute(
        text(
            "INSERT INTO dataset_versions (id, dataset_id, version, digest, size, source_format, "
            "row_count, schema, profile, description, created_at, created_by) VALUES "
            "(:id, :d, 1, :digest, 10, 'csv', 3, '[]', '[]', '', :now, 'alice')"
        ),
        {"id": "v" * 32, "d": "d" * 32, "digest": "a" * 64, "now": now},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_upgrade_adds_an_empty_content_hash_and_downgrade_removes_it(url: str) -> None:
    migrate(url, "0024")
    engine = create_engine(url)
    with engine.begin() as conn:
        _add_version(conn)

    migrate(url, "0025")
    with engine.begin() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("dataset_versions")}
        indexes = {i["name"] for i in inspect(conn).get_indexes("dataset_versions")}
        before = conn.execute(text("SELECT digest, content_hash FROM dataset_versions")).all()
        conn.execute(text("UPDATE dataset_versions SET content_hash = :h"), {"h": "b" * 64})
    migrate(url, "0024", down=True)
    with engine.connect() as conn:
        after = {c["name"] for c in inspect(conn).get_columns("dataset_versions")}
        after_indexes = {i["name"] for i in inspect(conn).get_indexes("dataset_versions")}
        kept = conn.execute(text("SELECT digest FROM dataset_versions")).scalars().all()
    migrate(url, "head")  # and up again over a row that had a hash
    with engine.connect() as conn:
        again = conn.execute(text("SELECT content_hash FROM dataset_versions")).scalars().all()
    engine.dispose()

    assert "content_hash" in columns and _INDEX in indexes
    assert [tuple(r) for r in before] == [("a" * 64, None)]
    assert "content_hash" not in after and _INDEX not in after_indexes
    assert kept == ["a" * 64]
    assert again == [None]
