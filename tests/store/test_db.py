from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from civicml.core import ConfigurationError
from civicml.core.errors import InsufficientStorageError, ServiceUnavailableError
from civicml.store import MetadataStore
from civicml.store.db import _enter_wal, head_revision
from civicml.store.faults import database_fault


def test_head_revision_matches_the_migration_scripts() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from civicml.store import db

    cfg = Config()
    cfg.set_main_option("script_location", str(db._MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == head_revision()


# SQLite cannot reflect the lower(name) indexes of migration 0007, so there alembic skips them
# (with these warnings); the PostgreSQL run compares them too.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_match_the_table_definitions(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import civicml.alerts._tables
    import civicml.catalog._tables
    import civicml.costs._tables
    import civicml.data._tables
    import civicml.evaluation._tables
    import civicml.governance._tables
    import civicml.monitoring._tables
    import civicml.monitors._tables
    import civicml.oversight._tables
    import civicml.pipelines._tables
    import civicml.privacy._tables
    import civicml.registry._tables
    import civicml.serving._tables
    import civicml.sources._tables
    import civicml.store._tables
    import civicml.tracking._tables  # noqa: F401
    from civicml.store.schema import metadata

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = MetadataStore(url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diff == []


def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'p.db'}")
    with store.read() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


class _BusyCursor:
    """A cursor whose first journal-mode queries fail as SQLite fails them while another
    process closes (checkpoints) or recovers the database: SQLITE_BUSY, no busy handler."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.statements: list[str] = []

    def execute(self, sql: str) -> _BusyCursor:
        self.statements.append(sql)
        if self.busy:
            self.busy -= 1
            raise sqlite3.OperationalError("database is locked")
        return self

    def fetchone(self) -> tuple[str]:
        return ("delete",)


def test_entering_wal_retries_a_busy_database_until_the_busy_timeout() -> None:
    """CI saw two processes opening one database fail at ``PRAGMA journal_mode=WAL``."""
    cursor = _BusyCursor(busy=3)
    _enter_wal(cursor, busy_timeout_s=5)
    assert cursor.statements[-1] == "PRAGMA journal_mode=WAL"

    stuck = _BusyCursor(busy=10_000)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _enter_wal(stuck, busy_timeout_s=0.2)


def test_concurrent_writers_do_not_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    stores = [MetadataStore(url) for _ in range(2)]  # two engines: like two processes
    with stores[0].write() as uow:
        uow.conn.execute(text("CREATE TABLE counter (n INTEGER)"))
        uow.conn.execute(text("INSERT INTO counter VALUES (0)"))
    errors: list[BaseException] = []

    def bump(store: MetadataStore) -> None:
        try:
            for _ in range(50):
                with store.write() as uow:  # read-modify-write: needs BEGIN IMMEDIATE
                    n = uow.conn.execute(text("SELECT n FROM counter")).scalar()
                    uow.conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=bump, args=(stores[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with stores[0].read() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar() == 200


def test_after_commit_runs_only_on_commit(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'a.db'}")
    ran: list[str] = []
    with store.write() as uow:
        uow.after_commit("k", lambda: ran.append("first"))
        uow.after_commit("k", lambda: ran.append("second"))
    assert ran == ["second"]
    with pytest.raises(RuntimeError), store.write() as uow:
        uow.after_commit("k", lambda: ran.append("rolled back"))
        raise RuntimeError("boom")
    assert ran == ["second"]


def test_a_write_that_need_not_be_durable_skips_the_sync_and_only_that_write(
    tmp_path: Path,
) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'l.db'}")
    with store.write(durable=False) as uow:
        assert uow.durable is False
        assert uow.conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        _insert_project(uow, "lazy")
    with store.write() as uow:  # the pooled connection is durable again
        assert uow.durable is True
        assert uow.conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        _insert_project(uow, "durable")
    with store.read() as conn:  # begun outside write(): it does not inherit NORMAL either
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    with pytest.raises(RuntimeError), store.write(durable=False) as uow:
        _insert_project(uow, "rolled-back")
        raise RuntimeError("boom")
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    assert _projects(store) == ["durable", "lazy"]
    store.close()


def test_a_postgresql_write_that_need_not_be_durable_commits_asynchronously(
    pg_url: str,
) -> None:
    store = MetadataStore(pg_url)
    with store.write(durable=False) as uow:
        assert uow.conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        _insert_project(uow, "lazy")
    with store.write() as uow:  # SET LOCAL: this transaction only
        assert uow.conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    assert "lazy" in _projects(store)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x/y",
        "not a url",
        "postgresql+psycopg://u@127.0.0.1:1/db",
        "postgresql+asyncpg://u@h/db",
    ],
)
def test_unsupported_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        MetadataStore(url)


def test_postgresql_migrates_and_writes(pg_url: str) -> None:
    store = MetadataStore(pg_url)
    assert store.current_revision() == head_revision()
    MetadataStore(pg_url)  # second open: already at head
    with store.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar() == 0
    store.close()


def _projects(store: MetadataStore) -> list[str]:
    with store.read() as conn:
        return [r[0] for r in conn.execute(text("SELECT name FROM projects ORDER BY name"))]


def _add_project(store: MetadataStore, name: str) -> None:
    with store.write() as uow:
        _insert_project(uow, name)


def _insert_project(uow: Any, name: str) -> None:
    uow.conn.execute(
        text(
            "INSERT INTO projects (id, name, description, created_at, created_by) "
            "VALUES (:id, :name, '', '2026-01-01', 'test')"
        ),
        {"id": uuid.uuid4().hex, "name": name},
    )


def test_a_lock_held_past_the_busy_timeout_is_a_503_then_writes_go_on(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = MetadataStore(f"sqlite:///{path}", busy_timeout_s=0.2)
    _add_project(store, "before")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ServiceUnavailableError, match="locked by another writer") as caught:
            _add_project(store, "during")
        assert caught.value.status == 503 and caught.value.retry_after == 2
        assert "INSERT" not in caught.value.message
        assert _projects(store) == ["before"]  # reads go on (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    _add_project(store, "after")
    assert _projects(store) == ["after", "before"]
    store.close()


def test_a_writer_queued_in_the_process_past_the_busy_timeout_is_a_503(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'q.db'}", busy_timeout_s=0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.write():
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30)
        with pytest.raises(ServiceUnavailableError, match="busy with other writes"):
            _add_project(store, "queued")
    finally:
        release.set()
        thread.join(30)
    _add_project(store, "queued")
    assert _projects(store) == ["queued"]
    store.close()


def test_a_full_database_is_a_507_and_keeps_what_it_holds(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'full.db'}")
    _add_project(store, "kept")
    with store.read() as conn:
        pages = int(conn.execute(text("PRAGMA page_count")).scalar_one())

    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn: Any, _record: Any) -> None:  # the disk is full at the current size
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    store.engine.dispose()  # reconnect with the cap
    with pytest.raises(InsufficientStorageError, match="out of space; nothing was changed"):
        with store.write() as uow:
            for i in range(2000):
                uow.conn.execute(
                    text(
                        "INSERT INTO projects (id, name, description, created_at, created_by) "
                        "VALUES (:id, :name, :d, '2026-01-01', 'test')"
                    ),
                    {"id": uuid.uuid4().hex, "name": f"p{i}", "d": "x" * 500},
                )
    assert _projects(store) == ["kept"]
    store.close()


def test_a_full_database_on_a_driver_cursor_is_a_507_too(tmp_path: Path) -> None:
    """Hot paths write through the DB-API cursor (UnitOfWork.driver_cursor): the driver's own
    error, unwrapped by SQLAlchemy, is the same 507 and leaves nothing half-written."""
    store = MetadataStore(f"sqlite:///{tmp_path / 'full.db'}")
    _add_project(store, "kept")
    with store.read() as conn:
        pages = int(conn.execute(text("PRAGMA page_count")).scalar_one())

    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    store.engine.dispose()
    with pytest.raises(InsufficientStorageError, match="out of space; nothing was changed"):
        with store.write() as uow:
            cursor, mark = uow.driver_cursor()
            for i in range(2000):
                cursor.execute(
                    "INSERT INTO projects (id, name, description, created_at, created_by) "
                    f"VALUES ({mark}, {mark}, {mark}, '2026-01-01', 'test')",
                    (uuid.uuid4().hex, f"p{i}", "x" * 500),
                )
    assert _projects(store) == ["kept"]
    store.close()


class _DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "message,sqlstate,expected",
    [
        ("database is locked", None, ServiceUnavailableError),
        ("database or disk is full", None, InsufficientStorageError),
        ("attempt to write a readonly database", None, InsufficientStorageError),
        ("could not serialize access due to concurrent update", "40001", ServiceUnavailableError),
        ("deadlock detected", "40P01", ServiceUnavailableError),
        ("canceling statement due to lock timeout", "55P03", ServiceUnavailableError),
        ("connection refused", "08006", ServiceUnavailableError),
        ("sorry, too many clients already", "53300", ServiceUnavailableError),
        ("could not extend file: No space left on device", "53100", InsufficientStorageError),
        ("no such table: x", None, None),
        (
            'duplicate key value violates unique constraint "p"\nDETAIL: Key (name)=(a)',
            "23505",
            None,
        ),
    ],
)
def test_database_faults_are_classified(
    message: str, sqlstate: str | None, expected: type[Exception] | None
) -> None:
    err = OperationalError("SELECT secret FROM t", {"v": "secret"}, _DriverError(message, sqlstate))

    fault = database_fault(err)

    if expected is None:
        assert fault is None
    else:
        assert type(fault) is expected
        assert fault is not None and "secret" not in fault.message and "SELECT" not in fault.message


def test_engines_hide_bound_parameters(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'h.db'}")
    with pytest.raises(Exception) as caught, store.read() as conn:
        conn.execute(text("SELECT * FROM no_such_table WHERE name = :v"), {"v": "secret-value"})

    assert "secret-value" not in str(caught.value)
    store.close()
