"""bind_utc writes what SQLAlchemy writes for a UTCDateTime column, so rows written through a
DB-API cursor and through SQLAlchemy compare, sort and read back alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text

from civicml.store.schema import UTCDateTime, bind_utc


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 6, 22, 40, 59, 262365, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 12, 31, 23, 30, 0, 1, tzinfo=timezone(timedelta(hours=-5))),  # next year
        datetime(1999, 3, 1, 0, 0, 0, 999999, tzinfo=timezone(timedelta(hours=9, minutes=30))),
    ],
)
def test_bind_utc_is_sqlalchemys_sqlite_text(tmp_path: Path, moment: datetime) -> None:
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime)
    )
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, at=moment))
        stored = conn.execute(text("SELECT at FROM t")).scalar()
        conn.execute(
            text("INSERT INTO t (id, at) VALUES (2, :at)"), {"at": bind_utc(moment, "sqlite")}
        )
        read = conn.execute(select(table.c.at).where(table.c.id == 2)).scalar()
    engine.dispose()
    assert bind_utc(moment, "sqlite") == stored
    assert read == moment


def test_bind_utc_refuses_a_naive_time_and_passes_postgresql_an_aware_one() -> None:
    with pytest.raises(ValueError, match="naive"):
        bind_utc(datetime(2026, 1, 1), "sqlite")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    assert bind_utc(moment, "postgresql") is moment
