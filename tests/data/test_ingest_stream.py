"""Ingesting an Arrow stream (what a batch job writes) and the writer's per-column compression."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from civicml.core.errors import NotFoundError
from civicml.data import DatasetService
from civicml.governance import ProjectService
from civicml.store import Context
from tests.data.helpers import PROJECT

ROWS = 150_000


@pytest.fixture
def svc(ctx: Context) -> DatasetService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx)


def _table() -> Any:
    rng = np.random.default_rng(3)
    return pa.table(
        {
            "score": rng.random(ROWS),  # random doubles: zstd does not shrink them
            "income": rng.integers(0, 200, ROWS) * 250.0,  # rounded: it does
            "region": pa.array(rng.choice(["north", "south", "east"], ROWS)),
            "note": pa.array([None if i % 7 else f"n{i}" for i in range(ROWS)]),
        }
    )


def test_a_stream_is_the_version_and_profile_of_the_same_table(svc: DatasetService) -> None:
    table = _table()
    batches = table.to_batches(max_chunksize=20_000)
    stream = pa.RecordBatchReader.from_batches(table.schema, iter(batches))
    streamed = svc.ingest(PROJECT, "streamed", stream)
    # the same batches as a table: profiled on the caller's thread, not the writer's
    whole = svc.ingest(PROJECT, "whole", pa.Table.from_batches(batches))
    assert streamed.content_hash == whole.content_hash
    assert streamed.row_count == ROWS
    assert streamed.profile == whole.profile
    assert svc.read(streamed).equals(table)


def test_a_stream_that_fails_leaves_no_version_and_no_temp_file(
    svc: DatasetService, ctx: Context
) -> None:
    table = _table()

    def failing() -> Iterator[Any]:
        yield from table.to_batches(max_chunksize=70_000)[:2]  # a row group is written
        raise RuntimeError("the model failed on chunk 3")

    stream = pa.RecordBatchReader.from_batches(table.schema, failing())
    with pytest.raises(RuntimeError, match="chunk 3"):
        svc.ingest(PROJECT, "broken", stream)
    with pytest.raises(NotFoundError):
        svc.get_dataset(PROJECT, "broken")
    assert not list((ctx.artifacts.root / "tmp").glob("*.part"))


def test_the_writer_compresses_only_the_columns_zstd_shrinks(svc: DatasetService) -> None:
    v = svc.ingest(PROJECT, "mixed", _table())
    with svc.open(v) as handle:
        meta = pq.ParquetFile(handle).metadata
    codecs = {
        meta.schema.column(i).name: meta.row_group(0).column(i).compression
        for i in range(meta.num_columns)
    }
    assert codecs == {
        "score": "UNCOMPRESSED",
        "income": "ZSTD",
        "region": "ZSTD",
        "note": "ZSTD",
    }
    nested = pa.table(
        {"score": pa.array(np.random.default_rng(4).random(1000)), "tags": [[1]] * 1000}
    )
    v = svc.ingest(PROJECT, "nested", nested)  # one codec for every leaf column
    with svc.open(v) as handle:
        meta = pq.ParquetFile(handle).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}


def test_integer_dates_and_timestamps_are_delta_encoded_where_it_pays(svc: DatasetService) -> None:
    rng = np.random.default_rng(9)
    n = 100_000
    table = pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "age": pa.array(rng.integers(18, 90, n), pa.int64(), mask=rng.random(n) < 0.1),
            "day": pa.array(rng.integers(18_000, 20_000, n).astype("int32"), pa.date32()),
            "at": pa.array(rng.integers(1.6e9, 1.7e9, n) * 1000, pa.timestamp("ms")),
            # codes that jump between a few far-apart values: zstd beats deltas
            "code": pa.array(rng.choice([7, 9_000_000_000, 12, 4_000_000_000_000], n), pa.int64()),
        }
    )
    v = svc.ingest(PROJECT, "deltas", table)
    with svc.open(v) as handle:
        file = pq.ParquetFile(handle)
        meta = file.metadata
        back = file.read()
    columns = {meta.schema.column(i).name: meta.row_group(0).column(i) for i in range(5)}
    for name in ("id", "age", "day", "at"):
        assert "DELTA_BINARY_PACKED" in columns[name].encodings, name
        assert columns[name].compression == "UNCOMPRESSED", name
    assert "DELTA_BINARY_PACKED" not in columns["code"].encodings
    assert columns["code"].compression == "ZSTD"
    assert back.equals(table)
    assert columns["id"].total_compressed_size < 8 * n / 50  # a counter takes next to nothing


def test_writing_needs_a_file_or_a_store() -> None:
    import pandas as pd

    from civicml.data.ingest import open_source, write_canonical

    with pytest.raises(ValueError, match="destination file or a store"):
        write_canonical(open_source(pd.DataFrame({"a": [1]}), None), None)
