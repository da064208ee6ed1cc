"""The shared SQLAlchemy ``MetaData`` every stage declares its tables on, and column helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, String, TypeDecorator
from sqlalchemy.engine import Dialect

__all__ = ["ID", "JSONDoc", "UTCDateTime", "bind_utc", "metadata"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Identifier columns hold :func:`civicml.core.ids.new_id` values.
ID = String(32)

#: Auto-increment primary key that is BIGINT on PostgreSQL and INTEGER (rowid) on SQLite.
BigID = BigInteger().with_variant(Integer(), "sqlite")

JSONDoc = JSON().with_variant(JSON(none_as_null=True), "sqlite")


def bind_utc(value: datetime, dialect: str) -> Any:
    """``value`` as a :class:`UTCDateTime` column stores it, for a statement sent through a
    DB-API cursor: SQLite's text form of the naive UTC time (SQLAlchemy's, microseconds
    always), PostgreSQL's aware datetime as it is."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if dialect != "sqlite":
        return value
    # isoformat, not strftime (which goes through the time module and cost 60% more; a short
    # run writes three of these): "YYYY-MM-DD HH:MM:SS.ffffff", the "+00:00" cut off.
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if isinstance(value, datetime) else value


Name = String(128)
