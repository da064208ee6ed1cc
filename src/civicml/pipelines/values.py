"""Values passed between steps, stored as data — never pickle.

JSON-able values are stored as canonical JSON, pandas DataFrames as Arrow IPC files (zstd
compressed: about five times faster to write than Parquet, for data that lives between two
steps; values stored as Parquet by earlier versions still read) and civicml records
that have ids (dataset versions, model versions, runs) as their JSON. Each stored value is
content-addressed in the artifact store; its SHA-256 (of the serialized bytes) goes into the
cache keys of the steps that read it.
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

__all__ = ["StoredValue", "load_value", "store_value"]

# kind -> (module, class): civicml records stored as their JSON.
_RECORDS = {
    "dataset_version": ("civicml.data.schemas", "DatasetVersion"),
    "model_version": ("civicml.registry.schemas", "ModelVersion"),
    "run": ("civicml.tracking.schemas", "Run"),
}


@dataclass(frozen=True, slots=True)
class StoredValue:
    """Where one output value is: its kind, artifact digest and content hash."""

    kind: str
    digest: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "digest": self.digest, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StoredValue:
        return cls(str(doc["kind"]), str(doc["digest"]), str(doc["sha256"]), int(doc["size"]))


def serialize(value: Any, step: str, output: str) -> tuple[str, bytes]:
    """``(kind, bytes)`` for a value a step returned.

    Raises:
        InvalidInputError: The value is of a type civicml does not store (it never pickles).
    """
    for kind, (module_name, class_name) in _RECORDS.items():
        module = sys.modules.get(module_name)  # an instance's class is always imported
        if module is not None and isinstance(value, getattr(module, class_name)):
            return kind, canonical_json(json.loads(value.model_dump_json()))
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        import pyarrow as pa  # type: ignore[import-untyped]
        from pyarrow import ipc

        table = pa.Table.from_pandas(value, preserve_index=True)
        sink = pa.BufferOutputStream()
        options = ipc.IpcWriteOptions(compression="zstd")
        with ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        return "arrow", sink.getvalue().to_pybytes()
    if is_jsonable(value):
        return "json", canonical_json(value)
    raise InvalidInputError(
        f"Step {step!r} returned a {type(value).__module__}.{type(value).__qualname__} as "
        f"{output!r}, which civicml cannot store as data (it never pickles).",
        hint="Return JSON data (dict, list, str, number, bool, None), a pandas DataFrame, or a "
        "civicml DatasetVersion, ModelVersion or Run.",
    )


def deserialize(kind: str, data: bytes) -> Any:
    """The value stored as ``(kind, data)``."""
    if kind == "json":
        return json.loads(data)
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
        return cls.model_validate_json(data)
    raise InvalidInputError(f"Stored pipeline value kind {kind!r} is not known.")


def store_value(store: ArtifactStore, value: Any, step: str, output: str) -> StoredValue:
    """Serialize ``value`` and put it in the artifact store."""
    kind, data = serialize(value, step, output)
    stored = store.put_bytes(data)
    return StoredValue(kind, stored.digest, hashlib.sha256(data).hexdigest(), len(data))


def load_value(store: ArtifactStore, ref: StoredValue) -> Any:
    """Read a stored value back (verified against its digest by the store)."""
    return deserialize(ref.kind, store.read_bytes(ref.digest))
