"""SageMaker Model Monitor style baseline: statistics, suggested constraints and violations.

Follows ``../shared/reference/anchors.md`` B2 (Model Monitor's ``statistics.json``,
``constraints.json``, ``constraint_violations.json``; the L-infinity distance of Deequ's
``analyzers/Distance.scala``, which Model Monitor's prebuilt analyzer runs):

* ``linf_simple = max_x |CDF_baseline(x) - CDF_current(x)|`` — for numeric features over the
  two empirical CDFs, for categorical features over the category frequencies;
* ``linf_robust = max(0, linf_simple - c(alpha)·sqrt((n + m) / (n·m)))`` — the two-sample KS
  critical-value correction for small samples, ``c(alpha) = sqrt(-ln(alpha/2)/2)``, default 1.8.

Violation types: ``data_type_check``, ``completeness_check``, ``baseline_drift_check``,
``missing_column_check``, ``extra_column_check``, ``categorical_values_check``.

Differences from Model Monitor, and why:

* Numeric distributions are kept as exact quantiles at 1001 evenly spaced ranks instead of a
  KLL sketch (the data is in memory), so the CDF resolution is 0.001; the 10 equal-width
  buckets are kept as in Model Monitor. JSON is flattened: ``numerical_statistics.buckets`` and
  ``.quantiles`` instead of ``distribution.kll.{buckets, sketch}``, and
  ``string_statistics.buckets`` instead of ``distribution.categorical.buckets`` (top 1,000).
* Value types are judged by value, not by CSV text: a number with no fractional part is
  ``Integral`` (Model Monitor reads ``"3.0"`` as Fractional); booleans and dates are ``String``.
  ``Integral`` values satisfy a ``Fractional`` baseline. Each feature records ``type_counts``.
* ``missing_column_check`` / ``extra_column_check`` are reported once per column, naming it
  (Model Monitor reports one violation with the column counts).
* ``domains`` are suggested for String features with at most 50 distinct values covering no
  more than 10 % of the rows; ``categorical_drift_method`` supports ``LInfinity`` only.
* ``baseline_drift_check`` needs the baseline statistics (``check_constraints(...,
  baseline=...)``), as Model Monitor's job takes both ``statistics.json`` and
  ``constraints.json``; without them the check is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.monitoring._columns import ValueCounts, histogram_counts, value_counts
from civicml.monitoring._parallel import column_pool
from civicml.monitoring.schemas import (
    BaselineConstraints,
    CategoricalBucket,
    CommonStatistics,
    DatasetStatistics,
    FeatureConstraints,
    FeatureStatistics,
    InferredType,
    KllBucket,
    NumericalStatistics,
    StringStatistics,
    Violation,
)

__all__ = [
    "check_constraints",
    "compute_statistics",
    "linf_categorical",
    "linf_numeric",
    "linf_robust",
    "suggest_baseline",
    "suggest_constraints",
]

DEFAULT_C_ALPHA = 1.8  # Deequ Distance.scala: c(alpha) for alpha ≈ 0.003
_QUANTILE_RANKS = np.linspace(0.0, 1.0, 1001)
_MAX_BUCKETS = 1000
_BUCKETS = 10  # equal-width buckets of a numeric feature
_CHUNK = 1 << 16  # values per block where a whole-column temporary is not needed
_DOMAIN_MAX_DISTINCT = 50
_DOMAIN_MAX_RATIO = 0.1


# --------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------


def linf_robust(linf_simple: float, n: int, m: int, c_alpha: float = DEFAULT_C_ALPHA) -> float:
    """``max(0, linf_simple - c(alpha)·sqrt((n + m)/(n·m)))`` (Deequ ``selectMetrics``).

    Args:
        linf_simple: the plain L-infinity distance.
        n: baseline sample size.
        m: current sample size.
        c_alpha: ``c(alpha) = sqrt(-ln(alpha/2)/2)``; Deequ's default 1.8 (alpha ≈ 0.003).

    Example:
        >>> round(linf_robust(0.3, 100, 100), 4)
        0.0454
    """
    if n <= 0 or m <= 0:
        return 0.0
    return max(0.0, linf_simple - c_alpha * math.sqrt((n + m) / (n * m)))


def linf_numeric(baseline_quantiles: list[float], current_quantiles: list[float]) -> float:
    """``max_x |F_b(x) - F_c(x)|`` over the union of both quantile grids (linf_simple).

    Each CDF is read from its quantiles at evenly spaced ranks: ``F(x)`` is the highest rank
    whose quantile is ≤ ``x`` (0 below the minimum), as Deequ reads a KLL rank map.
    """
    qb, qc = np.asarray(baseline_quantiles), np.asarray(current_quantiles)
    points = np.union1d(qb, qc)
    return float(np.max(np.abs(_cdf(qb, points) - _cdf(qc, points))))


def _cdf(quantiles: np.ndarray, points: np.ndarray) -> np.ndarray:
    ranks = np.linspace(0.0, 1.0, quantiles.size)
    idx = np.searchsorted(quantiles, points, side="right") - 1
    return np.where(idx >= 0, ranks[np.clip(idx, 0, None)], 0.0)


def linf_categorical(baseline: dict[str, int], current: dict[str, int]) -> float:
    """``max_c |p_b(c) - p_c(c)|`` over the union of categories (Deequ, linf_simple).

    Example:
        >>> linf_categorical({"a": 50, "b": 50}, {"a": 80, "b": 20})
        0.3
    """
    n, m = sum(baseline.values()), sum(current.values())
    if n == 0 or m == 0:
        return 0.0
    keys = baseline.keys() | current.keys()
    return round(max(abs(baseline.get(k, 0) / n - current.get(k, 0) / m) for k in keys), 12)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """The value as a number, or None when it is not one (booleans are not numbers)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _classify(
    series: pd.Series,
    num_missing: int,
    finite_sorted: np.ndarray | None = None,
    counted: ValueCounts | None = None,
) -> tuple[np.ndarray, int, dict[str, int], pd.Series | None]:
    """The finite numeric values of the present entries in ascending order, how many entries
    are numbers (infinities included), the count of each value type, and for non-numeric
    columns the count of each distinct value (as text).

    ``finite_sorted`` (numeric columns) and ``counted`` (:func:`counted_by_value` columns) are
    what the drift tests already computed; no row-sized copy is made again then."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        present = series[series.notna()]
        return np.empty(0), 0, {"String": len(present)}, _text_counts(present)
    if pd.api.types.is_integer_dtype(dtype):
        if finite_sorted is None:
            finite_sorted = np.sort(series[series.notna()].to_numpy(dtype=np.float64))
        present = len(series) - num_missing
        return finite_sorted, present, {"Integral": present}, None
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        present = values.size - int(np.count_nonzero(np.isnan(values)))
        if finite_sorted is None:
            finite_sorted = np.sort(values[np.isfinite(values)])
        del values
        integral = _integral_count(finite_sorted)
        return (
            finite_sorted,
            present,
            {"Integral": integral, "Fractional": present - integral},
            None,
        )
    # object, string, category: classify each distinct value once, weight by its count
    # (counted as they are — Arrow strings stay Arrow — without a code per row)
    uniques, per_value = counted if counted is not None else value_counts(series)
    numbers = np.array([_number(u) for u in uniques], dtype=object)
    is_num = np.array([x is not None for x in numbers], dtype=bool)
    as_float = np.array([x if x is not None else np.nan for x in numbers], dtype=np.float64)
    integral_u = is_num & np.isfinite(as_float) & (np.mod(np.nan_to_num(as_float), 1) == 0)
    counts = {
        "Integral": int(per_value[integral_u].sum()),
        "Fractional": int(per_value[is_num & ~integral_u].sum()),
        "String": int(per_value[~is_num].sum()),
    }
    finite_u = is_num & np.isfinite(as_float)
    finite = np.sort(np.repeat(as_float[finite_u], per_value[finite_u]))
    text = pd.Series(per_value, index=[str(u) for u in uniques]).groupby(level=0).sum()
    return (
        finite,
        int(per_value[is_num].sum()),
        counts,
        text.sort_values(ascending=False, kind="stable"),
    )


def _integral_count(finite: np.ndarray) -> int:
    """How many of the (finite) values are whole numbers (``x % 1 == 0``, i.e. ``floor(x) ==
    x``: the same test, several times faster), a block at a time."""
    count = 0
    for start in range(0, finite.size, _CHUNK):
        block = finite[start : start + _CHUNK]
        count += int(np.count_nonzero(np.floor(block) == block))
    return count


def _text_counts(present: pd.Series) -> pd.Series:
    return present.astype(str).value_counts(sort=True)


def _inferred(counts: dict[str, int]) -> InferredType:
    if sum(counts.values()) == 0:
        return "Unknown"
    if counts.get("String", 0):
        return "String"
    return "Fractional" if counts.get("Fractional", 0) else "Integral"


def _numerical(finite: np.ndarray, num_present: int, num_missing: int) -> NumericalStatistics:
    lo, hi = (float(finite[0]), float(finite[-1])) if finite.size else (0.0, 0.0)
    edges = _bucket_edges(lo, hi if hi > lo else lo + 1.0)
    counts = histogram_counts(finite, edges)
    return NumericalStatistics(
        common=CommonStatistics(num_present=num_present, num_missing=num_missing),
        mean=float(finite.mean()) if finite.size else 0.0,
        sum=float(finite.sum()),
        std_dev=float(finite.std()) if finite.size else 0.0,
        min=lo,
        max=hi,
        buckets=[
            KllBucket(lower_bound=float(a), upper_bound=float(b), count=int(c))
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
        ],
        quantiles=_sorted_quantiles(finite, _QUANTILE_RANKS).tolist() if finite.size else [],
    )


def _bucket_edges(first: float, last: float) -> np.ndarray:
    """``np.histogram(values, bins=10, range=(first, last))``'s edges (numpy's arithmetic)."""
    if first == last:  # numpy widens an empty range
        first, last = first - 0.5, last + 0.5
    return np.linspace(first, last, _BUCKETS + 1, endpoint=True, dtype=np.float64)


def _sorted_quantiles(ascending: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``np.quantile(ascending, ranks)`` (method ``linear``, the same arithmetic, so the same
    numbers) for values already in ascending order: no partition of the array again."""
    n = ascending.size
    virtual = (n - 1) * ranks  # numpy's 'linear' method
    below = np.clip(np.floor(virtual), 0, n - 1).astype(np.intp)
    above = np.clip(below + 1, 0, n - 1)
    gamma = virtual - np.floor(virtual)
    a, b = ascending[below], ascending[above]
    diff = b - a
    result: np.ndarray = np.asarray(a + diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


def _strings(counts: pd.Series, num_missing: int) -> StringStatistics:
    return StringStatistics(
        common=CommonStatistics(num_present=int(counts.sum()), num_missing=num_missing),
        distinct_count=len(counts),
        buckets=[
            CategoricalBucket(value=str(v), count=int(c))
            for v, c in counts.iloc[:_MAX_BUCKETS].items()
        ],
    )


def compute_statistics(
    df: pd.DataFrame,
    *,
    presorted: Mapping[str, np.ndarray] | None = None,
    computed: Mapping[str, FeatureStatistics] | None = None,
) -> DatasetStatistics:
    """Per-column statistics of ``df`` in the shape of Model Monitor's ``statistics.json``.

    Args:
        df: The frame.
        presorted: For numeric columns already sorted (by the drift tests), the finite values
            in ascending order; they are not sorted again.
        computed: Columns whose statistics are already known (:func:`column_statistics`, as
            the drift report computes them while it holds their sorted values).

    Example:
        >>> stats = compute_statistics(pd.DataFrame({"age": [30, 40, None]}))
        >>> stats.features[0].inferred_type, stats.features[0].numerical_statistics.mean
        ('Integral', 35.0)
    """
    known, done = presorted or {}, computed or {}
    columns = [(str(name), df[name]) for name in df.columns if str(name) not in done]
    with column_pool(len(df), len(columns)) as pool:
        found = dict(
            pool.map(
                lambda item: (item[0], column_statistics(item[0], item[1], known.get(item[0]))),
                columns,
            )
        )
    features = [done.get(str(name)) or found[str(name)] for name in df.columns]
    return DatasetStatistics(item_count=len(df), features=features)


def column_statistics(
    name: str,
    col: pd.Series,
    finite_sorted: np.ndarray | None = None,
    counted: ValueCounts | None = None,
) -> FeatureStatistics:
    """One column's entry of :func:`compute_statistics` (``finite_sorted``: its finite values
    in ascending order, ``counted``: :func:`~civicml.monitoring._columns.value_counts` of a
    string, object or category column, when the caller has them)."""
    num_missing = int(col.isna().sum())
    finite, num_present, counts, text = _classify(col, num_missing, finite_sorted, counted)
    inferred = _inferred(counts)
    numeric_dtype = pd.api.types.is_numeric_dtype(col.dtype) and not (
        pd.api.types.is_bool_dtype(col.dtype)
    )
    return FeatureStatistics(
        name=name,
        inferred_type=inferred,
        type_counts={k: v for k, v in counts.items() if v},
        numerical_statistics=(
            _numerical(finite, num_present, num_missing) if num_present else None
        ),
        string_statistics=(
            _strings(text if text is not None else _text_counts(col[col.notna()]), num_missing)
            if inferred == "String" or not numeric_dtype
            else None
        ),
    )


def suggest_constraints(statistics: DatasetStatistics) -> BaselineConstraints:
    """Constraints a baseline suggests: type, completeness, non-negativity, domains."""
    features = []
    for f in statistics.features:
        present = sum(f.type_counts.values())
        num = f.numerical_statistics
        strings = f.string_statistics
        domains = None
        if (
            f.inferred_type == "String"
            and strings is not None
            and strings.distinct_count <= _DOMAIN_MAX_DISTINCT
            and strings.distinct_count <= max(1, _DOMAIN_MAX_RATIO * present)
        ):
            domains = sorted(b.value for b in strings.buckets)
        features.append(
            FeatureConstraints(
                name=f.name,
                inferred_type=f.inferred_type,
                completeness=present / statistics.item_count if statistics.item_count else 1.0,
                is_non_negative=(
                    num.min >= 0 if num is not None and f.inferred_type != "String" else None
                ),
                domains=domains,
            )
        )
    return BaselineConstraints(features=features)


def suggest_baseline(df: pd.DataFrame) -> tuple[DatasetStatistics, BaselineConstraints]:
    """Model Monitor's baselining job: ``(statistics, constraints)`` of a baseline frame.

    Example:
        >>> stats, constraints = suggest_baseline(pd.DataFrame({"region": ["north", "south"] * 20}))
        >>> constraints.features[0].domains
        ['north', 'south']
    """
    statistics = compute_statistics(df)
    return statistics, suggest_constraints(statistics)


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def check_constraints(
    constraints: BaselineConstraints,
    current: DatasetStatistics,
    *,
    baseline: DatasetStatistics | None = None,
) -> list[Violation]:
    """Violations of ``constraints`` by the statistics of the current data.

    Args:
        constraints: from :func:`suggest_baseline` (or edited by hand).
        current: :func:`compute_statistics` of the data to check.
        baseline: the baseline statistics; needed for ``baseline_drift_check``.

    Returns:
        The violations, in column order, as ``constraint_violations.json``'s ``violations``.
    """
    config = constraints.monitoring_config
    if config.evaluate_constraints == "Disabled":
        return []
    cur = {f.name: f for f in current.features}
    base = {f.name: f for f in baseline.features} if baseline else {}
    expected = {f.name for f in constraints.features}
    violations: list[Violation] = []
    counts = (
        f"Number of columns in current dataset: {len(cur)}, "
        f"Number of columns in baseline constraints: {len(expected)}."
    )
    for f in constraints.features:
        if f.name not in cur:
            violations.append(
                Violation(
                    feature_name=f.name,
                    constraint_check_type="missing_column_check",
                    description=f"There are missing columns in current dataset. {counts}",
                )
            )
            continue
        violations.extend(
            _feature_violations(f, cur[f.name], base.get(f.name), constraints, current.item_count)
        )
    violations.extend(
        Violation(
            feature_name=name,
            constraint_check_type="extra_column_check",
            description=f"There are extra columns in current dataset. {counts}",
        )
        for name in cur
        if name not in expected
    )
    return violations


def _feature_violations(
    f: FeatureConstraints,
    cur: FeatureStatistics,
    base: FeatureStatistics | None,
    constraints: BaselineConstraints,
    total: int,
) -> list[Violation]:
    config = constraints.monitoring_config
    out: list[Violation] = []
    present = sum(cur.type_counts.values())
    completeness = present / total if total else 1.0
    if completeness < f.completeness - 1e-12:
        out.append(
            Violation(
                feature_name=f.name,
                constraint_check_type="completeness_check",
                description=f"Data completeness requirement is not met. Expected: "
                f"{_pct(f.completeness)} of data is not null. Observed: only "
                f"{_pct(completeness)} of data is not null.",
            )
        )
    if f.inferred_type in ("Integral", "Fractional") and present:
        bad = cur.type_counts.get("String", 0)
        if f.inferred_type == "Integral":
            bad += cur.type_counts.get("Fractional", 0)
        share = bad / present
        if share > config.datatype_check_threshold:
            out.append(
                Violation(
                    feature_name=f.name,
                    constraint_check_type="data_type_check",
                    description=f"Data type match requirement is not met. Expected data type: "
                    f"{f.inferred_type}, expected match: "
                    f"{_pct(1 - config.datatype_check_threshold)}. Observed: only "
                    f"{_pct(1 - share)} of data is {f.inferred_type}.",
                )
            )
    if f.domains is not None and cur.string_statistics is not None and present:
        allowed = set(f.domains)
        inside = sum(b.count for b in cur.string_statistics.buckets if b.value in allowed)
        unknown = 1 - inside / present
        if unknown > config.domain_content_threshold:
            out.append(
                Violation(
                    feature_name=f.name,
                    constraint_check_type="categorical_values_check",
                    description=f"Value set requirement is not met. Expected: "
                    f"{_pct(1 - config.domain_content_threshold)} of data is in the value set "
                    f"{f.domains[:10]}. Observed: only {_pct(1 - unknown)}.",
                )
            )
    dist = config.distribution_constraints
    if base is not None and dist.perform_comparison == "Enabled":
        drift = _drift_distance(f, base, cur, dist.comparison_method, dist.robust_c_alpha)
        if drift is not None:
            distance, categorical = drift
            limit = (
                dist.categorical_comparison_threshold if categorical else dist.comparison_threshold
            )
            if distance > limit:
                method = "linf_robust" if dist.comparison_method == "Robust" else "linf_simple"
                out.append(
                    Violation(
                        feature_name=f.name,
                        constraint_check_type="baseline_drift_check",
                        description=f"Baseline drift distance ({method}): {distance:.4g} "
                        f"exceeds threshold: {limit:g}.",
                    )
                )
    return out


def _drift_distance(
    f: FeatureConstraints,
    base: FeatureStatistics,
    cur: FeatureStatistics,
    method: str,
    c_alpha: float,
) -> tuple[float, bool] | None:
    if f.inferred_type in ("Integral", "Fractional"):
        bn, cn = base.numerical_statistics, cur.numerical_statistics
        if bn is None or cn is None or not bn.quantiles or not cn.quantiles:
            return None
        simple = linf_numeric(bn.quantiles, cn.quantiles)
        n, m, categorical = bn.common.num_present, cn.common.num_present, False
    elif f.inferred_type == "String":
        bs, cs = base.string_statistics, cur.string_statistics
        if bs is None or cs is None:
            return None
        b = {x.value: x.count for x in bs.buckets}
        c = {x.value: x.count for x in cs.buckets}
        simple = linf_categorical(b, c)
        n, m, categorical = sum(b.values()), sum(c.values()), True
    else:
        return None
    distance = linf_robust(simple, n, m, c_alpha) if method == "Robust" else simple
    return distance, categorical
