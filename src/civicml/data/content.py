"""A dataset's identity by its logical content: column names, Arrow types and values.

:class:`ContentHasher` hashes record batches as they stream, in bounded memory, to a SHA-256 that
depends only on the table: not on how its rows were cut into batches, on array offsets, on the
bytes under null slots, on the Parquet options it was written with or on the format it was read
from. The same table ingested from CSV, Parquet or a data frame, with any chunk size, has one
content hash (given the same column types: a CSV timestamp read as ``timestamp[s]`` is not the
``timestamp[ns]`` of a pandas frame).

How. Types are canonicalised first, as the ingest canonicalises them: a dictionary column is
hashed as its decoded values, ``large_string`` / ``string_view`` as ``string`` (and binary alike).
Each column is then a few independent byte *streams*, each hashed by its own SHA-256 and each a
plain concatenation over the batches, which is why batch boundaries cannot matter:

- ``nulls``: the row numbers (int64, counted from the first row of the table) of null values;
- for fixed-width types (integers, floats, decimals, dates, times, timestamps, durations): the
  little-endian bytes of the non-null values, read from the array's buffer at its offset; NaNs
  are hashed as one canonical NaN;
- booleans: one byte (0 or 1) per non-null value;
- strings and binaries: the lengths (int64) of the non-null values, and separately their bytes
  back to back;
- lists, maps and fixed-size lists: the lengths, then the flattened values as a child column;
  structs: each field as a child column (nulls of the struct are its own ``nulls`` stream).

The result is SHA-256 over a header (format version, row count, column names and types) and the
streams' digests in column order. Other types (unions, extensions) fall back to a stream of each
value's ``repr`` (correct, slow). Python's ``hashlib`` releases the GIL on large buffers, and the
Arrow kernels used here do too, so hashing overlaps the other ingest stages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

__all__ = ["CONTENT_HASH_FORMAT", "ContentHasher", "canonical_type", "content_hash_of_parquet"]

#: Part of every content hash: a change to the canonical form gets a new name.
CONTENT_HASH_FORMAT = "civicml-content-v1"
_INT64 = np.dtype("<i8")


def canonical_type(t: Any) -> Any:
    """The type a column is stored and hashed as: dictionaries as their values, large and view
    strings and binaries as ``string`` / ``binary``, recursively inside nested types."""
    if pa.types.is_dictionary(t):
        return canonical_type(t.value_type)
    if pa.types.is_large_string(t) or _is_view(t, "is_string_view"):
        return pa.string()
    if pa.types.is_large_binary(t) or _is_view(t, "is_binary_view"):
        return pa.binary()
    # What Parquet stores: seconds as milliseconds, dates as days.
    if pa.types.is_timestamp(t) and t.unit == "s":
        return pa.timestamp("ms", tz=t.tz)
    if pa.types.is_time32(t):
        return pa.time32("ms")
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_map(t):
        return pa.map_(canonical_type(t.key_type), canonical_type(t.item_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(canonical_type(t.value_type), t.list_size)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or _is_view(t, "is_list_view")
        or _is_view(t, "is_large_list_view")
    ):
        return pa.list_(canonical_type(t.value_type))  # the item's name is not content
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, canonical_type(f.type)) for f in t])
    return t


def _is_view(t: Any, check: str) -> bool:
    """View types exist from pyarrow 16; civicml supports 15."""
    test = getattr(pa.types, check, None)
    return bool(test is not None and test(t))


class _Column:
    """The streams of one column (or of a nested child) and how to feed them."""

    def __init__(self, path: str, t: Any) -> None:
        self.path = path
        self.type = t
        self.rows = 0  # values seen so far: the row number of the next value
        self.nulls = hashlib.sha256()
        self.values = hashlib.sha256()
        self.data = hashlib.sha256()  # strings' bytes (lengths go to ``values``)
        self.children: list[_Column] = []
        if pa.types.is_struct(t):
            self.children = [
                _Column(f"{path}.{t.field(i).name}", t.field(i).type) for i in range(t.num_fields)
            ]
        elif pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_map(t):
            self.children = [_Column(f"{path}[]", _list_values_type(t))]

    def update(self, arr: Any) -> None:
        if isinstance(arr, pa.ChunkedArray):
            for chunk in arr.chunks:
                self.update(chunk)
            return
        if not len(arr):
            return
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if arr.type != self.type:  # date64 to date32 truncates, as Parquet stores it
            arr = arr.cast(self.type, safe=not pa.types.is_date64(arr.type))
        start = self.rows
        self.rows += len(arr)
        if pa.types.is_null(arr.type):
            return
        if arr.null_count:
            invalid = pc.invert(pc.is_valid(arr)).to_numpy(zero_copy_only=False)
            self.nulls.update((np.flatnonzero(invalid).astype(_INT64) + start).data)
        t = arr.type
        if pa.types.is_struct(t):
            for child, values in zip(self.children, arr.flatten(), strict=True):
                child.update(values.filter(pc.is_valid(arr)) if arr.null_count else values)
            return
        if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_map(t):
            valid = arr.drop_null() if arr.null_count else arr
            if not pa.types.is_fixed_size_list(t):  # fixed: the type says the length
                self.values.update(np.diff(valid.offsets.to_numpy()).astype(_INT64).data)
            self.children[0].update(_list_values(valid))
            return
        valid = arr.drop_null() if arr.null_count else arr
        if not len(valid):
            return
        if pa.types.is_boolean(t):
            self.values.update(_buffer(valid.cast(pa.uint8()), 1))
        elif pa.types.is_string(t) or pa.types.is_binary(t):
            offsets = np.frombuffer(valid.buffers()[1], dtype="<i4")[
                valid.offset : valid.offset + len(valid) + 1
            ]
            self.values.update(np.diff(offsets).astype(_INT64).data)
            if offsets[-1] > offsets[0]:
                self.data.update(memoryview(valid.buffers()[2])[offsets[0] : offsets[-1]])
        elif pa.types.is_floating(t):
            if pc.any(pc.is_nan(valid)).as_py():
                valid = pc.if_else(pc.is_nan(valid), pa.scalar(float("nan"), t), valid)
            self.values.update(_buffer(valid, t.bit_width // 8))
        elif _fixed_width(t):
            self.values.update(_buffer(valid, t.bit_width // 8))
        else:  # unions, extensions: correct but slow
            for value in valid.to_pylist():
                text = repr(value).encode()
                self.values.update(len(text).to_bytes(8, "little"))
                self.data.update(text)

    def digests(self) -> Iterator[str]:
        yield self.path
        yield str(self.rows)
        for h in (self.nulls, self.values, self.data):
            yield h.hexdigest()
        for child in self.children:
            yield from child.digests()


def _list_values_type(t: Any) -> Any:
    if pa.types.is_map(t):
        return pa.struct([pa.field("key", t.key_type), pa.field("value", t.item_type)])
    return t.value_type


def _list_values(arr: Any) -> Any:
    """The values of a list or map array without nulls, at its offset, flattened."""
    if pa.types.is_map(arr.type):  # keys and items are the whole child arrays: cut them
        first, last = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
        return pa.StructArray.from_arrays(
            [arr.keys.slice(first, last - first), arr.items.slice(first, last - first)],
            names=["key", "value"],
        )
    return arr.flatten()


def _fixed_width(t: Any) -> bool:
    try:
        return bool(t.bit_width % 8 == 0)
    except ValueError:  # not a fixed-width type
        return False


def _buffer(arr: Any, width: int) -> memoryview:
    """The value bytes of a fixed-width array without nulls, at its offset."""
    return memoryview(arr.buffers()[1])[arr.offset * width : (arr.offset + len(arr)) * width]


def _int64(arr: Any) -> memoryview:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=_INT64).data


class ContentHasher:
    """Hash a table's logical content as its record batches stream by.

    Args:
        schema: The table's Arrow schema; types are canonicalised (:func:`canonical_type`).

    Example:
        >>> h = ContentHasher(table.schema)  # doctest: +SKIP
        >>> for batch in table.to_batches(): h.update(batch)  # doctest: +SKIP
        >>> h.hexdigest()  # doctest: +SKIP
    """

    def __init__(self, schema: Any) -> None:
        self._names = list(schema.names)
        self._columns = [_Column(f.name, canonical_type(f.type)) for f in schema]
        self.rows = 0

    def update(self, batch: Any) -> None:
        """Add the rows of a ``RecordBatch`` or ``Table`` whose columns are those of the schema."""
        if list(batch.schema.names) != self._names:
            batch = batch.select(self._names)
        for column, values in zip(self._columns, batch.columns, strict=True):
            column.update(values)
        self.rows += batch.num_rows

    def hexdigest(self) -> str:
        """The content hash (64 hex digits) of the rows added so far."""
        header = {
            "format": CONTENT_HASH_FORMAT,
            "rows": self.rows,
            "columns": [[c.path, str(c.type)] for c in self._columns],
        }
        outer = hashlib.sha256(json.dumps(header, separators=(",", ":")).encode())
        for column in self._columns:
            for part in column.digests():
                outer.update(part.encode() + b"\n")
        return outer.hexdigest()


def content_hash_of_parquet(handle: BinaryIO | str, *, batch_size: int = 65_536) -> str:
    """The content hash of a Parquet file, read a batch at a time (bounded memory)."""
    file = pq.ParquetFile(handle)
    hasher = ContentHasher(file.schema_arrow)
    for batch in file.iter_batches(batch_size=batch_size):
        hasher.update(batch)
    return hasher.hexdigest()
