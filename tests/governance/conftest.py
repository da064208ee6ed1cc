"""Fixtures of the governance tests: a fast PostgreSQL context and a trail of real events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import MetaData, insert, select, text

from civicml.core import FrozenClock, Principal, Settings
from civicml.store import Context, MetadataStore
from tests.conftest import PG_ADMIN_URL, make_context, service_available, skip_or_fail
from tests.governance.helpers import populate


@dataclass(frozen=True)
class _SharedDatabase:
    url: str
    seed: dict[str, list[dict[str, Any]]]  # rows the migrations wrote, restored before each test


@pytest.fixture(scope="session")
def _pg_database() -> Iterator[_SharedDatabase]:
    """One migrated PostgreSQL database for the governance tests, dropped at the end.

    Creating, migrating and dropping a database per test costs about 3 s; these tests instead
    share one and bring it back to its just-migrated state before each test (see ``pg_ctx``).
    """
    if not service_available("127.0.0.1", 5432):
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432")
    try:
        import psycopg
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install 'civicml[postgres]')")
    name = f"civicml_test_gov_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        store = MetadataStore(url)  # migrates
        tables = MetaData()
        tables.reflect(store.engine)
        with store.engine.connect() as conn:
            seed = {
                table.name: [dict(row._mapping) for row in conn.execute(select(table))]
                for table in tables.sorted_tables
                if table.name != "alembic_version"
            }
        store.close()
        yield _SharedDatabase(url, {table: rows for table, rows in seed.items() if rows})
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_ctx(
    _pg_database: _SharedDatabase, settings: Settings, principal: Principal, clock: FrozenClock
) -> Iterator[Context]:
    """Overrides the root ``pg_ctx`` (a new database per test) with the shared database, emptied
    and re-seeded with what the migrations wrote, so each test still starts from a fresh schema."""
    store = MetadataStore(_pg_database.url)
    tables = MetaData()
    tables.reflect(store.engine)
    with store.engine.begin() as conn:
        names = [t.name for t in tables.sorted_tables if t.name != "alembic_version"]
        quoted = ", ".join(conn.dialect.identifier_preparer.quote(n) for n in names)
        conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        for name, rows in _pg_database.seed.items():
            conn.execute(insert(tables.tables[name]), rows)
    store.close()
    pg_settings = Settings.load(home=settings.home, db_url=_pg_database.url)
    context = make_context(pg_settings, principal, clock)
    yield context
    context.db.close()


@pytest.fixture
def events(any_ctx: Context) -> int:
    """Ten events on SQLite and on PostgreSQL (the count is returned)."""
    return populate(any_ctx)
