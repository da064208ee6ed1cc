"""Migration 0007: names unique regardless of letter case, refused when existing rows clash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, insert, inspect, text

from civicml.core import ConfigurationError
from civicml.governance._tables import projects
from civicml.store import MetadataStore
from civicml.store.db import _MIGRATIONS


def _migrate_to(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = conn
        if revision == "0006" and inspect(conn).has_table("alembic_version"):
            command.downgrade(cfg, revision)
        else:
            command.upgrade(cfg, revision)
        conn.commit()
    engine.dispose()


def _add_projects(url: str, *names: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for number, name in enumerate(names):
            conn.execute(
                insert(projects).values(
                    id=f"{number:032d}",
                    name=name,
                    description="",
                    created_at=text("CURRENT_TIMESTAMP"),
                    created_by="alice",
                )
            )
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_an_upgrade_over_names_that_differ_in_case_stops_and_names_them(url: str) -> None:
    _migrate_to(url, "0006")
    _add_projects(url, "elig", "Elig", "ELIG", "other")

    with pytest.raises(
        ConfigurationError,
        match=re.escape("these names differ only in letter case: projects 'ELIG', 'Elig', 'elig'."),
    ) as err:
        MetadataStore(url)

    assert "nothing was changed" in (err.value.hint or "")
    check = MetadataStore(url, migrate=False)
    assert check.current_revision() == "0006"
    check.close()


def test_the_upgrade_adds_the_indexes_and_the_downgrade_removes_them(url: str) -> None:
    _migrate_to(url, "0006")
    _add_projects(url, "elig", "other")

    store = MetadataStore(url)
    with store.engine.connect() as conn:
        ddl = _index_names(conn)
    store.close()
    _migrate_to(url, "0006")
    engine = create_engine(url)
    with engine.connect() as conn:
        after_downgrade = _index_names(conn)
    engine.dispose()

    assert {"uq_projects_name_ci", "uq_model_aliases_model_id_alias_ci"} <= ddl
    assert not {n for n in after_downgrade if n.endswith("_ci")}


def _index_names(conn: Connection) -> set[str]:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if conn.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
    )
    return set(conn.execute(text(query)).scalars())
