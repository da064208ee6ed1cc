"""Fixtures of the governance tests: a fast PostgreSQL context and a trail of real events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from civicml.core import FrozenClock, Principal, Settings
from civicml.store import Context, MetadataStore
from tests.conftest import PG_ADMIN_URL, make_context, service_available, skip_or_fail
from tests.governance.helpers import populate


@pytest.fixture(scope="session")
def _pg_database() -> Iterator[str]:
    """One migrated PostgreSQL database for the governance tests, dropped at the end.

    Creating, migrating and dropping a database per test costs about 3 s; these tests instead
    share one and empty every table before each test (see ``pg_ctx`` below).
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
        MetadataStore(url).close()  # migrate once
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_ctx(
    _pg_database: str, settings: Settings, principal: Principal, clock: FrozenClock
) -> Iterator[Context]:
    """Overrides the root ``pg_ctx``: the shared database, emptied, so each test starts fresh."""
    store = MetadataStore(_pg_database)
    with store.engine.begin() as conn:
        tables = conn.execute(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ).scalars()
        conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
    store.close()
    context = make_context(Settings.load(home=settings.home, db_url=_pg_database), principal, clock)
    yield context
    context.db.close()


@pytest.fixture
def events(any_ctx: Context) -> int:
    """Ten events on SQLite and on PostgreSQL (the count is returned)."""
    return populate(any_ctx)
