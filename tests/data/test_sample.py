"""The rows a personal-data scan looks at (``civicml.data._sample``): gathered while an ingest
writes them, they are the rows a scan of the stored file reads, and the ingest's scan does not
read its own file again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from civicml.data import DatasetService
from civicml.data import personal as personal_module
from civicml.data._sample import RowSample, sample_size, sample_stride
from civicml.data.personal import PersonalDataService
from civicml.governance import ProjectService
from civicml.store import Context


@pytest.mark.parametrize(
    ("rows", "limit", "stride"),
    [(1, 10, 1), (10, 10, 1), (11, 10, 2), (20, 10, 2), (21, 10, 4), (1_000_000, 10_000, 128)],
)
def test_the_stride_is_the_smallest_power_of_two_within_the_limit(
    rows: int, limit: int, stride: int
) -> None:
    assert sample_stride(rows, limit) == stride
    size = sample_size(rows, limit)
    assert size == len(range(0, rows, stride)) <= limit
    assert rows <= limit or size > limit // 2


@pytest.mark.parametrize(
    ("rows", "limit", "most"),
    [
        (7, 10, 700),
        (10, 10, 700),
        (11, 10, 700),
        (5_003, 100, 700),
        (4_096, 64, 700),
        (20_000, 1_000, 12),  # many small batches: their parts are joined
    ],
)
def test_rows_gathered_batch_by_batch_are_every_stride_th_row(
    rows: int, limit: int, most: int
) -> None:
    rng = np.random.default_rng(rows)
    schema = pa.schema([("n", pa.int64()), ("s", pa.string()), ("skip", pa.float64())])
    sample = RowSample(schema, ["n", "s"], limit)
    start = 0
    while start < rows:  # batches of random sizes, some of one row
        size = min(rows - start, int(rng.integers(1, most)))
        n = pa.array(range(start, start + size), pa.int64())
        s = pa.array([f"v{i}" for i in range(start, start + size)])
        sample.update(pa.record_batch([n, s, pa.array(np.zeros(size))], schema=schema))
        start += size
    table = sample.table()
    stride = sample_stride(rows, limit)
    assert table.column_names == ["n", "s"]
    assert table["n"].to_pylist() == list(range(0, rows, stride))
    assert table["s"].to_pylist() == [f"v{i}" for i in range(0, rows, stride)]
    assert sample.rows == rows and table.num_rows == sample_size(rows, limit)


def test_a_sample_of_no_columns_counts_its_rows() -> None:
    schema = pa.schema([("x", pa.float64())])
    sample = RowSample(schema, [], 10)
    for _ in range(3):
        sample.update(pa.record_batch([pa.array(np.zeros(9))], schema=schema))

    assert (sample.table().num_columns, sample.table().num_rows) == (0, sample_size(27, 10))


def _people(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "person_id": np.arange(rows),
            "email": [f"user{i}@example.org" if i % 3 else f"note {i}" for i in range(rows)],
            "phone": [f"+44 20 7946 {i % 10_000:04d}" for i in range(rows)],
            "income": rng.normal(30_000, 5_000, rows),
            "applied": pd.date_range("2024-01-01", periods=rows, freq="min"),
            "region": rng.choice(["north", "south"], rows),
        }
    )


@pytest.mark.parametrize("limit", [100, 5_000])
def test_the_ingest_scan_looks_at_the_rows_a_scan_of_the_file_reads(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    ctx = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"datasets_pii_scan_rows": limit})
    )
    ProjectService(ctx).create("sampled")
    read: list[Any] = []
    sample = personal_module._sample

    def spy(path: Path, rows: int, limit: int, skip: Any = ()) -> Any:
        read.append(rows)
        return sample(path, rows, limit, skip)

    monkeypatch.setattr(personal_module, "_sample", spy)
    frame = _people(3_001)

    version = DatasetService(ctx).ingest("sampled", "people", frame, chunk_bytes=4_096)
    scans = PersonalDataService(ctx)
    at_ingest = scans.report(version)
    assert read == []  # the ingest scanned the rows it kept while writing
    again = scans.scan(version)  # reads the stored file

    assert read == [3_001]
    assert at_ingest.rows_scanned == again.rows_scanned == sample_size(3_001, limit)
    keep = {"id", "created_at", "trigger"}
    assert at_ingest.model_dump(exclude=keep) == again.model_dump(exclude=keep)
    assert {f.column for f in at_ingest.findings} >= {"email", "phone"}


@pytest.mark.parametrize(("rows", "limit"), [(2_500, 100), (2_500, 2_500), (1_000, 64)])
def test_a_scan_of_a_file_reads_every_stride_th_row_across_row_groups(
    tmp_path: Path, rows: int, limit: int
) -> None:
    import pyarrow.parquet as pq

    table = pa.table({"email": [f"u{i}@example.org" for i in range(rows)], "x": np.arange(rows)})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=333)  # groups that do not line up with the stride

    schema, got = personal_module._sample(path, rows, limit)

    assert schema.names == ["email", "x"] and got.column_names == ["email"]  # x: not looked at
    step = sample_stride(rows, limit)
    assert got["email"].to_pylist() == [f"u{i}@example.org" for i in range(0, rows, step)]
