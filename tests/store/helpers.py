"""Helpers of the migration tests: run Alembic to a revision on a bare database URL."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from civicml.store.db import _MIGRATIONS


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Upgrade (or with ``down`` downgrade) the database at ``url`` to ``revision``."""
    engine = create_engine(url)
    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
        conn.commit()
    engine.dispose()
