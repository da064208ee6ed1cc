"""Values between steps: a DataFrame's canonical bytes (hashed) and stored bytes (the same, or
compressed) read back as the same frame; values stored by earlier versions (zstd-compressed
Arrow) read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
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


def _frames() -> dict[str, pd.DataFrame]:
    gaps = [1.5, None, -0.0, 4.25]
    return {
        "range index": pd.DataFrame(
            {"age": gaps, "region": ["n", "s", None, "w"], "n": [1, 2, 3, 4]},
            index=range(10, 50, 10),
        ),
        "named index": pd.DataFrame(
            {"n": [1, 2, 3, 4], "age": gaps}, index=pd.Index(list("abcd"), name="key")
        ),
        "multi-index": pd.DataFrame(
            {"age": gaps, "f32": pd.array([1, 2, 3, 4], dtype="float32")},
            index=pd.MultiIndex.from_product([[1, 2], ["x", "y"]], names=["a", "b"]),
        ),
        "floats only": pd.DataFrame({"b": gaps, "a": [float("nan")] * 4}),
        "no rows": pd.DataFrame({"age": pd.Series([], dtype=float), "s": pd.Series([], dtype=str)}),
        "nullable floats": pd.DataFrame({"x": pd.array([1.5, None, 2.0, 3.0], dtype="Float64")}),
        "dates and categories": pd.DataFrame(
            {
                "when": pd.to_datetime(["2026-01-01", None, "2026-03-01", "2026-04-01"]),
                "age": gaps,
                "kind": pd.Categorical(["a", "b", "a", "b"]),
            }
        ),
        "integer labels": pd.DataFrame({0: gaps, 1: ["a", "b", "c", "d"]}),
        "every third row of a 2-D array": pd.DataFrame(
            np.asfortranarray(np.arange(30.0).reshape(10, 3)), columns=["x", "y", "z"]
        ).iloc[::3],
    }


def test_frames_read_back_as_they_were_with_the_metadata_from_pandas_writes() -> None:
    for name, frame in _frames().items():
        encoded = encode(frame, "make", "frame")
        table = ipc.open_file(pa.py_buffer(encoded.canonical)).read_all()
        usual = pa.Table.from_pandas(frame, preserve_index=True)

        pd.testing.assert_frame_equal(encoded.value(), usual.to_pandas(), check_exact=True)
        assert table.schema.names == usual.schema.names, name
        assert table.schema.types == usual.schema.types, name
        assert json.loads(table.schema.metadata[b"pandas"]) == json.loads(
            usual.schema.metadata[b"pandas"]
        ), name


def test_a_float_column_keeps_its_nans_as_values_not_nulls() -> None:
    frame = _frames()["range index"]
    encoded = encode(frame, "make", "frame")
    table = ipc.open_file(pa.py_buffer(encoded.canonical)).read_all()

    assert table.column("age").null_count == 0  # stored as NaN: no scan for nulls on the way
    assert table.column("region").null_count == 1  # other types as from_pandas makes them
    assert encode(frame.copy(), "make", "frame").sha256 == encoded.sha256
    back = encoded.value()
    assert back["age"].isna().tolist() == [False, True, False, False]
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
