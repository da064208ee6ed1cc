"""Finding a data subject's rows, out of core: Parquet batch by batch, capture files line by line.

A subject is every row whose key column equals the value. The value arrives as text (or an
integer) and is compared in the column's own type: an integer column against the integer, a
floating-point column against the number, text as text, anything else (dates, booleans) through
its text form. Memory stays bounded by one record batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

__all__ = ["count_rows", "drop_lines", "line_matches", "write_without"]

_BATCH = 65_536


def _mask(column: Any, subject: str) -> Any:
    """A boolean array: which values of ``column`` are the subject's (nulls are not)."""
    kind = column.type
    try:
        if pa.types.is_integer(kind):
            if not subject.lstrip("-").isdigit():
                return pa.array([False] * len(column))
            target: Any = pa.scalar(int(subject)).cast(kind)
            found = pc.equal(column, target)
        elif pa.types.is_floating(kind):
            number = float(subject)
            found = pc.equal(column, pa.scalar(number, kind))
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            found = pc.equal(column, subject)
        elif pa.types.is_dictionary(kind):
            found = pc.equal(pc.cast(column, pa.string()), subject)
        else:
            found = pc.equal(pc.cast(column, pa.string()), subject)
    except (ValueError, OverflowError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([False] * len(column))
    return pc.fill_null(found, False)


def count_rows(handle: BinaryIO, column: str, subject: str) -> int:
    """How many rows of the Parquet file hold the subject in ``column``."""
    total = 0
    for batch in pq.ParquetFile(handle).iter_batches(batch_size=_BATCH, columns=[column]):
        total += int(pc.sum(_mask(batch.column(0), subject)).as_py() or 0)
    return total


def write_without(handle: BinaryIO, column: str, subject: str, target: Path) -> int:
    """Write the Parquet file's rows without the subject's to ``target``; the rows kept."""
    source = pq.ParquetFile(handle)
    kept = 0
    with pq.ParquetWriter(target, source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=_BATCH):
            keep = pc.invert(_mask(batch.column(batch.schema.get_field_index(column)), subject))
            part = batch.filter(keep)
            kept += part.num_rows
            if part.num_rows:
                writer.write_batch(part)
    return kept


def _same(cell: Any, subject: str) -> bool:
    if cell is None:
        return False
    if isinstance(cell, bool):
        return str(cell).lower() == subject.strip().lower()
    if isinstance(cell, int | float):
        try:
            number = float(subject)
        except ValueError:
            return False
        return math.isfinite(number) and float(cell) == number
    return str(cell) == subject


def line_matches(line: bytes, column: str, subject: str) -> bool:
    """Whether a captured record (SageMaker's format) is a request about the subject."""
    try:
        record = json.loads(line)
        data = json.loads(record["captureData"]["endpointInput"]["data"])
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(data, dict) and _same(data.get(column), subject)


def drop_lines(data: bytes, column: str, subject: str) -> tuple[bytes, int]:
    """The capture file without the subject's records, and how many were dropped."""
    kept: list[bytes] = []
    dropped = 0
    for line in _lines(data):
        if line_matches(line, column, subject):
            dropped += 1
        else:
            kept.append(line)
    return b"".join(line + b"\n" for line in kept), dropped


def _lines(data: bytes) -> Iterator[bytes]:
    for line in data.splitlines():
        if line.strip():
            yield line
