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
