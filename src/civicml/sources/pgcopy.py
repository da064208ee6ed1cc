"""The PostgreSQL fast path of database sources: ``COPY (query) TO STDOUT`` into Arrow.

Fetching rows as Python objects costs more than everything else an extraction does. On
PostgreSQL (psycopg 3) the same query — the table's ``SELECT`` or the user's, with the
watermark condition bound by psycopg — is run as ``COPY … TO STDOUT (FORMAT csv)`` and the
stream is parsed by Arrow's CSV reader in blocks, with each column's type taken from the
query's own result description (so nothing is guessed): integers ``int64``, ``real`` / ``double``
/ ``numeric`` ``double``, ``boolean``, ``date``, ``timestamp`` (``timestamptz`` in UTC) and text;
every other type (JSON, arrays, UUID, intervals, ``bytea``) as its PostgreSQL text form. The
session runs read-only, in UTC, with ISO dates. Memory stays bounded by a block.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

__all__ = ["arrow_type", "copy_batches"]

_TYPES: dict[int, Any] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    26: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    1700: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
_BLOCK = 4 << 20


def arrow_type(oid: int) -> Any:
    """The Arrow type a column of PostgreSQL type ``oid`` is read as (text when not listed)."""
    return _TYPES.get(oid, pa.string())


class _Blocks(io.RawIOBase):
    """The ``COPY`` stream as a readable file for Arrow's CSV reader: each ``read(n)`` joins
    whole blocks (one copy), keeping what is left over for the next call."""

    def __init__(self, first: bytes, blocks: Iterator[Any]) -> None:
        self._blocks = blocks
        self._rest = first

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        parts = [self._rest]
        have = len(self._rest)
        while size is None or size < 0 or have < size:
            block = next(self._blocks, None)
            if block is None:
                break
            parts.append(bytes(block))
            have += len(parts[-1])
        data = b"".join(parts)
        if size is None or size < 0 or len(data) <= size:
            self._rest = b""
            return data
        self._rest = data[size:]
        return data[:size]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def copy_batches(
    raw: Any, sql: str, params: Any, watermark: str | None
) -> tuple[Any, Iterator[Any], list[Any]]:
    """Start ``COPY (sql) TO STDOUT`` on the psycopg connection ``raw``.

    Returns:
        The Arrow schema, the record batches (read once), and a one-item list that holds the
        largest ``watermark`` value read so far (None before any row).
    """
    cur = raw.cursor()
    cur.execute("SET TIME ZONE 'UTC'")
    cur.execute("SET DateStyle = 'ISO, YMD'")
    cur.execute(f"SELECT * FROM ({sql}) AS civicml_probe LIMIT 0", params)
    names = [d.name for d in cur.description]
    schema = pa.schema([pa.field(d.name, arrow_type(d.type_code)) for d in cur.description])
    high: list[Any] = [None]

    def batches() -> Iterator[Any]:
        with cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy:
            blocks = iter(copy)
            first = next(blocks, None)
            if first is None:
                return
            stream = _Blocks(bytes(first), blocks)
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, block_size=_BLOCK),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={f.name: f.type for f in schema},
                    true_values=["t"],
                    false_values=["f"],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                if watermark is not None and batch.num_rows:
                    value = pc.max(batch.column(names.index(watermark))).as_py()
                    if value is not None and (high[0] is None or value > high[0]):
                        high[0] = value
                yield batch

    return schema, batches(), high
