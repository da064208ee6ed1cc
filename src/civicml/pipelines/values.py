"""Values passed between steps, stored as data — never pickle.

JSON-able values are stored as canonical JSON, pandas DataFrames as Arrow IPC files
(uncompressed, or zstd-compressed for a step declared ``compress=True``: far faster to write than
Parquet, for data that lives between two steps; values stored as Parquet or compressed by
earlier versions still read) and civicml records
that have ids (dataset versions, model versions, runs) as their JSON. Each stored value is
content-addressed in the artifact store.

A value has two forms (:class:`Encoded`): its **canonical bytes** — canonical JSON, or the
DataFrame as an *uncompressed* Arrow IPC file — whose SHA-256 goes into the cache keys of the
steps that read it, and its **stored bytes**, what the artifact store keeps (the same bytes, or
the Arrow IPC file compressed). A NumPy float column is written as it is, a NaN as a NaN, not a
null: it reads back the same, without a scan of every value on the way in (cache keys of frames
with float columns differ from those of earlier versions: such a step runs once more).

So a pipeline hashes a step's output and hands it to the next step at once (decoding the
canonical bytes costs next to nothing), while writing it durably — and compressing it, for a
step declared so — overlaps the next step (:mod:`civicml.pipelines.service`).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from typing import Any

from civicml.core.errors import InvalidInputError
from civicml.pipelines.dsl import canonical_json, is_jsonable
from civicml.store.artifacts import ArtifactStore

__all__ = ["Encoded", "StoredValue", "encode", "load_value", "persist", "store_value"]

#: A compressed DataFrame (``@step(compress=True)``): zstd level 1, on one thread (it is written
#: while the next step runs and must leave it the other cores). Not the default: on the pipeline
#: benchmark's frames (random floats) it saves 20 % of the bytes for 35 ms of CPU per 10 MB, a
#: fifth of what the steps themselves compute; LZ4 saves 10-15 % for 13 ms.
_ZSTD = ("zstd", 1)

# kind -> (module, class): civicml records stored as their JSON.
_RECORDS = {
    "dataset_version": ("civicml.data.schemas", "DatasetVersion"),
    "model_version": ("civicml.registry.schemas", "ModelVersion"),
    "run": ("civicml.tracking.schemas", "Run"),
}


@dataclass(frozen=True, slots=True)
class StoredValue:
    """Where one output value is: its kind, artifact digest (of the stored bytes) and content
    hash (``sha256``, of the canonical bytes: what cache keys use)."""

    kind: str
    digest: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "digest": self.digest, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StoredValue:
        return cls(str(doc["kind"]), str(doc["digest"]), str(doc["sha256"]), int(doc["size"]))


@dataclass(frozen=True, slots=True)
class Encoded:
    """A value a step returned, serialized: ``canonical`` bytes (hashed: ``sha256``) and, for
    a DataFrame, its Arrow table (written compressed by :meth:`stored_bytes`). A DataFrame's
    bytes are a read-only view of the Arrow buffer they were written to, never copied."""

    kind: str
    canonical: bytes | memoryview
    sha256: str
    table: Any = None  # a pyarrow.Table for kind "arrow"
    compress: bool = False

    def stored_bytes(self) -> bytes | memoryview:
        """What the artifact store keeps: the canonical bytes, or for a DataFrame to compress
        its Arrow IPC file zstd-compressed."""
        if self.kind != "arrow" or self.table is None or not self.compress:
            return self.canonical
        return _ipc_file(self.table, compression=_ZSTD)

    def value(self) -> Any:
        """A fresh copy of the value, exactly as reading it back from the store gives it."""
        return deserialize(self.kind, self.canonical)


def encode(value: Any, step: str, output: str, *, compress: bool = False) -> Encoded:
    """Serialize a value a step returned and hash its canonical bytes (``compress``: store a
    DataFrame compressed).

    Raises:
        InvalidInputError: The value is of a type civicml does not store (it never pickles).
    """
    kind, data, table = _serialize(value, step, output)
    return Encoded(kind, data, hashlib.sha256(data).hexdigest(), table, compress)


def serialize(value: Any, step: str, output: str) -> tuple[str, bytes | memoryview]:
    """``(kind, canonical bytes)`` for a value a step returned.

    Raises:
        InvalidInputError: The value is of a type civicml does not store (it never pickles).
    """
    kind, data, _table = _serialize(value, step, output)
    return kind, data


def _serialize(value: Any, step: str, output: str) -> tuple[str, bytes | memoryview, Any]:
    for kind, (module_name, class_name) in _RECORDS.items():
        module = sys.modules.get(module_name)  # an instance's class is always imported
        if module is not None and isinstance(value, getattr(module, class_name)):
            return kind, canonical_json(json.loads(value.model_dump_json())), None
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        table = _arrow_table(value)
        return "arrow", _ipc_file(table, compression=None), table
    if is_jsonable(value):
        return "json", canonical_json(value), None
    raise InvalidInputError(
        f"Step {step!r} returned a {type(value).__module__}.{type(value).__qualname__} as "
        f"{output!r}, which civicml cannot store as data (it never pickles).",
        hint="Return JSON data (dict, list, str, number, bool, None), a pandas DataFrame, or a "
        "civicml DatasetVersion, ModelVersion or Run.",
    )


def _ipc_file(table: Any, *, compression: tuple[str, int] | None) -> memoryview:
    """The table as an Arrow IPC file, uncompressed or compressed with ``(codec, level)`` (on
    the calling thread only): a view of the buffer Arrow wrote it to (no copy of its tens of
    megabytes; the view keeps the buffer alive)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    from pyarrow import ipc

    codec = None if compression is None else pa.Codec(*compression)
    options = ipc.IpcWriteOptions(compression=codec, use_threads=False)
    if codec is not None:
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema, options=options) as out:
            out.write_table(table)
        return memoryview(sink.getvalue())
    # Uncompressed, the file's size is known before writing it (a dry run that copies nothing):
    # one buffer of that size, written once, instead of a growing one copied as it doubles.
    sizer = pa.MockOutputStream()
    with ipc.new_file(sizer, table.schema, options=options) as out:
        out.write_table(table)
    buffer = pa.allocate_buffer(sizer.size())
    with ipc.new_file(pa.FixedSizeBufferWriter(buffer), table.schema, options=options) as out:
        out.write_table(table)
    return memoryview(buffer)


def _arrow_table(frame: Any) -> Any:
    """The DataFrame as an Arrow table with its pandas metadata (index, column labels, dtypes),
    as ``pyarrow.Table.from_pandas`` makes it, but with NumPy float columns taken as they are:
    a NaN stays a NaN (``from_pandas`` scans every float for NaN to mark it null, the larger
    part of its cost) and the column's buffer is not copied. Reading it back gives the same
    frame either way. Frames whose column labels are not unique strings take the plain path.
    """
    import numpy as np
    import pyarrow as pa

    names = frame.columns.tolist()
    dtypes = frame.dtypes.tolist()
    floats = {
        i for i, dtype in enumerate(dtypes) if isinstance(dtype, np.dtype) and dtype.kind == "f"
    }
    simple = frame.columns.nlevels == 1 and all(type(n) is str for n in names)
    if not floats or not simple or len(set(names)) != len(names):
        return pa.Table.from_pandas(frame, preserve_index=True)
    others = [names[i] for i in range(len(names)) if i not in floats]
    rest = pa.Table.from_pandas(frame[others], preserve_index=True)  # the index goes last
    if rest.num_rows != len(frame):  # no other column, and a RangeIndex: no rows to count
        return pa.Table.from_pandas(frame, preserve_index=True)
    meta = json.loads(rest.schema.metadata[b"pandas"])
    fields, arrays, described = [], [], []
    kept = iter(zip(rest.schema, rest.columns, meta["columns"], strict=False))
    for i, name in enumerate(names):
        if i in floats:
            array = pa.array(frame[name].to_numpy(), from_pandas=False)
            fields.append(pa.field(name, array.type))
            arrays.append(array)
            kind = str(dtypes[i])  # what from_pandas writes of a float column
            described.append(
                {
                    "name": name,
                    "field_name": name,
                    "pandas_type": kind,
                    "numpy_type": kind,
                    "metadata": None,
                }
            )
        else:
            field_, column, entry = next(kept)
            fields.append(field_)
            arrays.append(column)
            described.append(entry)
    for field_, column, entry in kept:  # the index columns, when not a RangeIndex
        fields.append(field_)
        arrays.append(column)
        described.append(entry)
    meta["columns"] = described
    metadata = {**rest.schema.metadata, b"pandas": json.dumps(meta).encode("utf-8")}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def deserialize(kind: str, data: bytes | memoryview) -> Any:
    """The value stored as ``(kind, data)``."""
    if kind == "json":
        return json.loads(bytes(data))
    if kind == "arrow":
        import pyarrow as pa
        from pyarrow import ipc

        return ipc.open_file(pa.py_buffer(data)).read_all().to_pandas()
    if kind == "parquet":  # DataFrames stored by earlier civicml versions
        import pandas  # type: ignore[import-untyped]

        return pandas.read_parquet(io.BytesIO(data), engine="pyarrow")
    if kind in _RECORDS:
        import importlib

        module_name, class_name = _RECORDS[kind]
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls.model_validate_json(bytes(data))
    raise InvalidInputError(f"Stored pipeline value kind {kind!r} is not known.")


def store_value(
    store: ArtifactStore, value: Any, step: str, output: str, *, compress: bool = False
) -> StoredValue:
    """Serialize ``value`` and put it in the artifact store (durable when this returns)."""
    return persist(store, encode(value, step, output, compress=compress))


def persist(store: ArtifactStore, encoded: Encoded) -> StoredValue:
    """Put an encoded value's stored bytes in the artifact store (durable when this returns).
    Stored as they were hashed (not compressed), they are not hashed a second time."""
    data = encoded.stored_bytes()
    stored = store.put_bytes(data, sha256=encoded.sha256 if data is encoded.canonical else None)
    return StoredValue(encoded.kind, stored.digest, encoded.sha256, stored.size)


def load_value(store: ArtifactStore, ref: StoredValue) -> Any:
    """Read a stored value back (verified against its digest by the store)."""
    return deserialize(ref.kind, store.read_bytes(ref.digest))
