"""The drift engine's low-memory paths — the merge taken a block at a time, value counts without
a code per row, Sturges edges and buckets without a concatenated or histogrammed copy, the
baseline statistics reusing the tests' work — give numpy's and pandas' numbers exactly, and
never write into the caller's frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from civicml.monitoring import _parallel, drift_report
from civicml.monitoring._columns import counted_by_value, value_counts
from civicml.monitoring.constraints import _integral_count, _numerical, column_statistics
from civicml.monitoring.drift import _BLOCK, _Merge, _sturges_edges


def _full_merge(rs: np.ndarray, cs: np.ndarray) -> tuple[int, float]:
    """The merge as it was before blocks: every merged value at once (current first on ties)."""
    n, m = rs.size, cs.size
    values = np.empty(n + m)
    is_ref = np.zeros(n + m, dtype=np.int8)
    pos = np.searchsorted(cs, rs, side="right") + np.arange(n)
    values[pos] = rs
    is_ref[pos] = 1
    values[np.searchsorted(rs, cs, side="left") + np.arange(m)] = cs
    ref_cum = np.cumsum(is_ref, dtype=np.int32)
    deltas = np.diff(values)
    total = 0.0
    for start in range(0, n + m - 1, _BLOCK):
        stop = min(start + _BLOCK, n + m - 1)
        k = ref_cum[start:stop]
        gap = k / n
        cur = np.arange(start + 1, stop + 1, dtype=np.float64)
        cur -= k
        cur /= m
        gap -= cur
        np.abs(gap, out=gap)
        total += float(np.dot(gap, deltas[start:stop]))
    return int(np.count_nonzero(deltas)) + 1, total


@pytest.mark.parametrize(
    ("n", "m"),
    [
        (1, 1),
        (2, 3),
        (_BLOCK - 1, 1),
        (_BLOCK, 1),
        (_BLOCK // 2, _BLOCK // 2 + 1),
        (300_001, 170_000),
    ],
)
def test_the_merge_in_blocks_is_the_full_merge(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    for rs, cs in (
        (np.sort(rng.normal(0, 1, n)), np.sort(rng.normal(0.2, 1.3, m))),
        # ties within and across blocks, and both signs of zero
        (np.sort(np.round(rng.normal(0, 1, n), 1)), np.sort(np.round(rng.normal(0, 1, m), 1))),
        (np.sort(rng.integers(-3, 3, n) * 0.0), np.sort(rng.integers(0, 2, m).astype(float))),
    ):
        merge = _Merge.of(rs, cs)
        n_unique, total = _full_merge(rs, cs)
        assert merge.size == n + m
        assert merge.n_unique == n_unique
        assert merge.distance == total  # the same sum, bit for bit


def test_the_merge_without_the_distance_still_counts_distinct_values() -> None:
    rs, cs = np.array([1.0, 2.0, 2.0]), np.array([2.0, 3.0])
    merge = _Merge.of(rs, cs, distance=False)
    assert (merge.n_unique, merge.distance) == (3, None)
    assert _Merge.of(np.empty(0), cs).distance is None


@pytest.mark.parametrize("sizes", [(1, 1), (1, 5), (7, 3), (1000, 1000), (12_345, 6_789)])
def test_sturges_edges_are_numpys(sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    n, m = sizes
    for ref, cur in (
        (rng.normal(0, 1, n), rng.normal(5, 3, m)),
        (np.full(n, 2.5), np.full(m, 2.5)),  # one value: numpy widens the range by 0.5
        (rng.integers(0, 3, n).astype(float), rng.integers(1, 9, m).astype(float)),
        (rng.normal(1e12, 1e-3, n), rng.normal(1e12, 1e-3, m)),
    ):
        rs, cs = np.sort(ref), np.sort(cur)
        expected = np.histogram_bin_edges(np.concatenate([rs, cs]), bins="sturges")
        assert np.array_equal(_sturges_edges(rs, cs), expected)


@pytest.mark.parametrize("n", [1, 2, 10, 1001, 50_000])
def test_buckets_are_np_histograms(n: int) -> None:
    rng = np.random.default_rng(n)
    for values in (
        rng.normal(0, 1, n),
        np.round(rng.normal(0, 5, n)),  # values on the edges
        np.full(n, -3.0),
        rng.uniform(-1e-9, 1e-9, n),
    ):
        finite = np.sort(values)
        lo, hi = float(finite[0]), float(finite[-1])
        counts, edges = np.histogram(finite, bins=10, range=(lo, hi if hi > lo else lo + 1.0))
        stats = _numerical(finite, n, 0)
        assert [b.count for b in stats.buckets] == counts.tolist()
        assert [b.lower_bound for b in stats.buckets] == edges[:-1].tolist()
        assert [b.upper_bound for b in stats.buckets] == edges[1:].tolist()


def test_whole_numbers_are_counted_as_numpys_remainder_does() -> None:
    values = np.array([-3.0, -2.5, -1e-300, -0.0, 0.0, 1e-300, 0.5, 2.0, 2**53, 1e300])
    expected = int(np.count_nonzero(np.mod(values, 1) == 0))
    assert _integral_count(np.sort(values)) == expected == 6


def _chunked_strings() -> pd.Series:
    chunks = [["b", None, "a"], ["c", "a", None, "d", "b"], []]
    array = pa.chunked_array([pa.array(c, pa.large_string()) for c in chunks])
    return pd.Series(pd.arrays.ArrowStringArray(array))


@pytest.mark.parametrize(
    "series",
    [
        _chunked_strings(),
        pd.Series(["x", None, "y", "x"], dtype="string[pyarrow]"),
        pd.Series(["1", 2.5, None, "x", 1, "1"], dtype=object),
        pd.Series(pd.Categorical(["lo", "hi", "lo", None], categories=["lo", "mid", "hi"])),
        pd.Series([1.5, np.inf, np.nan, 1.5, -np.inf, 2.0]),
        pd.Series([True, False, True]),
    ],
    ids=["arrow-chunks", "string-pyarrow", "object", "category", "float-inf", "bool"],
)
def test_value_counts_are_factorize_counts(series: pd.Series) -> None:
    codes, uniques = pd.factorize(series, sort=False, use_na_sentinel=True)
    if pd.api.types.is_float_dtype(series.dtype):
        codes[~np.isfinite(series.to_numpy(dtype=float, na_value=np.nan))] = -1
    expected = np.bincount(codes[codes >= 0], minlength=len(uniques))
    values, counts = value_counts(series)
    assert values == list(uniques)
    assert counts.dtype == np.int64
    assert counts.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "series",
    [
        _chunked_strings(),
        pd.Series(["1", "2.5", None, "x", "inf", "-0", "1"] * 30, dtype=object),
        pd.Series(pd.Categorical(["lo", "hi", "lo", None] * 10)),
    ],
)
def test_statistics_from_counts_are_the_statistics_of_the_column(series: pd.Series) -> None:
    assert counted_by_value(series)
    assert column_statistics("c", series, counted=value_counts(series)) == column_statistics(
        "c", series
    )


def test_infinities_in_a_float_column_give_no_warning() -> None:
    # pytest turns warnings into errors: numpy's remainder of an infinity warned here before
    values = np.r_[np.arange(100.0), [np.inf, -np.inf, np.nan, 0.5]]
    frame = pd.DataFrame({"x": values})
    report = drift_report(frame, frame)
    assert report.violations == []
    stats = column_statistics("x", frame["x"])
    assert stats.type_counts == {"Integral": 100, "Fractional": 3}


def test_a_constant_column_beyond_two_to_the_53_is_reported() -> None:
    # numpy's histogram refused the range (1e17, 1e17 + 1): it is one float
    frame = pd.DataFrame({"big": np.full(2000, 1e17), "x": np.arange(2000.0)})
    report = drift_report(frame, frame)
    assert report.columns[0].drift_detected is False
    assert report.violations == []


def test_the_callers_frames_are_never_written() -> None:
    rng = np.random.default_rng(3)
    rows = 3000

    def frame(shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "f64": rng.normal(shift, 1, rows),  # finite: the sort must work on a copy
                "f32": rng.normal(shift, 1, rows).astype(np.float32),
                "i64": rng.integers(0, 1000, rows),
                "nullable": pd.array(rng.normal(shift, 1, rows), dtype="Float64"),  # no NA
                "when": pd.Timestamp("2024-01-01")
                + pd.to_timedelta(rng.integers(0, 10**6, rows), unit="s"),
            }
        )

    reference, current = frame(0.0), frame(0.5)
    before = (reference.copy(deep=True), current.copy(deep=True))
    drift_report(reference, current)
    pd.testing.assert_frame_equal(reference, before[0])
    pd.testing.assert_frame_equal(current, before[1])


def test_a_memory_budget_caps_the_threads_but_keeps_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "usable_cpus", lambda: 16)
    assert _parallel.workers(2_000_000, 25) == 16
    assert _parallel.workers(2_000_000, 5) == 5  # at most one per column
    assert _parallel.workers(2_000_000, 25, task_bytes=30, budget_bytes=100) == 3
    assert _parallel.workers(2_000_000, 25, task_bytes=30, budget_bytes=10) == 2
    assert _parallel.workers(40_000, 25, task_bytes=30, budget_bytes=100) == 1  # too few rows
    monkeypatch.setattr(_parallel, "usable_cpus", lambda: 1)
    assert _parallel.workers(2_000_000, 25, task_bytes=30, budget_bytes=10**9) == 1


def test_a_wide_frame_on_many_cores_gets_the_threads_its_memory_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[int] = []
    real = _parallel.workers

    def spy(*args: int) -> int:
        started.append(real(*args))
        return started[-1]

    monkeypatch.setattr(_parallel, "usable_cpus", lambda: 16)
    monkeypatch.setattr(_parallel, "workers", spy)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({f"x{i}": rng.normal(0, 1, 30_000) for i in range(20)})
    drift_report(frame, frame + 0.1, check_constraints=False)
    # 60,000 rows of float64 per column: ~0.5 MB sorted + one merge block (~2.9 MB) per
    # thread, against 15 % of 9.6 MB of frames
    assert started == [2]
