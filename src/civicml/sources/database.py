"""Database sources: a table or a query of any SQLAlchemy URL, in full or incrementally.

**Bounded memory.** Rows come through a server-side cursor (``stream_results`` with
``yield_per``: a named cursor on PostgreSQL, an unbuffered cursor on MySQL/MariaDB) in chunks of
``chunk_rows``, each turned into an Arrow batch and handed on as a ``RecordBatchReader`` that
:meth:`civicml.data.service.DatasetService.ingest` writes to Parquet as it reads.

**Incremental extraction.** With a watermark column (a monotonic id or an updated-at
timestamp) a run selects ``WHERE watermark > :last`` and tracks the largest value it read; the
engine stores that value in the transaction that records the dataset version
(:mod:`civicml.sources.engine`), so a crash between read and commit leaves the old watermark and
the next run reads the same rows again — nothing lost, nothing twice. Rows whose watermark is
set *later* to a value at or below the stored one (a transaction that commits after a larger id
was read) are not seen: use a column the source sets at commit, or extract in full.

The extraction runs in a read-only transaction where the dialect has one (PostgreSQL, MySQL,
MariaDB); the connection's account should be read-only too.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from sqlalchemy import (
    Connection,
    MetaData,
    Table,
    create_engine,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import NoSuchModuleError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from civicml.core.errors import InvalidInputError, MissingExtraError, ServiceUnavailableError
from civicml.sources.arrow import cast_batch, table_of_rows, unify
from civicml.sources.connections import Target, scrub
from civicml.sources.pgcopy import copy_batches
from civicml.sources.schemas import DatabaseConfig

__all__ = ["Extraction", "count_newer", "describe", "extract", "watermark_value"]

#: Chunks read before the schema is fixed when a column is still all null.
_PEEK_CHUNKS = 4
#: Rows counted at most for the lag.
LAG_CAP = 1_000_000
_DRIVERS = {"psycopg": "postgres", "pymysql": "sources", "psycopg2": "postgres"}


@dataclass(slots=True)
class Extraction:
    """A running extraction: its batches (read once) and what was read so far."""

    schema: Any
    batches: Iterator[Any]
    rows: int = 0
    high: Any = None

    def reader(self) -> Any:
        """The batches as a ``pyarrow.RecordBatchReader``."""
        return pa.RecordBatchReader.from_batches(self.schema, self.batches)


def describe(config: DatabaseConfig) -> dict[str, Any]:
    """What lineage shows of the extraction: the table, or the query's SHA-256."""
    if config.table is not None:
        return {"table": config.table, "watermark": config.watermark}
    digest = hashlib.sha256((config.query or "").encode()).hexdigest()
    return {"query_sha256": digest, "watermark": config.watermark}


def watermark_value(position: dict[str, Any]) -> Any:
    """The stored watermark as a Python value to bind (None: none yet)."""
    value, kind = position.get("watermark"), position.get("type")
    if value is None:
        return None
    if kind == "datetime":
        return datetime.fromisoformat(str(value))
    if kind == "date":
        return date.fromisoformat(str(value))
    return value


def stored_watermark(value: Any) -> dict[str, Any]:
    """A watermark value as stored in the position (JSON)."""
    if isinstance(value, datetime):
        return {"watermark": value.isoformat(), "type": "datetime"}
    if isinstance(value, date):
        return {"watermark": value.isoformat(), "type": "date"}
    if isinstance(value, bool):
        return {"watermark": int(value), "type": "int"}
    if isinstance(value, int):
        return {"watermark": value, "type": "int"}
    if isinstance(value, float):
        return {"watermark": value, "type": "float"}
    return {"watermark": str(value), "type": "str"}


def _engine(target: Target) -> Any:
    try:
        return create_engine(target.url, poolclass=NullPool, hide_parameters=True)
    except (ModuleNotFoundError, NoSuchModuleError) as err:
        name = getattr(err, "name", None) or str(err)
        extra = next((e for d, e in _DRIVERS.items() if d in name), "sources")
        raise MissingExtraError("This database source", extra, name) from err
    except SQLAlchemyError as err:
        raise InvalidInputError(
            f"Cannot use {target.shown}: {scrub(str(err), target)[:300]}", hint="Check the URL."
        ) from err


def _statement(conn: Connection, config: DatabaseConfig, last: Any) -> tuple[Any, Any]:
    mark: Any = None
    if config.table is not None:
        schema, _, name = config.table.rpartition(".")
        try:
            table = Table(name, MetaData(), schema=schema or None, autoload_with=conn)
        except NoSuchTableError as err:
            raise InvalidInputError(
                f"Table {config.table!r} does not exist in the source database.",
                hint="Check the table name (and its schema, as 'schema.table').",
            ) from err
        query = select(table)
        if config.watermark is not None:
            if config.watermark not in table.c:
                raise InvalidInputError(
                    f"Table {config.table!r} has no column {config.watermark!r}.",
                    hint=f"Its columns: {', '.join(c.name for c in table.c)}.",
                )
            mark = table.c[config.watermark]
            if last is not None:
                query = query.where(mark > last)
        return query, mark if config.watermark else None
    inner = text(config.query.strip().rstrip(";")).columns().subquery("civicml_source")  # type: ignore[union-attr]
    query = select(literal_column("*")).select_from(inner)
    if config.watermark is not None:
        quoted = conn.dialect.identifier_preparer.quote(config.watermark)
        mark = literal_column(f"civicml_source.{quoted}")
        if last is not None:
            query = query.where(mark > last)
    return query, mark


def _read_only(conn: Connection) -> Connection:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    elif dialect in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
    return conn


def _translate(err: Exception, target: Target) -> Exception:
    message = scrub(str(getattr(err, "orig", None) or err), target).strip().splitlines()
    first = message[0] if message else type(err).__name__
    from sqlalchemy.exc import OperationalError

    if isinstance(err, OperationalError) and "connect" in first.lower():
        return ServiceUnavailableError(
            f"Cannot connect to {target.shown}: {first[:300]}",
            hint="Check that the database runs and the URL or connection is right.",
        )
    return InvalidInputError(
        f"The source database refused the extraction: {first[:300]}",
        hint="Check the table, query and watermark column.",
    )


@dataclass(slots=True)
class _Open:
    engine: Any
    conn: Connection


def extract(target: Target, config: DatabaseConfig, position: dict[str, Any]) -> Extraction:
    """Start extracting what is new since ``position``; the caller reads the batches.

    Raises:
        InvalidInputError: The table, column or query is wrong (the database's own words).
        ServiceUnavailableError: The database cannot be reached.
    """
    last = watermark_value(position) if config.watermark else None
    opened = _Open(_engine(target), None)  # type: ignore[arg-type]
    try:
        opened.conn = _read_only(opened.engine.connect())
        query, _ = _statement(opened.conn, config, last)
        if opened.conn.dialect.name == "postgresql" and opened.conn.dialect.driver == "psycopg":
            return _copy(opened, query, config, target)
        result = opened.conn.execution_options(
            stream_results=True, yield_per=config.chunk_rows
        ).execute(query)
        names = list(result.keys())
        index = names.index(config.watermark) if config.watermark in names else None
        if config.watermark is not None and index is None:
            raise InvalidInputError(
                f"The query has no column {config.watermark!r}.",
                hint=f"Its columns: {', '.join(names)}.",
            )
        chunks = result.partitions(config.chunk_rows)
        peeked = []
        for rows in chunks:
            peeked.append(table_of_rows(names, rows))
            if len(peeked) >= _PEEK_CHUNKS or not any(
                pa.types.is_null(f.type) for f in peeked[0].schema
            ):
                break
    except BaseException as err:
        _close(opened)
        if isinstance(err, Exception) and (isinstance(err, SQLAlchemyError) or _driver_error(err)):
            raise _translate(err, target) from err
        raise
    if not peeked:
        _close(opened)
        return Extraction(schema=pa.schema([]), batches=iter(()))
    schema = unify([t.schema for t in peeked])
    extraction = Extraction(schema=schema, batches=iter(()))
    extraction.batches = _batches(extraction, opened, peeked, chunks, names, index, target)
    return extraction


def _batches(
    extraction: Extraction,
    opened: _Open,
    peeked: list[Any],
    chunks: Iterator[Any],
    names: list[str],
    index: int | None,
    target: Target,
) -> Iterator[Any]:
    try:

        def tables() -> Iterator[Any]:
            yield from peeked
            for rows in chunks:
                yield table_of_rows(names, rows)

        for table in tables():
            fixed = cast_batch(table, extraction.schema)
            extraction.rows += fixed.num_rows
            if index is not None:
                import pyarrow.compute as pc  # type: ignore[import-untyped]

                high = pc.max(table.column(index)).as_py()
                if high is not None and (extraction.high is None or high > extraction.high):
                    extraction.high = high
            yield from fixed.to_batches()
    except SQLAlchemyError as err:
        raise _translate(err, target) from err
    finally:
        _close(opened)


def _copy(opened: _Open, query: Any, config: DatabaseConfig, target: Target) -> Extraction:
    """PostgreSQL: the same statement through ``COPY … TO STDOUT`` (:mod:`.pgcopy`)."""
    compiled = query.compile(dialect=opened.conn.dialect)
    raw = opened.conn.connection.driver_connection
    schema, stream, high = copy_batches(raw, str(compiled), dict(compiled.params), config.watermark)
    first = next(stream, None)
    if first is None:
        _close(opened)
        return Extraction(schema=pa.schema([]), batches=iter(()))
    extraction = Extraction(schema=schema, batches=iter(()))

    def batches() -> Iterator[Any]:
        try:
            for batch in itertools.chain([first], stream):
                extraction.rows += batch.num_rows
                extraction.high = high[0]
                yield batch
        except Exception as err:
            raise _translate(err, target) from err
        finally:
            _close(opened)

    extraction.batches = batches()
    return extraction


def _driver_error(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] in ("psycopg", "pymysql", "pyarrow")


def _close(opened: _Open) -> None:
    try:
        if opened.conn is not None:
            opened.conn.close()
    finally:
        opened.engine.dispose()


def count_newer(target: Target, config: DatabaseConfig, position: dict[str, Any]) -> int:
    """Rows above the stored watermark (all rows without one), counted up to ``LAG_CAP``."""
    last = watermark_value(position) if config.watermark else None
    engine = _engine(target)
    try:
        with engine.connect() as conn:
            query, _ = _statement(_read_only(conn), config, last)
            capped = (
                query.with_only_columns(literal_column("1"), maintain_column_froms=True)
                .limit(LAG_CAP)
                .subquery()
            )
            return int(conn.execute(select(func.count()).select_from(capped)).scalar() or 0)
    except SQLAlchemyError as err:
        raise _translate(err, target) from err
    finally:
        engine.dispose()
