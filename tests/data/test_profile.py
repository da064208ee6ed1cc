"""Column profiles checked against pandas, and the bounded-memory streaming of large files."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from civicml.data import ColumnKind, DatasetService
from civicml.data.profile import RESERVOIR_SIZE
from civicml.governance import ProjectService
from civicml.store import Context
from tests.data.helpers import PROJECT


@pytest.fixture
def svc(ctx: Context) -> DatasetService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx)


def _sample(rows: int = 5000) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    income = rng.lognormal(7, 0.5, rows)
    income[rng.random(rows) < 0.1] = np.nan
    region = rng.choice(
        ["north", "south", "east", "west", "islands"], rows, p=[0.4, 0.3, 0.2, 0.07, 0.03]
    )
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": income,
            "region": pd.Series(region, dtype=object).where(rng.random(rows) > 0.05, None),
            "eligible": rng.random(rows) < 0.3,
            "applied": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 365, rows), "D"),
        }
    )


def test_profile_matches_pandas(svc: DatasetService, tmp_path: Path) -> None:
    df = _sample()
    path = tmp_path / "s.csv"
    df.to_csv(path, index=False)
    v = svc.ingest(PROJECT, "s", path, chunk_bytes=16 << 10)  # many chunks
    prof = {p.name: p for p in v.profile}
    back = pd.read_csv(path)
    for name in ("age", "income"):
        p, col = prof[name], back[name]
        assert p.kind is ColumnKind.NUMERIC
        assert (p.count, p.missing) == (int(col.count()), int(col.isna().sum()))
        assert p.min == pytest.approx(col.min()) and p.max == pytest.approx(col.max())
        assert p.mean == pytest.approx(col.mean(), rel=1e-9)
        assert p.std == pytest.approx(col.std(), rel=1e-9)
        assert p.quantiles_exact is True
        expected = col.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).to_list()
        assert list((p.quantiles or {}).values()) == pytest.approx(expected)
    assert isinstance(prof["age"].min, int)
    region = prof["region"]
    counts = back["region"].value_counts()
    assert region.kind is ColumnKind.CATEGORICAL and region.distinct_exact
    assert (region.distinct, region.missing) == (len(counts), int(back["region"].isna().sum()))
    assert [(t.value, t.count) for t in region.top or []] == list(counts.items())
    eligible = prof["eligible"]
    assert (eligible.true_count, eligible.false_count) == (
        int(df["eligible"].sum()),
        int((~df["eligible"]).sum()),
    )
    assert eligible.mean == pytest.approx(df["eligible"].mean())
    applied = prof["applied"]
    assert applied.kind is ColumnKind.DATETIME
    assert applied.type == "date32[day]"  # pandas wrote dates without a time
    assert applied.min == df["applied"].min().date().isoformat()
    assert applied.max == df["applied"].max().date().isoformat()


def test_quantiles_beyond_the_reservoir_are_close(svc: DatasetService) -> None:
    values = np.random.default_rng(3).uniform(0, 1000, RESERVOIR_SIZE * 5)
    v = svc.ingest(PROJECT, "u", pd.DataFrame({"x": values}), chunk_bytes=64 << 10)
    p = v.profile[0]
    assert p.quantiles_exact is False
    assert p.mean == pytest.approx(values.mean()) and p.std == pytest.approx(values.std(ddof=1))
    expected = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert list((p.quantiles or {}).values()) == pytest.approx(expected, abs=1000 * 0.02)


def test_high_cardinality_categories_stay_bounded(svc: DatasetService) -> None:
    ids = [f"id-{i}" for i in range(120_000)]
    v = svc.ingest(PROJECT, "ids", pd.DataFrame({"id": ids}), chunk_bytes=256 << 10)
    p = v.profile[0]
    assert p.distinct_exact is False
    assert p.distinct == pytest.approx(120_000, rel=0.1)  # k-minimum-values estimate


def test_nan_counts_as_missing_and_infinity_is_no_mean(svc: DatasetService) -> None:
    df = pd.DataFrame({"x": [1.0, np.nan, np.inf, 2.0], "n": [None, None, None, None]})
    v = svc.ingest(PROJECT, "f", df)
    x, n = v.profile
    assert (x.count, x.missing, x.max, x.mean) == (3, 1, None, None)
    assert (n.kind, n.count, n.missing) == (ColumnKind.OTHER, 0, 4)


def _write_big_csv(path: Path, target_bytes: int) -> None:
    rng = np.random.default_rng(11)
    with open(path, "w") as out:
        out.write("id,amount,score,region,flag\n")
        written = 0
        start = 0
        while written < target_bytes:
            n = 50_000
            chunk = pd.DataFrame(
                {
                    "id": np.arange(start, start + n),
                    "amount": rng.normal(1000, 250, n).round(2),
                    "score": rng.random(n).round(4),
                    "region": rng.choice(["north", "south", "east", "west"], n),
                    "flag": rng.random(n) < 0.5,
                }
            )
            text = chunk.to_csv(index=False, header=False)
            out.write(text)
            written += len(text)
            start += n


def test_large_csv_streams_in_bounded_memory(
    svc: DatasetService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civicml.data import _pipeline

    # The Parquet file's bytes wait for the store's thread in Python objects, up to the
    # BackgroundPut's budget: on a loaded machine the store lags and they add up (5.6 MB seen
    # in CI), bounded all the same. Counted, so the bound below is for everything else.
    in_flight = 0
    real_write = _pipeline.BackgroundPut.write

    def write(self: _pipeline.BackgroundPut, data: object) -> None:
        nonlocal in_flight
        real_write(self, data)
        in_flight = max(in_flight, self._held)

    monkeypatch.setattr(_pipeline.BackgroundPut, "write", write)
    path = tmp_path / "big.csv"
    _write_big_csv(path, 20 << 20)
    size = path.stat().st_size
    peak_arrow = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak_arrow
        while not done.wait(0.002):
            peak_arrow = max(peak_arrow, pa.total_allocated_bytes())

    watcher = threading.Thread(target=watch)
    # The checks after ingestion (personal-data scan, expectations) import DuckDB and compile
    # their report templates once per process: load them first, so the peak is the streaming.
    import civicml.data.checks
    import civicml.data.personal
    import civicml.data.quality  # noqa: F401

    base_arrow = pa.total_allocated_bytes()
    tracemalloc.start()
    watcher.start()
    try:
        v = svc.ingest(PROJECT, "big", path, chunk_bytes=256 << 10)
        _, peak_python = tracemalloc.get_traced_memory()
    finally:
        done.set()
        watcher.join()
        tracemalloc.stop()
    assert v.row_count > 400_000
    # Memory is one read chunk plus one Parquet row group (ROW_GROUP_ROWS rows), whatever the
    # file size: here about 0.3 MB of Python objects and 12 MB of Arrow buffers for 21 MB.
    assert peak_python < (4 << 20) + in_flight, (peak_python, in_flight, size)
    assert in_flight <= 16 << 20  # the budget
    assert peak_arrow - base_arrow < 16 << 20, (peak_arrow, size)
    assert size > 20 << 20


def _reference_categories(batches: list[list[str]], limit: int) -> tuple[dict[str, int], bool]:
    """The tracked values of one column as the profile defines them, value by value: counts
    in order of first appearance; past ``limit`` values, the ``limit // 2`` most frequent stay
    (ties: the earlier place)."""
    counts: dict[str, int] = {}
    pruned = False
    for batch in batches:
        seen: dict[str, int] = {}
        for value in batch:
            seen[value] = seen.get(value, 0) + 1
        for value, n in seen.items():
            counts[value] = counts.get(value, 0) + n
        if len(counts) > limit:
            kept = sorted(counts.items(), key=lambda kv: -kv[1])[: limit // 2]  # stable
            counts, pruned = dict(kept), True
    return counts, pruned


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_category_counts_follow_their_definition_through_pruning(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    from civicml.data import profile

    monkeypatch.setattr(profile, "MAX_TRACKED_VALUES", 40)
    monkeypatch.setattr(profile, "TOP_VALUES", 5)
    rng = np.random.default_rng(seed)
    # A few frequent values among many rare ones, in batches of varying size: values enter,
    # are pruned, come back; ties at the cut are common.
    batches = [
        [
            f"v{v}"
            for v in np.where(rng.random(n) < 0.3, rng.integers(0, 6, n), rng.integers(0, 400, n))
        ]
        for n in rng.integers(1, 90, 30)
    ]
    schema = pa.schema([("c", pa.string())])
    profiler = profile.Profiler(schema)
    for batch in batches:
        profiler.update(pa.record_batch([pa.array(batch)], schema=schema))
    (got,) = profiler.result()
    counts, pruned = _reference_categories(batches, 40)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(t.value, t.count) for t in got.top] == top
    assert got.distinct_exact is not pruned
    everything = {v for batch in batches for v in batch}
    if not pruned:
        assert got.distinct == len(counts) == len(everything)
    else:  # the sketch saw every distinct value once: k smallest of all their hashes
        hashes = np.unique(profile._hash_strings(pa.array(sorted(everything))))
        assert got.distinct == profile._kmv_estimate(hashes[: profile.KMV_SIZE])


def test_a_numeric_profile_depends_on_the_column_name_and_values_only() -> None:
    from civicml.data.profile import Profiler

    rng = np.random.default_rng(5)
    table = pa.table(
        {"a": rng.normal(size=3 * RESERVOIR_SIZE), "b": rng.integers(0, 99, 3 * RESERVOIR_SIZE)}
    )

    def profile(t: pa.Table, rows: int) -> list:
        profiler = Profiler(t.schema)
        for batch in t.to_batches(max_chunksize=rows):
            profiler.update(batch)
        return profiler.result()

    whole = profile(table, 5_000)
    assert whole[0].quantiles_exact is False  # beyond the reservoir: sampled
    assert profile(table.select(["b", "a"]), 5_000) == whole[::-1]  # another order
    assert profile(table.select(["a"]), 5_000) == whole[:1]  # without the other column
    # Other batch boundaries: the same sample (mean and std differ in the last bits only).
    cut = profile(table, 7_777)
    assert [p.quantiles for p in cut] == [p.quantiles for p in whole]
    assert [p.mean for p in cut] == pytest.approx([p.mean for p in whole], rel=1e-12)
    renamed = profile(table.rename_columns(["z", "b"]), 5_000)[0]
    assert renamed.quantiles != whole[0].quantiles  # another name: another sample


def test_the_reservoir_is_a_uniform_sample_of_the_whole_column() -> None:
    # Value i is taken with probability RESERVOIR_SIZE / n wherever it comes: each tenth of a
    # column of distinct values holds about a tenth of the reservoir (6 standard deviations).
    from civicml.data.profile import Profiler

    n = 10 * RESERVOIR_SIZE
    schema = pa.schema([("x", pa.int64())])
    rng = np.random.default_rng(11)
    counts = np.zeros(10)
    for name in ("x", "y", "z"):  # three independent samples (one generator per name)
        profiler = Profiler(pa.schema([(name, pa.int64())]))
        start = 0
        while start < n:
            size = min(n - start, int(rng.integers(1, 30_000)))
            profiler.update(pa.record_batch([pa.array(range(start, start + size))], schema=schema))
            start += size
        reservoir = profiler._columns[0].reservoir
        assert len(reservoir) == len(np.unique(reservoir)) == RESERVOIR_SIZE
        counts += np.histogram(reservoir, bins=10, range=(0, n))[0]
    expected = 3 * RESERVOIR_SIZE / 10
    sigma = (expected * 0.9) ** 0.5
    assert np.all(np.abs(counts - expected) < 6 * sigma), counts
