"""The rows a personal-data scan looks at: every ``stride``-th row, from the first.

``stride`` is the smallest power of two that leaves at most ``limit`` rows (so a scan looks at
more than half of ``limit`` and at most ``limit`` rows of a large version, and at every row of
a small one), which depends on the row count and the limit only. Because each larger stride is
a multiple of the smaller ones, the sample can be gathered while the rows stream by, before the
row count is known (:class:`RowSample`: an ingest keeps the rows it will scan as it writes them,
instead of reading its own Parquet file again), and it is the sample a later scan of the stored
file reads (:func:`sample_stride`, ``personal._sample_rows``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from civicml.data.pii import needs_values

__all__ = ["RowSample", "sample_size", "sample_stride", "scanned_columns"]

#: Parts (one per batch that gave rows) kept apart before they are joined into one.
_MAX_PARTS = 64


def scanned_columns(schema: Any) -> list[str]:
    """The columns of ``schema`` whose values a scan looks at
    (:func:`~civicml.data.pii.needs_values`): those a sample holds."""
    return [f.name for f in schema if needs_values(f.name, f.type)]


def sample_stride(rows: int, limit: int) -> int:
    """The distance between sampled rows: the smallest power of two ``s`` with
    ``ceil(rows / s) <= limit``.

    Example:
        >>> sample_stride(10, 10), sample_stride(11, 10), sample_stride(1_000_000, 10_000)
        (1, 2, 128)
    """
    stride = 1
    while -(-rows // stride) > limit:
        stride *= 2
    return stride


def sample_size(rows: int, limit: int) -> int:
    """How many rows a scan of ``rows`` rows looks at (rows 0, stride, 2 * stride, …)."""
    return -(-rows // sample_stride(rows, limit))


class RowSample:
    """Gather the sampled rows of ``columns`` from record batches as they stream by, in order.

    Memory: the sample itself (at most ``limit`` rows of ``columns``) and, for a moment, the
    rows of one batch that join it. When the rows seen so far would give more than ``limit``
    sampled rows, the stride doubles and every other kept row is let go.

    Args:
        schema: The Arrow schema of every batch.
        columns: The columns to keep (those a scan reads); may be empty (the rows are counted).
        limit: At most this many rows (``datasets_pii_scan_rows``).

    Example:
        >>> s = RowSample(pa.schema([("x", pa.int64())]), ["x"], limit=2)
        >>> s.update(pa.record_batch([pa.array([0, 1, 2, 3, 4])], names=["x"]))
        >>> s.table()["x"].to_pylist(), s.rows
        ([0, 4], 5)
    """

    def __init__(self, schema: Any, columns: list[str], limit: int) -> None:
        #: The schema of the batches (every column, kept or not) and the limit.
        self.schema = schema
        self.limit = limit
        self._columns = list(columns)
        self._kept = pa.schema([schema.field(c) for c in self._columns])
        self._stride = 1
        #: The rows seen so far.
        self.rows = 0
        self._parts: list[tuple[np.ndarray[Any, Any], Any]] = []  # (row numbers, their rows)

    def update(self, batch: Any) -> None:
        """Add the next record batch (the schema's columns, in row order)."""
        start = self.rows
        self.rows += batch.num_rows
        if -(-self.rows // self._stride) > self.limit:
            self._stride = sample_stride(self.rows, self.limit)
            self._thin()
        stride = self._stride
        first = -(-start // stride) * stride
        wanted = np.arange(first, self.rows, stride, dtype=np.int64)
        if len(wanted):
            rows = batch.select(self._columns).take(pa.array(wanted - start))
            self._parts.append((wanted, rows))

    def _thin(self) -> None:
        parts = []
        for numbers, rows in self._parts:
            keep = numbers % self._stride == 0
            if keep.all():
                parts.append((numbers, rows))
            elif keep.any():
                parts.append((numbers[keep], rows.filter(pa.array(keep))))
        if len(parts) > _MAX_PARTS and self._columns:  # many small batches: one of them all
            table = pa.Table.from_batches([rows for _, rows in parts], schema=self._kept)
            numbers = np.concatenate([n for n, _ in parts])
            parts = [(numbers, table.combine_chunks().to_batches()[0])]
        self._parts = parts

    def table(self) -> Any:
        """The sampled rows: those a scan of the stored rows reads (``sample_size`` of them)."""
        return pa.Table.from_batches([rows for _, rows in self._parts], schema=self._kept)
