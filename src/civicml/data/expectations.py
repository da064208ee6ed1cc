"""Evaluate quality expectations over a dataset version's Parquet file with DuckDB.

Pure engine, no database: :func:`evaluate` takes a plaintext Parquet file and the expectations,
and returns one :class:`ExpectationResult` each. DuckDB scans the file through a registered
``pyarrow.dataset`` (row group by row group, so memory stays bounded whatever the file size) on
an in-memory connection whose external access is switched off and locked *before* any user text
runs: a custom SQL check can read the table ``data`` (and ``ref`` for a referential check) and
nothing else — no file, no URL, no ``ATTACH``, no ``COPY``, no extension install.

Hostile input is refused before it runs (:func:`check_expectation`): a custom check must be one
``SELECT`` (DuckDB's own parser decides, not a regex); a regular expression is compiled by
DuckDB's RE2, which matches in linear time, so a catastrophic pattern such as ``(a+)+$`` cannot
hang a check; both have length limits. Each evaluation has a wall-clock limit (the connection is
interrupted) and one failing check never stops the others: it is reported as ``error``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as pads  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.data.expectation_schemas import (
    ExpectationCreate,
    ExpectationKind,
    ExpectationResult,
    max_age_seconds,
)

__all__ = ["DEFAULT_SAMPLE_ROWS", "check_expectation", "evaluate", "quote_ident", "sandbox"]

DEFAULT_SAMPLE_ROWS = 20
_MESSAGE_MAX = 300
K = ExpectationKind

#: Resolves a referential check's dataset to a plaintext Parquet path (None: it does not exist).
RefResolver = Callable[[str, int | None], Path | None]


def quote_ident(name: str) -> str:
    """A column name as a DuckDB identifier, in double quotes (inner ones doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def sandbox(
    tables: dict[str, Any], *, timeout_s: float = 60.0, memory_limit: str = "512MB"
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with ``tables`` registered (pyarrow datasets or tables)
    and no external access, interrupted after ``timeout_s`` seconds."""
    con = duckdb.connect(":memory:", config={"threads": 2, "memory_limit": memory_limit})
    timer = threading.Timer(timeout_s, con.interrupt)
    try:
        for name, table in tables.items():
            con.register(name, table)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        timer.start()
        yield con
    finally:
        timer.cancel()
        con.close()


def check_expectation(spec: ExpectationCreate, schema: Any | None) -> None:
    """Refuse an expectation that cannot run: a column the dataset lacks, a pattern RE2 cannot
    compile, SQL that is not exactly one SELECT or does not bind to the dataset's columns.

    Args:
        spec: The expectation.
        schema: The latest version's Arrow schema (None: the dataset has no version yet).

    Raises:
        InvalidInputError: What is wrong, with a hint.
    """
    names = None if schema is None else list(schema.names)
    if spec.column is not None and names is not None and spec.column not in names:
        raise InvalidInputError(
            f"Column {spec.column!r} is not in the dataset.",
            hint=f"Its columns: {', '.join(names[:50])}.",
        )
    empty = pa.table({}) if schema is None else schema.empty_table()
    if spec.pattern is not None:
        with sandbox({}, timeout_s=5) as con:
            try:
                con.execute(f"SELECT regexp_matches('', {_literal(spec.pattern)})").fetchall()
            except duckdb.Error as err:
                raise InvalidInputError(
                    f"Pattern {spec.pattern!r} is not a valid RE2 regular expression: "
                    f"{_first_line(err)}",
                    hint="RE2 has no look-around or back-references; see "
                    "https://github.com/google/re2/wiki/Syntax.",
                ) from err
    if spec.sql is not None:
        sql = read_only_select(spec.sql)
        if schema is not None:
            with sandbox({"data": empty, "ref": pa.table({"_": pa.array([], pa.int8())})}) as con:
                try:
                    con.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0").fetchall()
                except duckdb.Error as err:
                    raise InvalidInputError(
                        f"The SQL check does not run on the dataset: {_first_line(err)}",
                        hint="Select from the table 'data', e.g. SELECT * FROM data WHERE "
                        "income < 0.",
                    ) from err


def read_only_select(sql: str) -> str:
    """``sql`` without trailing semicolons when it is exactly one SELECT statement.

    Raises:
        InvalidInputError: Not parseable, several statements, or not a SELECT.
    """
    text = sql.strip().rstrip(";").strip()
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as err:
        raise InvalidInputError(
            f"The SQL check is not valid SQL: {_first_line(err)}",
            hint="Write one SELECT over the table 'data' that returns the failing rows.",
        ) from err
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise InvalidInputError(
            "The SQL check must be exactly one SELECT statement (read-only).",
            hint="e.g. SELECT * FROM data WHERE income < 0 AND eligible",
        )
    return text


def evaluate(
    path: Path,
    specs: list[ExpectationCreate],
    *,
    now: datetime,
    references: RefResolver | None = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    timeout_s: float = 120.0,
) -> list[ExpectationResult]:
    """Each expectation's result on the Parquet file at ``path``, in the order given."""
    data = pads.dataset(str(path), format="parquet")
    schema = data.schema
    with sandbox({"data": data}, timeout_s=timeout_s) as con:
        rows = int(con.execute("SELECT count(*) FROM data").fetchone()[0])  # type: ignore[index]
    results = []
    for spec in specs:
        tables: dict[str, Any] = {"data": data}
        try:
            if spec.kind is K.REFERENCES:
                tables["ref"] = _reference(spec, references)
            with sandbox(tables, timeout_s=timeout_s) as con:
                results.append(_one(con, spec, schema, rows, now, sample_rows))
        except (duckdb.Error, InvalidInputError, ValueError) as err:
            message = str(err) if isinstance(err, InvalidInputError) else _first_line(err)
            results.append(_result(spec, "error", message=message[:_MESSAGE_MAX]))
    return results


def _reference(spec: ExpectationCreate, references: RefResolver | None) -> Any:
    found = None if references is None else references(str(spec.dataset), spec.dataset_version)
    if found is None:
        raise InvalidInputError(f"Referenced dataset {spec.dataset!r} has no such version.")
    return pads.dataset(str(found), format="parquet")


def _one(
    con: Any, spec: ExpectationCreate, schema: Any, rows: int, now: datetime, sample_rows: int
) -> ExpectationResult:
    if spec.kind is K.ROW_COUNT_BETWEEN:
        low, high = _bound(spec.min), _bound(spec.max)
        ok = (low is None or rows >= low) and (high is None or rows <= high)
        return _result(
            spec,
            "passed" if ok else "failed",
            observed={"rows": rows},
            message=f"{rows:,} rows; expected {_range(low, high)}.",
        )
    if spec.kind is K.SQL:
        where = None
        query = read_only_select(str(spec.sql))
    else:
        column = str(spec.column)
        if column not in schema.names:
            raise InvalidInputError(f"Column {column!r} is not in this version.")
        arrow_type = schema.field(column).type
        if spec.kind is K.FRESHNESS:
            return _freshness(con, spec, column, arrow_type, now)
        where = _predicate(spec, quote_ident(column), arrow_type)
        query = f"SELECT * FROM data WHERE {where}"
    failing = int(con.execute(f"SELECT count(*) FROM ({query}) AS q").fetchone()[0])
    sample = _fetch(con, f"SELECT * FROM ({query}) AS q LIMIT {int(sample_rows)}")
    share = failing / rows if rows else 0.0
    ok = share <= 1.0 - spec.mostly + 1e-12 if spec.kind is not K.SQL else failing == 0
    if spec.kind is K.SQL and spec.mostly < 1.0:
        ok = share <= 1.0 - spec.mostly + 1e-12
    return _result(
        spec,
        "passed" if ok else "failed",
        failing_rows=failing,
        observed={"rows": rows, "failing_rows": failing, "failing_share": round(share, 6)},
        sample=[_json_row(r) for r in sample],
        message=f"{failing:,} of {rows:,} rows fail"
        + (
            f" (mostly {spec.mostly:g} allows {math.floor(rows * (1 - spec.mostly)):,})."
            if spec.mostly < 1.0
            else "."
        ),
    )


def _predicate(spec: ExpectationCreate, col: str, arrow_type: Any) -> str:
    is_float = pa.types.is_floating(arrow_type)
    if spec.kind is K.NOT_NULL:
        return f"{col} IS NULL" + (f" OR isnan({col})" if is_float else "")
    if spec.kind is K.UNIQUE:
        return (
            f"{col} IN (SELECT {col} FROM data WHERE {col} IS NOT NULL "
            f"GROUP BY {col} HAVING count(*) > 1)"
        )
    if spec.kind is K.BETWEEN:
        low, high = _typed(spec.min, arrow_type), _typed(spec.max, arrow_type)
        lt, gt = (">=", "<=") if not spec.strict else (">", "<")
        inside = (
            " AND ".join(
                [f"{col} {lt} {low}"] * (low is not None)
                + [f"{col} {gt} {high}"] * (high is not None)
            )
            or "TRUE"
        )
        return f"{col} IS NOT NULL AND NOT ({inside})"
    if spec.kind is K.IN_SET:
        allowed = ", ".join(_literal(_text(v)) for v in spec.values or [])
        return f"{col} IS NOT NULL AND CAST({col} AS VARCHAR) NOT IN ({allowed})"
    if spec.kind is K.MATCH_REGEX:
        pattern = _literal(str(spec.pattern))
        return f"{col} IS NOT NULL AND NOT regexp_matches(CAST({col} AS VARCHAR), {pattern})"
    if spec.kind is K.REFERENCES:
        other = quote_ident(spec.dataset_column or str(spec.column))
        return (
            f"{col} IS NOT NULL AND CAST({col} AS VARCHAR) NOT IN "
            f"(SELECT CAST({other} AS VARCHAR) FROM ref WHERE {other} IS NOT NULL)"
        )
    raise AssertionError(spec.kind)  # pragma: no cover


def _freshness(
    con: Any, spec: ExpectationCreate, column: str, arrow_type: Any, now: datetime
) -> ExpectationResult:
    if not (pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type)):
        raise InvalidInputError(
            f"Column {column!r} is {arrow_type}, not a date or timestamp: freshness needs one."
        )
    newest = con.execute(f"SELECT max({quote_ident(column)}) FROM data").fetchone()[0]
    limit = timedelta(seconds=max_age_seconds(str(spec.max_age)))
    if newest is None:
        return _result(spec, "failed", observed={"newest": None}, message="No values at all.")
    moment = (
        newest if isinstance(newest, datetime) else datetime.combine(newest, datetime.min.time())
    )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=now.tzinfo)
    age = now - moment
    ok = age <= limit
    return _result(
        spec,
        "passed" if ok else "failed",
        observed={"newest": moment.isoformat(), "age_s": round(age.total_seconds(), 3)},
        message=f"Newest value {moment.isoformat()} is {_age(age)} old; at most {spec.max_age}.",
    )


def _typed(value: float | str | None, arrow_type: Any) -> str | None:
    if value is None:
        return None
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        kind = "DATE" if pa.types.is_date(arrow_type) else "TIMESTAMP"
        return f"CAST({_literal(str(value))} AS {kind})"
    if (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
    ):
        try:
            number = float(value)
        except ValueError as err:
            raise InvalidInputError(f"Bound {value!r} is not a number.") from err
        if not math.isfinite(number):
            raise InvalidInputError(f"Bound {value!r} is not a finite number.")
        return repr(number)
    return _literal(str(value))


def _bound(value: float | str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError as err:
        raise InvalidInputError(f"Row count bound {value!r} is not a number.") from err


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fetch(con: Any, query: str) -> list[dict[str, Any]]:
    """The rows of ``query`` as dicts (DuckDB 1.x and 2.x alike)."""
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _json_value(v) for k, v in row.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return _json_row(value)
    return value


def _result(spec: ExpectationCreate, status: str, **fields: Any) -> ExpectationResult:
    return ExpectationResult(
        name=spec.name,
        kind=spec.kind,
        column=spec.column,
        blocking=spec.blocking,
        status=status,
        **fields,
    )


def _range(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "any number"
    if high is None:
        return f"at least {low:,.0f}"
    if low is None:
        return f"at most {high:,.0f}"
    return f"{low:,.0f} to {high:,.0f}"


def _age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:_MESSAGE_MAX]
