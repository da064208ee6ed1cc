from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from civicml.core import ConfigurationError
from civicml.store import MetadataStore
from civicml.store.db import head_revision


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

    import civicml.data._tables
    import civicml.evaluation._tables
    import civicml.governance._tables
    import civicml.monitoring._tables
    import civicml.oversight._tables
    import civicml.registry._tables
    import civicml.serving._tables
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
