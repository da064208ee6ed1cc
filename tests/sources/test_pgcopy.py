"""The PostgreSQL ``COPY`` reader against the real server: the same bytes and the same Arrow
content (and content hash) as psycopg's own ``Copy`` iterator parsed as before, on data that
trips CSV readers; a ``COPY`` that fails after its first rows; a consumer that stops early; no
rows. After each, the connection is idle and usable."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from civicml.core.errors import InvalidInputError
from civicml.data.content import ContentHasher
from civicml.sources import pgcopy
from civicml.sources.connections import Target
from civicml.sources.database import extract
from civicml.sources.schemas import DatabaseConfig
from tests.sources.helpers import PG, need, pg, unique

DSN = "postgresql://postgres@127.0.0.1:5432/test"
TRICKY = [
    "plain",
    "",
    'say "hi", then leave',
    "two\nlines\r\nand a \\ backslash\tand a tab",
    "NULL",
    "\\N",
    '""',
    ",",
    "Zürich — 東京 🚀 e\u0301",
    "trailing newline\n",
    "\n",
]


@pytest.fixture
def raw() -> Iterator[Any]:
    """A connection in a transaction, as an extraction's (requested after ``tricky``, so that it
    closes, and lets go of its locks, before the table is dropped)."""
    need("postgres")
    with psycopg.connect(DSN) as conn:
        yield conn


@pytest.fixture
def tricky() -> Iterator[str]:
    need("postgres")
    name = unique("copy")
    pg(
        f"CREATE TABLE {name} (id int PRIMARY KEY, txt text, num numeric(24,6), f8 float8, "
        "ok boolean, day date, at timestamp, atz timestamptz, raw bytea, doc jsonb, tags text[])"
    )
    pg(
        f"INSERT INTO {name} VALUES "
        "(1, 'a', 12345678901234.123456, -0.5, true, '2026-01-02', '2026-01-02 03:04:05.123456', "
        "'2026-03-29 01:30:00+05:30', '\\x00ff'::bytea, '{\"k\": [1, \"x,y\"]}', "
        "'{a,\"b c\",NULL}'), "
        "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
        "(3, '', 'NaN', 1e300, false, '1999-12-31', '1999-12-31 23:59:59', "
        "'1999-12-31 23:59:59.999999-08', ''::bytea, 'null', '{}')"
    )
    pg(
        f"INSERT INTO {name} (id, txt, num, atz) SELECT 3 + g, (%s::text[])[1 + g %% %s] || g, "
        "g / 7.0, timestamptz '2026-06-01 12:00+02' + g * interval '1 second' "
        "FROM generate_series(1, 5000) g",
        TRICKY,
        len(TRICKY),
    )
    pg(
        f"INSERT INTO {name} (id, txt, num, f8, doc) VALUES (100001, 'NULL', 'NaN', 'Infinity', "
        "'null'), (100002, 'NA', 1, '-Infinity', '\"N/A\"'), (100003, 'nan', 2, 'NaN', NULL)"
    )
    yield name
    pg(f"DROP TABLE IF EXISTS {name}")


def _before(raw: Any, sql: str, *, fixed: bool = True) -> tuple[bytes, Any]:
    """The bytes of psycopg's ``Copy`` iterator, parsed with the options used before the
    reader drained ``COPY`` itself; ``fixed``: with PostgreSQL's one null marker instead of
    Arrow's defaults."""
    cur = raw.cursor()
    cur.execute(f"SELECT * FROM ({sql}) AS p LIMIT 0")
    schema = pa.schema([pa.field(d.name, pgcopy.arrow_type(d.type_code)) for d in cur.description])
    with cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy:
        data = b"".join(bytes(block) for block in copy)
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema},
            true_values=["t"],
            false_values=["f"],
            **({"null_values": [""]} if fixed else {}),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    raw.rollback()
    return data, table


def _hash(table: Any) -> str:
    hasher = ContentHasher(table.schema)
    hasher.update(table)
    return hasher.hexdigest()


def test_the_same_bytes_in_any_read_sizes(tricky: str, raw: Any) -> None:
    expected, _ = _before(raw, f"SELECT * FROM {tricky} ORDER BY id")
    cur = raw.cursor()
    with cur.copy(f"COPY (SELECT * FROM {tricky} ORDER BY id) TO STDOUT WITH (FORMAT csv)"):
        stream = pgcopy._CopyOut(raw.pgconn, raw.info.encoding)
        parts, size = [], 1
        while part := stream.read(size):
            assert len(part) <= size
            parts.append(part)
            size = size * 3 % 65_521 + 1  # 1, 4, 13, …: cuts inside rows and characters
        stream.close()
    assert b"".join(parts) == expected and stream.ended
    assert raw.execute("SELECT 1").fetchone() == (1,)  # the COPY's result was read


@pytest.mark.parametrize("block", [1 << 10, 4 << 20])
def test_the_same_content_as_before(
    tricky: str, raw: Any, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcopy, "_BLOCK", block)  # 1 KiB: Arrow's blocks end inside rows
    plain = f"SELECT * FROM {tricky} WHERE id <> 3 AND id < 100000 ORDER BY id"
    _, before = _before(raw, plain, fixed=False)
    schema, batches, high = pgcopy.copy_batches(raw, plain, {}, "atz")
    after = pa.Table.from_batches(list(batches), schema)
    assert after.equals(before) and _hash(after) == _hash(before)  # a version's identity
    assert after.num_rows == 5002 and high[0] == max(v for v in after["atz"].to_pylist() if v)
    everything = f"SELECT * FROM {tricky} ORDER BY id"
    _, before = _before(raw, everything)
    schema, batches, _ = pgcopy.copy_batches(raw, everything, {}, None)
    after = pa.Table.from_batches(list(batches), schema)
    assert _hash(after) == _hash(before) and repr(after.to_pylist()) == repr(before.to_pylist())
    assert raw.execute("SELECT 1").fetchone() == (1,)


def test_values_come_through_as_postgresql_wrote_them(tricky: str, raw: Any) -> None:
    schema, batches, _ = pgcopy.copy_batches(raw, f"SELECT * FROM {tricky} ORDER BY id", {}, None)
    table = pa.Table.from_batches(list(batches), schema)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[1]["txt"] == "a" and rows[1]["raw"] == "\\x00ff" and rows[1]["ok"] is True
    assert rows[1]["tags"] == '{a,"b c",NULL}' and rows[1]["doc"] == '{"k": [1, "x,y"]}'
    assert (
        str(rows[1]["atz"]) == "2026-03-28 20:00:00+00:00" and rows[1]["num"] == 12345678901234.123
    )
    assert all(v is None for k, v in rows[2].items() if k != "id")
    assert rows[3]["txt"] == "" and rows[3]["raw"] == "\\x" and rows[3]["ok"] is False
    assert math.isnan(rows[3]["num"]) and rows[3]["doc"] == "null" and rows[3]["tags"] == "{}"
    assert str(rows[3]["atz"]) == "2000-01-01 07:59:59.999999+00:00"
    assert [rows[3 + g]["txt"] for g in range(1, 12)] == [
        TRICKY[g % len(TRICKY)] + str(g) for g in range(1, 12)
    ]
    # Arrow's own null markers are values here (they were nulls before).
    assert [rows[i]["txt"] for i in (100001, 100002, 100003)] == ["NULL", "NA", "nan"]
    assert math.isnan(rows[100001]["num"]) and rows[100001]["f8"] == math.inf
    assert rows[100002]["f8"] == -math.inf and rows[100002]["doc"] == '"N/A"'
    _, before = _before(raw, f"SELECT * FROM {tricky} WHERE id > 100000", fixed=False)
    assert before["txt"].to_pylist() == [None, None, None]


def test_a_copy_that_fails_after_its_first_rows_raises_the_error(raw: Any) -> None:
    sql = "SELECT g, repeat('x', 200) AS pad, 1 / (g - 60000) AS boom"
    sql += " FROM generate_series(1, 90000) g"
    _, batches, _ = pgcopy.copy_batches(raw, sql, {}, None)
    with pytest.raises(psycopg.errors.DivisionByZero):
        for _ in batches:
            pass
    raw.rollback()
    assert raw.execute("SELECT 1").fetchone() == (1,)


def test_the_extraction_reports_a_failed_copy_in_the_database_words() -> None:
    need("postgres")
    query = "SELECT g AS id, repeat('x', 200) AS pad, 1 / (g - 60000) AS boom"
    config = DatabaseConfig(query=query + " FROM generate_series(1, 90000) g")
    found = extract(Target(url=PG, shown=PG), config, {})  # the first rows are fine
    with pytest.raises(InvalidInputError, match="refused the extraction: division by zero"):
        for _ in found.batches:
            pass


def test_a_consumer_that_stops_early_leaves_the_connection_usable(raw: Any) -> None:
    sql = "SELECT g, repeat('y', 100) AS pad FROM generate_series(1, 2000000) g"
    _, batches, _ = pgcopy.copy_batches(raw, sql, {}, None)
    assert next(batches).num_rows > 0
    batches.close()  # what an ingest that failed midway does
    raw.rollback()
    assert raw.execute("SELECT 1").fetchone() == (1,)


def test_no_rows(raw: Any) -> None:
    schema, batches, high = pgcopy.copy_batches(raw, "SELECT 1 AS one WHERE false", {}, "one")
    assert schema.names == ["one"] and list(batches) == [] and high == [None]
    assert raw.execute("SELECT 1").fetchone() == (1,)
