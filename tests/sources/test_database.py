"""Database sources against the real PostgreSQL and MariaDB servers: full and incremental
extraction (id and timestamp watermarks, a table and a query), exactly once across a crash
between read and commit, lineage to the source, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from civicml.core import FrozenClock
from civicml.core.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
)
from civicml.core.identity import Principal
from civicml.data.service import DatasetService
from civicml.governance.lineage import LineageService
from civicml.sources import SourceCreate, SourceService
from civicml.sources.schemas import RunStatus
from civicml.store import Context
from tests.sources.helpers import MARIADB, PG, PROJECT, crash_run, maria, need, pg, unique


@pytest.fixture
def pg_table() -> str:
    need("postgres")
    name = unique("src")
    pg(
        f"CREATE TABLE {name} (id serial PRIMARY KEY, who text, amount numeric(10,2), "
        "updated_at timestamptz NOT NULL DEFAULT now(), extra jsonb)"
    )
    pg(
        f"INSERT INTO {name} (who, amount, extra) SELECT 'r' || g, g * 1.25, "
        f"'{{\"k\": 1}}'::jsonb FROM generate_series(1, 2500) g"
    )
    yield name
    pg(f"DROP TABLE IF EXISTS {name}")


def _ids(ctx: Context, dataset: str) -> list[int]:
    svc = DatasetService(ctx)
    out: list[int] = []
    for version in svc.list_versions(PROJECT, dataset):
        out += svc.read(version, columns=["id"]).column("id").to_pylist()
    return out


def test_incremental_by_id_takes_only_what_is_new(sctx: Context, pg_table: str) -> None:
    svc = SourceService(sctx)
    source = svc.create(
        PROJECT,
        SourceCreate(
            name="residents",
            kind="database",
            url=PG,
            database={"table": pg_table, "watermark": "id", "chunk_rows": 1000},
        ),
    )
    assert source.target == PG and source.position == {}
    first = svc.run(PROJECT, "residents")
    assert first.status is RunStatus.SUCCEEDED, first.error
    assert (first.rows, first.versions) == (2500, [1])
    assert first.position_after == {"watermark": 2500, "type": "int"}
    assert svc.run(PROJECT, "residents").status is RunStatus.EMPTY
    pg(f"INSERT INTO {pg_table} (who, amount) SELECT 'n' || g, g FROM generate_series(1, 40) g")
    assert svc.status(PROJECT, "residents").lag == 40
    second = svc.run(PROJECT, "residents")
    assert (second.rows, second.versions) == (40, [2])
    assert sorted(_ids(sctx, "residents")) == list(range(1, 2541))
    version = DatasetService(sctx).get_version(PROJECT, "residents", 1)
    types = {c.name: c.type for c in version.columns}
    assert types == {
        "id": "int64",
        "who": "string",
        "amount": "double",
        "updated_at": "timestamp[us, tz=UTC]",
        "extra": "string",
    }
    status = svc.status(PROJECT, "residents")
    assert status.lag == 0 and status.rows_per_s and len(status.last_runs) == 3


def test_lineage_shows_the_source_without_credentials(sctx: Context, pg_table: str) -> None:
    svc = SourceService(sctx)
    svc.create(
        PROJECT,
        SourceCreate(
            name="q",
            kind="database",
            url=PG,
            database={
                "query": f"SELECT id, who FROM {pg_table} WHERE id <= 100",
                "watermark": "id",
            },
        ),
    )
    run = svc.run(PROJECT, "q")
    assert run.rows == 100, run.error
    version = DatasetService(sctx).get_version(PROJECT, "q", 1)
    graph = LineageService(sctx).query("dataset_version", version.id, direction="upstream")
    kinds = {n.kind: n for n in graph.nodes}
    assert kinds["source"].properties["target"] == PG
    assert len(kinds["source"].properties["query_sha256"]) == 64
    assert kinds["source_batch"].properties["to"] == {"watermark": 100, "type": "int"}
    assert kinds["source_batch"].properties["from"] == {}


def test_full_extraction_and_identical_content(sctx: Context, pg_table: str) -> None:
    svc = SourceService(sctx)
    svc.create(
        PROJECT, SourceCreate(name="all", kind="database", url=PG, database={"table": pg_table})
    )
    assert svc.run(PROJECT, "all").versions == [1]
    again = svc.run(PROJECT, "all")  # same rows: the same version, no copy
    assert again.versions == [1] and again.rows == 2500


def test_crash_between_read_and_commit_loses_and_repeats_nothing(
    sctx: Context, pg_table: str, clock: FrozenClock
) -> None:
    svc = SourceService(sctx)
    svc.create(
        PROJECT,
        SourceCreate(
            name="crashy", kind="database", url=PG, database={"table": pg_table, "watermark": "id"}
        ),
    )
    crash_run(sctx.settings.home, PROJECT, "crashy", "commit", clock.now().isoformat(), {})
    assert svc.get(PROJECT, "crashy").position == {}  # nothing committed
    with pytest.raises(ConflictError, match="running already"):
        svc.run(PROJECT, "crashy")  # the dead run's lease still holds it
    clock.advance(seconds=sctx.settings.sources_lease_s + 1)
    run = svc.run(PROJECT, "crashy")
    assert (run.rows, run.versions) == (2500, [1]), run.error
    assert sorted(_ids(sctx, "crashy")) == list(range(1, 2501))
    runs = svc.runs(PROJECT, "crashy")
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED, RunStatus.FAILED]


def test_mariadb_incremental_by_timestamp(sctx: Context) -> None:
    need("mariadb")
    name = unique("src")
    maria(
        f"CREATE TABLE {name} (id INT PRIMARY KEY, who VARCHAR(32), changed DATETIME(6) NOT NULL)"
    )
    try:
        maria(
            f"INSERT INTO {name} VALUES (1, 'a', '2026-01-01 10:00:00'), "
            "(2, 'b', '2026-01-01 11:00:00')"
        )
        svc = SourceService(sctx)
        svc.create(
            PROJECT,
            SourceCreate(
                name="maria",
                kind="database",
                url=MARIADB,
                database={"table": name, "watermark": "changed"},
            ),
        )
        first = svc.run(PROJECT, "maria")
        assert first.rows == 2, first.error
        assert first.position_after == {"watermark": "2026-01-01T11:00:00", "type": "datetime"}
        maria(f"UPDATE {name} SET who = 'a2', changed = '2026-01-02 09:00:00' WHERE id = 1")
        second = svc.run(PROJECT, "maria")
        assert (second.rows, second.versions) == (1, [2])
        latest = DatasetService(sctx).get_version(PROJECT, "maria", 2)
        assert DatasetService(sctx).read(latest).to_pylist()[0]["who"] == "a2"
    finally:
        maria(f"DROP TABLE IF EXISTS {name}")


def test_named_connection_keeps_credentials_out(sctx: Context, tmp_path: Path) -> None:
    import sqlite3

    db = sctx.settings.home / "files.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 11)])
    svc = SourceService(sctx)
    source = svc.create(
        PROJECT,
        SourceCreate(
            name="files",
            kind="database",
            connection="files",
            database={"table": "t", "watermark": "id"},
        ),
    )
    assert source.target == "connection:files"
    assert svc.run(PROJECT, "files").rows == 10
    events = json.dumps([e.model_dump(mode="json") for e in _events(sctx)])
    assert "files.db" not in events


def _events(ctx: Context) -> list:  # type: ignore[type-arg]
    from civicml.governance.audit import AuditTrail

    return list(AuditTrail(ctx).list(project=PROJECT, limit=1000))


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"url": "not a url"}, InvalidInputError, "not a database URL"),
        ({"url": "sqlite:////etc/passwd"}, InvalidInputError, "not supported for an inline"),
        ({"url": "postgresql://etl:s3cret@db/x"}, InvalidInputError, "may not carry a password"),
        ({"url": "postgresql://etl@db/x?password=s3"}, InvalidInputError, "may not carry"),
        ({"url": None, "connection": "nope"}, ConfigurationError, "No source connection"),
        ({"url": None}, InvalidInputError, "url or a connection"),
        ({"database": None}, InvalidInputError, "takes 'database'"),
        ({"name": "bad name!"}, InvalidInputError, "Source name"),
    ],
)
def test_bad_sources_are_refused(
    sctx: Context,
    changes: dict,
    error: type[Exception],
    match: str,  # type: ignore[type-arg]
) -> None:
    body = {"name": "x", "kind": "database", "url": PG, "database": {"table": "t"}, **changes}
    with pytest.raises(error, match=match):
        SourceService(sctx).create(PROJECT, SourceCreate.model_validate(body))


@pytest.mark.parametrize(
    "database",
    [
        {"query": "DELETE FROM t"},
        {"query": "SELECT 1; DROP TABLE t"},
        {"query": "SELECT " + "x" * 20_001},
        {"table": "t; DROP TABLE t"},
        {"table": "t", "query": "SELECT 1"},
    ],
)
def test_bad_extractions_are_refused(database: dict) -> None:  # type: ignore[type-arg]
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SourceCreate.model_validate(
            {"name": "x", "kind": "database", "url": PG, "database": database}
        )


def test_a_missing_table_fails_the_run_with_the_reason(sctx: Context) -> None:
    need("postgres")
    svc = SourceService(sctx)
    svc.create(
        PROJECT,
        SourceCreate(
            name="gone", kind="database", url=PG, database={"table": "no_such_table_here"}
        ),
    )
    run = svc.run(PROJECT, "gone")
    assert run.status is RunStatus.FAILED and "does not exist" in (run.error or "")


def test_a_viewer_is_refused(sctx: Context) -> None:
    from civicml.governance.projects import ProjectService

    ProjectService(sctx).grant(PROJECT, "val", "viewer")
    viewer = sctx.as_principal(Principal(user="val", roles=frozenset()))
    with pytest.raises(PermissionDeniedError):
        SourceService(viewer).create(
            PROJECT, SourceCreate(name="x", kind="database", url=PG, database={"table": "t"})
        )
    assert SourceService(viewer).list(PROJECT) == []


def test_postgresql_types_nulls_and_percent_signs(sctx: Context) -> None:
    need("postgres")
    name = unique("src")
    pg(
        f"CREATE TABLE {name} (id int PRIMARY KEY, who text, ok boolean, day date, "
        "at timestamp, tags text[], note text)"
    )
    pg(
        f"INSERT INTO {name} VALUES (1, 'r1', true, '2026-01-02', '2026-01-02 03:04:05', "
        "'{a,b}', ''), (2, 'x, \"quoted\"\nline', false, NULL, NULL, NULL, NULL)"
    )
    try:
        svc = SourceService(sctx)
        query = f"SELECT * FROM {name} WHERE who LIKE 'r%' OR who LIKE 'x%'"
        svc.create(
            PROJECT,
            SourceCreate(
                name="types", kind="database", url=PG, database={"query": query, "watermark": "id"}
            ),
        )
        run = svc.run(PROJECT, "types")
        assert run.rows == 2, run.error
        version = DatasetService(sctx).get_version(PROJECT, "types")
        rows = DatasetService(sctx).read(version).to_pylist()
        assert rows[0]["ok"] is True and rows[0]["note"] == "" and rows[0]["tags"] == "{a,b}"
        assert str(rows[0]["day"]) == "2026-01-02" and str(rows[0]["at"]) == "2026-01-02 03:04:05"
        assert rows[1]["who"] == 'x, "quoted"\nline' and rows[1]["note"] is None
        assert rows[1]["ok"] is False and rows[1]["day"] is None
        pg(f"INSERT INTO {name} (id, who) VALUES (3, 'r3')")
        assert svc.run(PROJECT, "types").rows == 1  # the % survives binding the watermark
    finally:
        pg(f"DROP TABLE IF EXISTS {name}")


def test_on_a_postgresql_metadata_store(pg_ctx: Context, pg_table: str) -> None:
    """The position's compare-and-set and the run lease on PostgreSQL as on SQLite."""
    from civicml.governance.projects import ProjectService

    ProjectService(pg_ctx).create(PROJECT)
    svc = SourceService(pg_ctx)
    svc.create(
        PROJECT,
        SourceCreate(
            name="pgmeta", kind="database", url=PG, database={"table": pg_table, "watermark": "id"}
        ),
    )
    assert svc.run(PROJECT, "pgmeta").rows == 2500
    pg(f"INSERT INTO {pg_table} (who) VALUES ('one more')")
    again = svc.run(PROJECT, "pgmeta")
    assert (again.rows, again.versions) == (1, [2])
    assert svc.status(PROJECT, "pgmeta").lag == 0
