"""Finding a subject: typed comparison over Parquet batches and capture lines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from civicml.privacy._scan import count_rows, drop_lines, line_matches, write_without


def _parquet(table: pa.Table) -> io.BytesIO:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=2)
    out.seek(0)
    return out


def test_values_compare_in_the_columns_type(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 7, 7, None, 70], pa.int64()),
            "score": [1.5, 7.0, 2.0, 7.0, None],
            "code": ["7", "07", None, "7", "x"],
            "day": pa.array([0, 1, 2, 3, 4], pa.int32()).cast(pa.date32()),
        }
    )
    assert count_rows(_parquet(table), "id", "7") == 2
    assert count_rows(_parquet(table), "id", "seven") == 0  # not a number: nobody
    assert count_rows(_parquet(table), "score", "7") == 2
    assert count_rows(_parquet(table), "code", "7") == 2  # text as text: "07" is not "7"
    assert count_rows(_parquet(table), "day", "1970-01-02") == 1
    target = tmp_path / "out.parquet"
    assert write_without(_parquet(table), "id", "7", target) == 3
    kept = pq.read_table(target)
    assert kept.column("id").to_pylist() == [1, None, 70]
    assert kept.schema == table.schema


def test_capture_lines() -> None:
    def line(record: dict[str, object]) -> bytes:
        data = json.dumps(record)
        return json.dumps(
            {"captureData": {"endpointInput": {"data": data}}, "eventMetadata": {}}
        ).encode()

    data = b"\n".join([line({"id": 7}), line({"id": 8}), line({"id": "7"}), b"not json"]) + b"\n"
    assert line_matches(line({"id": 7.0}), "id", "7")
    assert not line_matches(line({"other": 7}), "id", "7")
    kept, dropped = drop_lines(data, "id", "7")
    assert dropped == 2 and kept.count(b"\n") == 2 and b'\\"id\\": 8' in kept


def test_the_local_store_deletes_an_object_once(tmp_path: Path) -> None:
    from civicml.store.artifacts import LocalArtifactStore

    store = LocalArtifactStore(tmp_path / "artifacts")
    digest = store.put_bytes(b"resident data").digest
    assert store.delete(digest) is True and not store.exists(digest)
    assert store.delete(digest) is False
