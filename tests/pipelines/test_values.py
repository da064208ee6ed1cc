"""Values between steps: a DataFrame's canonical bytes (hashed) and stored bytes (the same, or
compressed) read back as the same frame; values stored by earlier versions (zstd-compressed
Arrow) read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
from pyarrow import ipc

from civicml.pipelines.values import StoredValue, deserialize, encode, load_value, store_value
from civicml.store.artifacts import LocalArtifactStore


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"age": [30.0, 41.0, None, 57.0] * 50, "region": ["north", "south", "east", "west"] * 50},
        index=range(100, 300),
    )


def test_a_frame_is_stored_as_its_canonical_bytes_or_compressed(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    frame = _frame()
    encoded = encode(frame, "make", "frame")
    packed = encode(frame, "make", "frame", compress=True)

    assert encoded.kind == "arrow"
    assert encoded.sha256 == hashlib.sha256(encoded.canonical).hexdigest()
    assert encode(frame.copy(), "make", "frame").canonical == encoded.canonical  # stable
    assert encoded.stored_bytes() == encoded.canonical
    assert packed.sha256 == encoded.sha256  # how it is stored is not what it is
    assert len(packed.stored_bytes()) < len(packed.canonical)
    pd.testing.assert_frame_equal(encoded.value(), frame)
    pd.testing.assert_frame_equal(deserialize("arrow", packed.stored_bytes()), frame)

    plain = store_value(store, frame, "make", "frame")
    small = store_value(store, frame, "make", "frame", compress=True)
    assert plain.digest == plain.sha256 == small.sha256  # cache keys use the canonical content
    assert small.digest == hashlib.sha256(packed.stored_bytes()).hexdigest() != small.sha256
    assert small.size < plain.size
    pd.testing.assert_frame_equal(load_value(store, plain), frame)
    pd.testing.assert_frame_equal(load_value(store, small), frame)


def test_json_is_stored_as_its_canonical_bytes(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    stored = store_value(store, {"b": [1, 2], "a": None}, "make", "summary")

    assert stored.kind == "json" and stored.digest == stored.sha256
    assert store.read_bytes(stored.digest) == b'{"a":null,"b":[1,2]}'


def test_a_zstd_compressed_frame_stored_by_an_earlier_version_reads(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    frame = _frame()
    table = pa.Table.from_pandas(frame, preserve_index=True)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as out:
        out.write_table(table)
    data = sink.getvalue().to_pybytes()
    put = store.put_bytes(data)
    old = StoredValue("arrow", put.digest, hashlib.sha256(data).hexdigest(), len(data))

    pd.testing.assert_frame_equal(load_value(store, old), frame)
