"""Per-column drift between a reference (baseline) frame and a current frame.

Pure computation on two pandas DataFrames — no database, no clock. The choice of test follows
Evidently's defaults (``../shared/reference/anchors.md`` B3; Evidently 0.7
``legacy/calculations/stattests/registry.py`` ``_get_default_stattest``), with ``n_unique``
counted over reference | current and the reference size taken after dropping missing values:

=================================  ===========================  ==============================
Column                             reference ≤ 1000 rows        reference > 1000 rows
=================================  ===========================  ==============================
numeric, n_unique > 5              ``ks`` (drift if p ≤ 0.05)    ``wasserstein`` normed by the
                                                                 reference std (drift if ≥ 0.1)
numeric, n_unique ≤ 5              ``chisquare`` (> 2 values) /  ``jensenshannon`` (≥ 0.1)
                                   ``z`` (≤ 2) (p < 0.05)
categorical                        ``chisquare`` / ``z``         ``jensenshannon`` (≥ 0.1)
=================================  ===========================  ==============================

PSI (Evidently's ``psi``: Sturges bins over reference | current when the reference has more
than 20 distinct values, else one bin per value; empty bins filled with a small share) is
computed for every column. The dataset drifts when the share of drifted columns reaches
``drift_share`` (``DataDriftPreset(drift_share=0.5)``).

Below ``min_rows`` rows on either side (:data:`DEFAULT_MIN_ROWS`, the ``drift_min_rows``
setting) the verdict is ``insufficient_data``: statistics are still computed and shown, but no
column is judged (``drift_detected`` is null) and no column counts as drifted; a column with fewer
than ``min_rows`` non-missing values on a side is likewise not judged. Neither Evidently nor Model
Monitor sets such a floor; on 5 captured rows from one caller their tests answer "drift" for
every column. Thirty is the usual floor for the approximations these tests rely on (chi-square
and z need about 5 expected values per category, which 30 rows give for categories of a sixth or
more; the two-sample KS test on a few values reacts to where they happen to fall: one value above
the whole reference alone gives p = 0.002). See docs/monitoring.md.

Differences from Evidently, on purpose: the column kind is inferred from the reference frame
with Evidently 0.7's ``infer_column_type`` rules (float → numeric; integer → categorical when
≤ 10 distinct values; bool, string, object, category → categorical), except that
high-cardinality strings stay categorical (Evidently calls them text and trains a domain
classifier) and datetimes are compared as numbers (seconds since the epoch; Evidently skips
them). The anchor's "Jensen-Shannon, 30 bins" is what Evidently's signature says; its code
ignores ``n_bins`` and uses the Sturges/per-value binning above, which is what we match.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

from civicml.core.errors import CivicMLError
from civicml.monitoring._columns import (
    ValueCounts,
    counted_by_value,
    histogram_counts,
    value_counts,
)
from civicml.monitoring._parallel import column_pool
from civicml.monitoring.schemas import (
    CategoryShare,
    ColumnDrift,
    ColumnKind,
    DriftReport,
    FeatureStatistics,
    Histogram,
    StatTestName,
    Violation,
)

__all__ = [
    "DEFAULT_MIN_ROWS",
    "DEFAULT_THRESHOLDS",
    "STATTEST_LABELS",
    "DriftInputError",
    "choose_stattest",
    "drift_report",
    "infer_kind",
    "jensenshannon_distance",
    "psi",
    "wasserstein_normed",
]

FloatArray = NDArray[np.float64]
_BLOCK = 1 << 18  # merged values per block of the Wasserstein sum
#: The columns' threads together hold at most about this share of the frames' own size (there
#: are at least two threads where there are two cores): issue 11 allows the frames + 20 %.
_THREADS_MEMORY_SHARE = 0.15
IntArray = NDArray[np.int64]
_T = TypeVar("_T")

#: Evidently's default threshold of each test (``StatTest.default_threshold``).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
#: Fewest rows on each side for a drift verdict (the ``drift_min_rows`` setting's default).
DEFAULT_MIN_ROWS = 30
#: Evidently's display names.
STATTEST_LABELS: dict[str, str] = {
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
    "psi": "PSI",
}
_P_VALUE_TESTS = frozenset({"ks", "chisquare", "z"})
_NUMERIC_ONLY = frozenset({"ks", "wasserstein"})
_INTEGER_CARDINALITY_LIMIT = 10  # Evidently 0.7 core/datasets.py
_SMALL_REFERENCE = 1000
_DISCRETE_LIMIT = 5
_PSI_BIN_LIMIT = 20  # get_binned_data: histogram when reference n_unique > 20
_PLOT_BINS = 20
_TOP_VALUES = 10


class DriftInputError(CivicMLError):
    """The frames or options given to :func:`drift_report` cannot be compared."""


@dataclass(frozen=True, slots=True)
class _Discrete:
    """Counts per distinct value over reference | current."""

    labels: list[str]
    ref: IntArray
    cur: IntArray


@dataclass(frozen=True, slots=True)
class _Merge:
    """What the tests need of reference and current merged in ascending order, taken a block of
    :data:`_BLOCK` merged values at a time: a few MiB alive, never all the merged values."""

    size: int  # reference and current values
    n_unique: int  # distinct values among them
    distance: float | None  # Σ |F_ref - F_cur|·Δ (Wasserstein, not normed); None: not asked

    @classmethod
    def of(cls, rs: FloatArray, cs: FloatArray, distance: bool = True) -> _Merge:
        n, m = rs.size, cs.size
        size = n + m
        n_unique = 1 if size else 0
        total = 0.0
        a0 = 0  # reference values among the merged values before the block
        for start in range(0, size - 1, _BLOCK):
            stop = min(start + _BLOCK, size - 1)
            # merged values start..stop (one more than the block: its last gap)
            a1 = _reference_before(rs, cs, stop + 1)
            values, is_ref = _merged(rs[a0:a1], cs[start - a0 : stop + 1 - a1])
            deltas = np.diff(values)
            del values
            n_unique += int(np.count_nonzero(deltas))
            # reference values among the first i + 1 merged values, i = start..stop - 1 (whole
            # numbers: exact in float64, and converted once instead of in every operation)
            k = np.cumsum(is_ref[:-1], dtype=np.float64)
            del is_ref
            k += a0
            a0 = int(k[-1])
            if n and m and distance:
                # Σ |F_ref - F_cur| · Δ: F_ref = k / n and F_cur = (i + 1 - k) / m
                gap = k / n
                cur = np.arange(start + 1, stop + 1, dtype=np.float64)
                cur -= k
                cur /= m
                gap -= cur
                np.abs(gap, out=gap)
                total += float(np.dot(gap, deltas))
        return cls(size, n_unique, total if distance and n and m else None)


def _reference_before(rs: FloatArray, cs: FloatArray, p: int) -> int:
    """How many reference values are among the first ``p`` merged values (ties: current
    first), by bisection on ``j + #(current ≤ rs[j]) < p``."""
    lo, hi = max(0, p - cs.size), min(p, rs.size)
    while lo < hi:
        mid = (lo + hi) // 2
        if mid + int(np.searchsorted(cs, rs[mid], side="right")) < p:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _merged(r: FloatArray, c: FloatArray) -> tuple[FloatArray, NDArray[np.int8]]:
    """Two sorted arrays merged (current before reference on ties) and which came from ``r``:
    a stable sort of ``c`` then ``r`` (two runs, merged by timsort in one pass)."""
    both = np.concatenate([c, r])
    order = np.argsort(both, kind="stable")
    values = both[order]
    del both
    is_ref = (order >= c.size).view(np.int8)
    return values, is_ref


@dataclass(slots=True)
class _Reuse:
    """What a column's baseline statistics take over from its drift tests, per side: the
    finite values sorted (numeric columns) or the count of each value (strings, objects,
    categories)."""

    ref_sorted: FloatArray | None = None
    cur_sorted: FloatArray | None = None
    ref_counts: ValueCounts | None = None
    cur_counts: ValueCounts | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    kind: ColumnKind
    ref_sorted: FloatArray | None  # numeric: finite values, sorted
    cur_sorted: FloatArray | None
    discrete: _Discrete | None  # categorical, or numeric with few values
    merge: _Merge | None  # numeric
    n_unique: int
    ref_n_unique: int
    type_violations: int


# --------------------------------------------------------------------------------------
# Kind inference and casting
# --------------------------------------------------------------------------------------


def infer_kind(series: pd.Series) -> ColumnKind:
    """Numeric or categorical, by Evidently 0.7's ``infer_column_type`` rules.

    Float columns are numeric; integer columns are categorical when they hold at most 10
    distinct values; bool, string, object and category columns are categorical; datetimes are
    numeric (a civicml choice: Evidently skips them).

    Example:
        >>> infer_kind(pd.Series([0.5, 1.5]))
        'numeric'
        >>> infer_kind(pd.Series([1, 2, 1]))
        'categorical'
    """
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_float_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return "numeric"
    if pd.api.types.is_integer_dtype(dtype):
        return "numeric" if series.nunique() > _INTEGER_CARDINALITY_LIMIT else "categorical"
    return "categorical"


def _as_float(series: pd.Series) -> tuple[FloatArray, bool]:
    """The column as float64 (missing: NaN), and whether that array is a new one (True) or
    may be the frame's own memory (False)."""
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        ns: FloatArray = np.asarray(
            series.to_numpy(dtype="datetime64[ns]").astype(np.int64), dtype=np.float64
        )
        ns[np.asarray(series.isna(), dtype=bool)] = np.nan
        return ns / 1e9, True
    values = np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    # a NumPy integer, bool or float32 column must be converted: the array is new
    return values, isinstance(dtype, np.dtype) and dtype != np.float64


def _cast_like(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, int]:
    """Cast ``current`` to the type of ``reference``; count present values that do not cast."""
    ref_t, cur_t = reference.dtype, current.dtype
    present = current.notna()
    if pd.api.types.is_bool_dtype(ref_t):
        if pd.api.types.is_bool_dtype(cur_t):
            return current, 0
        mapping = {True: True, False: False, "true": True, "false": False}  # 1/0 equal True/False
        lowered = current.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
        cast = lowered.map(lambda v: mapping.get(v) if _hashable(v) else None)
        bad = present & cast.isna()
        return cast.where(~bad), int(bad.sum())
    if pd.api.types.is_datetime64_any_dtype(ref_t):
        if pd.api.types.is_datetime64_any_dtype(cur_t):
            return current, 0
        cast = pd.to_datetime(current, errors="coerce", utc=False, format="mixed")
        return cast, int((present & cast.isna()).sum())
    if pd.api.types.is_numeric_dtype(ref_t):
        if pd.api.types.is_numeric_dtype(cur_t) and not pd.api.types.is_bool_dtype(cur_t):
            cast = current
            bad_count = 0
        else:
            cast = pd.to_numeric(current, errors="coerce")
            bad_count = int((present & cast.isna()).sum())
        if pd.api.types.is_integer_dtype(ref_t) and pd.api.types.is_float_dtype(cast.dtype):
            values = cast.to_numpy(dtype=np.float64, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                bad_count += int(np.count_nonzero(np.isfinite(values) & (values % 1 != 0)))
        return cast, bad_count
    return current, 0  # strings, objects, categories: any value can be a category


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# --------------------------------------------------------------------------------------
# Statistics (each checked against SciPy in tests/monitoring/test_drift.py)
# --------------------------------------------------------------------------------------


def wasserstein_normed(ref_sorted: FloatArray, cur_sorted: FloatArray) -> float:
    """First Wasserstein distance divided by ``max(std(reference), 0.001)``.

    Evidently's ``wasserstein`` test (``wasserstein_distance_norm.py``); the distance is SciPy's
    ``wasserstein_distance`` formula ``Σ |U(x_k) - V(x_k)|·(x_{k+1} - x_k)`` over the merged
    sorted values, computed from one linear merge of the two sorted arrays.

    Args:
        ref_sorted: reference values, finite and sorted ascending.
        cur_sorted: current values, finite and sorted ascending.

    Returns:
        The normed distance.
    """
    return _wasserstein(_Merge.of(ref_sorted, cur_sorted), ref_sorted)


def _wasserstein(merge: _Merge, ref_sorted: FloatArray) -> float:
    if merge.distance is None:  # pragma: no cover - _prepare asks for it when it may be needed
        raise AssertionError("the Wasserstein sum was not computed")
    return merge.distance / max(float(np.std(ref_sorted)), 0.001)


def jensenshannon_distance(ref_share: FloatArray, cur_share: FloatArray) -> float:
    """Jensen-Shannon distance (natural log) of two binned distributions, as SciPy's."""
    return float(distance.jensenshannon(ref_share, cur_share))


def _fill_zeroes(share: FloatArray) -> FloatArray:
    """Evidently's ``feel_zeroes``: empty bins get min-nonzero/1e6 if that is ≤ 1e-4, else 1e-4."""
    nonzero = share[share != 0]
    if nonzero.size == 0:
        return share
    smallest = float(nonzero.min())
    fill = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    filled: FloatArray = np.where(share == 0, fill, share)
    return filled


def psi(ref_share: FloatArray, cur_share: FloatArray) -> float:
    """Population Stability Index ``Σ (r - c)·ln(r / c)`` after Evidently's zero filling.

    Example:
        >>> round(psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])), 4)
        0.2747
    """
    r, c = _fill_zeroes(ref_share), _fill_zeroes(cur_share)
    return float(np.sum((r - c) * np.log(r / c)))


def _binned_shares(prep: _Prepared) -> tuple[FloatArray, FloatArray]:
    """Evidently's ``get_binned_data`` (without zero filling)."""
    if (
        prep.ref_sorted is not None
        and prep.cur_sorted is not None
        and (prep.ref_n_unique > _PSI_BIN_LIMIT or prep.discrete is None)
    ):
        rs, cs = prep.ref_sorted, prep.cur_sorted
        edges = _sturges_edges(rs, cs)
        return histogram_counts(rs, edges) / rs.size, histogram_counts(cs, edges) / cs.size
    if prep.discrete is None:  # pragma: no cover - numeric always has sorted arrays
        raise AssertionError
    d = prep.discrete
    return d.ref / max(d.ref.sum(), 1), d.cur / max(d.cur.sum(), 1)


def _sturges_edges(rs: FloatArray, cs: FloatArray) -> FloatArray:
    """``np.histogram_bin_edges(np.concatenate([rs, cs]), bins="sturges")`` of two sorted,
    finite, non-empty arrays, without their concatenation: numpy's own arithmetic
    (``_get_outer_edges``, ``_hist_bin_sturges``, ``_get_bin_edges``) on their ends and sizes."""
    lo, hi = min(rs[0], cs[0]), max(rs[-1], cs[-1])
    first, last = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    width = np.subtract(hi, lo) / (np.log2(rs.size + cs.size) + 1.0)
    bins = int(np.ceil(np.subtract(last, first) / width)) if width else 1
    edges: FloatArray = np.linspace(first, last, bins + 1, endpoint=True, dtype=np.float64)
    return edges


def _chisquare(d: _Discrete) -> tuple[float, float]:
    """Evidently's ``chisquare``: observed current counts vs. reference counts * n_cur/n_ref."""
    f_exp = d.ref * (d.cur.sum() / d.ref.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(d.cur == f_exp, 0.0, (d.cur - f_exp) ** 2 / f_exp)
    statistic = float(terms.sum())
    return statistic, float(stats.chi2.sf(statistic, d.ref.size - 1))


def _z_test(d: _Discrete) -> tuple[float, float]:
    """Evidently's ``z``: two-proportion z-test on the first value vs. the other."""
    if d.ref.size == 1:
        return 0.0, 1.0
    n1, n2 = float(d.ref.sum()), float(d.cur.sum())
    p1, p2 = 1 - d.ref[0] / n1, 1 - d.cur[0] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(z), float(2 * stats.norm.sf(abs(z)))


# --------------------------------------------------------------------------------------
# Column preparation
# --------------------------------------------------------------------------------------


def _distinct_sorted(values: FloatArray) -> FloatArray:
    """The distinct values of a sorted array (``np.unique`` without its sort)."""
    if values.size == 0:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _discrete_from_sorted(rs: FloatArray, cs: FloatArray) -> _Discrete:
    keys = np.union1d(_distinct_sorted(rs), _distinct_sorted(cs))
    ref = np.diff(np.searchsorted(rs, keys, side="left"), append=rs.size)
    cur = np.diff(np.searchsorted(cs, keys, side="left"), append=cs.size)
    return _Discrete([_fmt(k) for k in keys], ref.astype(np.int64), cur.astype(np.int64))


def _prepare(
    ref: pd.Series,
    cur: pd.Series,
    kind: ColumnKind,
    memo: _Reuse | None = None,
    stattest: StatTestName | None = None,
) -> _Prepared:
    cast, violations = _cast_like(ref, cur)
    if kind == "numeric":
        rs, cs = _finite_sorted(ref), _finite_sorted(cast)
        if memo is not None and _plain_number(ref):  # the baseline statistics reuse the sort
            memo.ref_sorted = rs
            if cast is cur:
                memo.cur_sorted = cs
        # the Wasserstein sum only where the test may be Wasserstein (choose_stattest)
        distance = stattest == "wasserstein" or (stattest is None and rs.size > _SMALL_REFERENCE)
        merge = _Merge.of(rs, cs, distance)
        ref_unique = int(np.count_nonzero(rs[1:] != rs[:-1])) + 1 if rs.size else 0
        discrete = _discrete_from_sorted(rs, cs) if ref_unique <= _PSI_BIN_LIMIT else None
        return _Prepared(kind, rs, cs, discrete, merge, merge.n_unique, ref_unique, violations)
    # Each side counted on its own (no concatenated copy of the two columns), the current
    # side's values numbered after the reference's: the order factorizing both together gives
    ref_values, ref_found = value_counts(ref)
    cur_values, cur_found = value_counts(cast)
    if memo is not None:  # the baseline statistics reuse the counts
        if counted_by_value(ref):
            memo.ref_counts = ref_values, ref_found
        if cast is cur and counted_by_value(cur):
            memo.cur_counts = cur_values, cur_found
    position: dict[Any, int] = {}
    ref_map = np.array([position.setdefault(v, len(position)) for v in ref_values], dtype=np.intp)
    cur_map = np.array([position.setdefault(v, len(position)) for v in cur_values], dtype=np.intp)
    ref_counts = np.zeros(len(position), dtype=np.int64)
    cur_counts = np.zeros(len(position), dtype=np.int64)
    np.add.at(ref_counts, ref_map, ref_found)
    np.add.at(cur_counts, cur_map, cur_found)
    seen = (ref_counts + cur_counts) > 0  # infinities were numbered, but counted on no side
    labels = [_fmt(u) for u, keep in zip(position, seen, strict=True) if keep]
    ref_counts, cur_counts = ref_counts[seen], cur_counts[seen]
    k = len(labels)
    ref_unique = int(np.count_nonzero(ref_counts))
    discrete = _Discrete(labels, ref_counts, cur_counts)
    return _Prepared(kind, None, None, discrete, None, k, ref_unique, violations)


def _finite_sorted(series: pd.Series) -> FloatArray:
    """The finite values of a numeric (or datetime) column as float64, sorted: a copy the
    report owns, sorted in place (the caller's frame is never written)."""
    values, owned = _as_float(series)
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]  # a copy
    elif not owned or not values.flags.writeable:
        values = values.copy()
    del finite
    values.sort()
    return values


def _plain_number(series: pd.Series) -> bool:
    dtype = series.dtype
    return bool(pd.api.types.is_numeric_dtype(dtype)) and not pd.api.types.is_bool_dtype(dtype)


def _fmt(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def choose_stattest(kind: ColumnKind, n_unique: int, reference_count: int) -> StatTestName:
    """Evidently's default test for a column (anchors B3).

    Args:
        kind: ``"numeric"`` or ``"categorical"``.
        n_unique: distinct non-missing values over reference | current.
        reference_count: non-missing reference values.

    Returns:
        The test name.

    Example:
        >>> choose_stattest("numeric", 100, 500), choose_stattest("numeric", 100, 5000)
        ('ks', 'wasserstein')
        >>> choose_stattest("categorical", 2, 500), choose_stattest("categorical", 3, 500)
        ('z', 'chisquare')
    """
    if reference_count <= _SMALL_REFERENCE:
        if kind == "numeric" and n_unique > _DISCRETE_LIMIT:
            return "ks"
        return "chisquare" if n_unique > 2 else "z"
    if kind == "numeric" and n_unique > _DISCRETE_LIMIT:
        return "wasserstein"
    return "jensenshannon"


# --------------------------------------------------------------------------------------
# One column, then the report
# --------------------------------------------------------------------------------------


def _column_drift(
    name: str,
    ref: pd.Series,
    cur: pd.Series,
    kind: ColumnKind,
    stattest: StatTestName | None,
    threshold: float | None,
    min_rows: int,
    not_judged: str | None,
    memo: _Reuse | None = None,
) -> ColumnDrift:
    prep = _prepare(ref, cur, kind, memo, stattest)
    if prep.ref_sorted is not None and prep.cur_sorted is not None:
        n_ref, n_cur = prep.ref_sorted.size, prep.cur_sorted.size
    elif prep.discrete is not None:
        n_ref, n_cur = int(prep.discrete.ref.sum()), int(prep.discrete.cur.sum())
    else:  # pragma: no cover
        raise AssertionError
    test = stattest or choose_stattest(kind, prep.n_unique, n_ref)
    if test in _NUMERIC_ONLY and kind != "numeric":
        raise DriftInputError(
            f"Test {test!r} needs a numeric column; column {name!r} is categorical.",
            hint=f"Use 'chisquare', 'z', 'jensenshannon' or 'psi', or pass numerical=[{name!r}].",
        )
    limit = DEFAULT_THRESHOLDS[test] if threshold is None else threshold
    statistic = p_value = score = psi_value = None
    note = None
    if n_ref == 0 or n_cur == 0:
        side = "reference" if n_ref == 0 else "current"
        note = f"No non-missing values in {side}; drift not computed."
    else:
        statistic, p_value = _run_test(test, prep)
        score = p_value if test in _P_VALUE_TESTS else statistic
        psi_value = psi(*_binned_shares(prep))
    few = min(n_ref, n_cur)
    if note is None and not_judged is not None:
        note = not_judged
    elif note is None and few < min_rows:
        side = "reference" if n_ref < n_cur else "current"
        note = (
            f"Only {few:,} non-missing {side} value{'s' if few != 1 else ''} (at least "
            f"{min_rows:,} needed); not judged."
        )
    detected: bool | None
    if note is not None or score is None:
        detected = None
    elif test == "ks":
        detected = score <= limit
    elif test in _P_VALUE_TESTS:
        detected = score < limit
    else:
        detected = score >= limit
    hist, top = _plot_data(prep)
    return ColumnDrift(
        column=name,
        kind=kind,
        stattest=test,
        stattest_label=STATTEST_LABELS[test],
        statistic=statistic,
        p_value=p_value,
        drift_score=score,
        threshold=limit,
        drift_detected=detected,
        psi=psi_value,
        n_unique=prep.n_unique,
        reference_count=n_ref,
        current_count=n_cur,
        missing_share_reference=float(ref.isna().mean()) if len(ref) else 0.0,
        missing_share_current=float(cur.isna().mean()) if len(cur) else 0.0,
        type_violations=prep.type_violations,
        note=note,
        histogram=hist,
        top_values=top,
    )


def _run_test(test: StatTestName, prep: _Prepared) -> tuple[float, float | None]:
    if test == "ks":
        res = stats.ks_2samp(prep.ref_sorted, prep.cur_sorted)
        return float(res.statistic), float(res.pvalue)
    if test == "wasserstein":
        if prep.ref_sorted is None or prep.merge is None:  # pragma: no cover
            raise AssertionError
        return _wasserstein(prep.merge, prep.ref_sorted), None
    if test == "psi":
        return psi(*_binned_shares(prep)), None
    if test == "jensenshannon":
        return jensenshannon_distance(*_binned_shares(prep)), None
    d = prep.discrete
    if d is None:  # numeric column with many values forced to a categorical test
        rs, cs = prep.ref_sorted, prep.cur_sorted
        if rs is None or cs is None:  # pragma: no cover
            raise AssertionError
        d = _discrete_from_sorted(rs, cs)
    return _chisquare(d) if test == "chisquare" else _z_test(d)


def _plot_data(prep: _Prepared) -> tuple[Histogram | None, list[CategoryShare] | None]:
    rs, cs = prep.ref_sorted, prep.cur_sorted
    if prep.kind == "numeric" and rs is not None and cs is not None and rs.size and cs.size:
        lo, hi = float(min(rs[0], cs[0])), float(max(rs[-1], cs[-1]))
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, _PLOT_BINS + 1)
        return (
            Histogram(
                edges=[float(e) for e in edges],
                reference_share=(histogram_counts(rs, edges) / rs.size).tolist(),
                current_share=(histogram_counts(cs, edges) / cs.size).tolist(),
            ),
            None,
        )
    d = prep.discrete
    if d is None:
        return None, None
    r = d.ref / max(int(d.ref.sum()), 1)
    c = d.cur / max(int(d.cur.sum()), 1)
    order = np.argsort(-(r + c), kind="stable")[:_TOP_VALUES]
    top = [
        CategoryShare(value=d.labels[i], reference_share=float(r[i]), current_share=float(c[i]))
        for i in order
    ]
    return None, top


def _per_column(value: _T | Mapping[str, _T] | None, column: str) -> _T | None:
    if isinstance(value, Mapping):
        return value.get(column)
    return value


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    numerical: Sequence[str] | None = None,
    stattest: StatTestName | Mapping[str, StatTestName] | None = None,
    threshold: float | Mapping[str, float] | None = None,
    drift_share: float = 0.5,
    check_constraints: bool = True,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> DriftReport:
    """Compare ``current`` with ``reference`` column by column.

    Args:
        reference: the baseline frame, e.g. the training data.
        current: the frame to check, e.g. captured inputs.
        columns: columns to compare; default: every reference column also in ``current``.
        categorical: columns to treat as categorical whatever their dtype.
        numerical: columns to treat as numeric whatever their dtype.
        stattest: a test name for every column, or a mapping column → test; default:
            Evidently's choice (:func:`choose_stattest`).
        threshold: a threshold for every column, or a mapping column → threshold; default:
            the test's own (:data:`DEFAULT_THRESHOLDS`).
        drift_share: the dataset drifts when at least this share of columns drift.
        check_constraints: also baseline ``reference`` Model Monitor style and list the
            violations of ``current`` (:mod:`civicml.monitoring.constraints`).
        min_rows: fewest rows each frame needs for a verdict; below it the verdict is
            ``insufficient_data`` and no column is judged (nor baseline_drift_check run).

    Returns:
        The report; ``report.model_dump_json()`` is its JSON form.

    Raises:
        DriftInputError: an unknown column, test, a bad ``drift_share`` or ``min_rows``.

    Example:
        >>> ref = pd.DataFrame({"x": np.arange(2000.0)})
        >>> report = drift_report(ref, ref + 1000.0)
        >>> report.columns[0].stattest, report.columns[0].drift_detected, report.dataset_drift
        ('wasserstein', True, True)
    """
    if not 0.0 < drift_share <= 1.0:
        raise DriftInputError(
            f"drift_share must be in (0, 1], got {drift_share!r}.",
            hint="Evidently's default is 0.5: the dataset drifts when half the columns drift.",
        )
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise DriftInputError(
            f"min_rows must be a whole number from 1, got {min_rows!r}.",
            hint=f"The default is {DEFAULT_MIN_ROWS}: fewer rows give no reliable verdict.",
        )
    short = _too_few(len(reference), len(current), min_rows)
    names = list(columns) if columns is not None else [c for c in reference.columns if c in current]
    for label, frame in (("reference", reference), ("current", current)):
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise DriftInputError(
                f"Column(s) {missing} are not in the {label} frame.",
                hint=f"The {label} frame has: {list(frame.columns)[:20]}.",
            )
    forced_cat, forced_num = set(categorical or ()), set(numerical or ())
    jobs = []
    for name in names:
        test = cast("StatTestName | None", _per_column(stattest, name))
        if test is not None and test not in DEFAULT_THRESHOLDS:
            raise DriftInputError(
                f"Unknown test {test!r} for column {name!r}.",
                hint=f"Use one of {sorted(DEFAULT_THRESHOLDS)}.",
            )
        kind: ColumnKind
        if name in forced_cat:
            kind = "categorical"
        elif name in forced_num:
            kind = "numeric"
        else:
            kind = infer_kind(reference[name])
        jobs.append((name, test, kind))
    note = None if short is None else f"{short}; not judged."

    def one(job: tuple[str, StatTestName | None, ColumnKind]) -> _Judged:
        name, test, kind = job
        ref, cur = reference[name], current[name]
        memo = _Reuse()
        result = _column_drift(
            str(name), ref, cur, kind, test, _per_column(threshold, name), min_rows, note, memo
        )
        if not check_constraints:
            return result, None, None
        # the constraint statistics of this column now, while its sorted values are at hand
        from civicml.monitoring.constraints import column_statistics

        return (
            result,
            column_statistics(str(name), ref, memo.ref_sorted, memo.ref_counts),
            column_statistics(str(name), cur, memo.cur_sorted, memo.cur_counts),
        )

    rows = len(reference) + len(current)
    frames_bytes = sum(
        int(frame[name].memory_usage(index=False))
        for frame in (reference, current)
        for name in names
    )
    with column_pool(
        rows,
        len(names),
        task_bytes=_task_bytes(rows),
        budget_bytes=int(_THREADS_MEMORY_SHARE * frames_bytes),
    ) as pool:
        judged: list[_Judged] = list(pool.map(one, jobs))
    results = [r for r, _, _ in judged]
    n_drifted = sum(r.drift_detected is True for r in results)
    share = n_drifted / len(results) if results else 0.0
    violations: list[Violation] = []
    if check_constraints:
        from civicml.monitoring.constraints import check_constraints as _check
        from civicml.monitoring.constraints import compute_statistics, suggest_constraints

        ref_known = {f.name: f for _, f, _ in judged if f is not None}
        cur_known = {f.name: f for _, _, f in judged if f is not None}
        baseline_stats = compute_statistics(reference, computed=ref_known)
        violations = _check(
            suggest_constraints(baseline_stats),
            compute_statistics(current, computed=cur_known),
            baseline=baseline_stats,
        )
        if short is not None:  # a distribution distance is a drift verdict too
            violations = [
                v for v in violations if v.constraint_check_type != "baseline_drift_check"
            ]
    dataset_drift = short is None and bool(results) and share >= drift_share
    return DriftReport(
        reference_rows=len(reference),
        current_rows=len(current),
        columns=results,
        n_columns=len(results),
        n_drifted=n_drifted,
        share_drifted=share,
        drift_share=drift_share,
        dataset_drift=dataset_drift,
        verdict="insufficient_data"
        if short is not None
        else ("drift" if dataset_drift else "no_drift"),
        min_rows=min_rows,
        insufficient_data=short,
        violations=violations,
    )


#: A column's drift, and with constraints its reference and current statistics.
_Judged = tuple[ColumnDrift, FeatureStatistics | None, FeatureStatistics | None]


def _task_bytes(rows: int) -> int:
    """About what one column's work holds at its peak, ``rows`` counting both frames: the
    finite values of both sides as sorted float64 copies, and the merge's arrays of one block
    (six float64 arrays of :data:`_BLOCK` values)."""
    return 8 * rows + 48 * min(rows, _BLOCK)


def _too_few(reference_rows: int, current_rows: int, min_rows: int) -> str | None:
    """Why the frames are too small for a verdict (e.g. ``Only 4 current rows (at least 30
    needed)``), or None."""
    short = [
        f"{n:,} {side} row{'s' if n != 1 else ''}"
        for side, n in (("current", current_rows), ("reference", reference_rows))
        if n < min_rows
    ]
    if not short:
        return None
    return f"Only {' and '.join(short)} (at least {min_rows:,} needed for a drift verdict)"
