"""Column profiles computed incrementally, one record batch at a time, in bounded memory.

Counts, missing values, min, max and mean are exact; the standard deviation is exact too
(Chan et al.'s pairwise update of count, mean and M2). Quantiles come from a uniform reservoir
sample (Vitter's algorithm R, vectorised per batch, seeded so the same input gives the same
profile): exact while a column has at most :data:`RESERVOIR_SIZE` values, an estimate with a rank
error of about ``1/sqrt(RESERVOIR_SIZE)`` (under 1 %) beyond. Categorical value counts are exact
up to :data:`MAX_TRACKED_VALUES` distinct values; past that the rarest are dropped (their counts
become lower bounds, as in the Misra-Gries summary) and the distinct count is a k-minimum-values
estimate over 64-bit hashes of the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from civicml.data.schemas import ColumnKind, ColumnProfile, TopValue

__all__ = ["MAX_TRACKED_VALUES", "RESERVOIR_SIZE", "Profiler", "column_kind"]

RESERVOIR_SIZE = 20_000
MAX_TRACKED_VALUES = 50_000
KMV_SIZE = 4096
TOP_VALUES = 10
QUANTILES = {"p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
_SEED = 20_240_601


def column_kind(arrow_type: Any) -> ColumnKind:
    """How a column of ``arrow_type`` is profiled."""
    t = pa.types
    if t.is_boolean(arrow_type):
        return ColumnKind.BOOLEAN
    if t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return ColumnKind.NUMERIC
    if t.is_timestamp(arrow_type) or t.is_date(arrow_type):
        return ColumnKind.DATETIME
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_dictionary(arrow_type):
        return ColumnKind.CATEGORICAL
    return ColumnKind.OTHER


@dataclass(slots=True)
class _Column:
    name: str
    type: Any
    kind: ColumnKind
    count: int = 0
    missing: int = 0
    min: Any = None
    max: Any = None
    mean: float = 0.0
    m2: float = 0.0
    seen: int = 0  # values offered to the reservoir
    reservoir: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0))
    true_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    pruned: bool = False
    kmv: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0, dtype=np.uint64))


class Profiler:
    """Accumulates the profile of a table batch by batch.

    Args:
        schema: The Arrow schema every batch has.

    Example:
        >>> import pyarrow as pa
        >>> p = Profiler(pa.schema([("x", pa.int64())]))
        >>> p.update(pa.record_batch([pa.array([1, 2, None])], names=["x"]))
        >>> p.result()[0].mean
        1.5
    """

    def __init__(self, schema: Any) -> None:
        self._columns = [_Column(f.name, f.type, column_kind(f.type)) for f in schema]
        self._rng = np.random.default_rng(_SEED)
        self.rows = 0

    def update(self, batch: Any) -> None:
        """Add one record batch (with the profiler's schema)."""
        self.rows += batch.num_rows
        for col, array in zip(self._columns, batch.columns, strict=True):
            if col.kind is ColumnKind.NUMERIC:
                self._numeric(col, array)
            elif col.kind is ColumnKind.BOOLEAN:
                valid = array.drop_null()
                col.count += len(valid)
                col.missing += array.null_count
                col.true_count += int(pc.sum(valid).as_py() or 0)
            elif col.kind is ColumnKind.DATETIME:
                self._extremes(col, array.drop_null(), array.null_count)
            elif col.kind is ColumnKind.CATEGORICAL:
                self._categorical(col, array)
            else:
                col.missing += array.null_count
                col.count += len(array) - array.null_count

    def result(self) -> list[ColumnProfile]:
        """The profile of every batch added so far, in column order."""
        return [self._profile(col) for col in self._columns]

    # Kinds --------------------------------------------------------------------------------
    def _extremes(self, col: _Column, valid: Any, missing: int) -> None:
        col.count += len(valid)
        col.missing += missing
        if len(valid):
            low, high = pc.min_max(valid).values()
            lo, hi = low.as_py(), high.as_py()
            col.min = lo if col.min is None else min(col.min, lo)
            col.max = hi if col.max is None else max(col.max, hi)

    def _numeric(self, col: _Column, array: Any) -> None:
        if pa.types.is_decimal(array.type):
            array = array.cast(pa.float64())
        missing = array.null_count
        valid = array.drop_null()
        if pa.types.is_floating(array.type):
            nan = pc.is_nan(valid)
            missing += int(pc.sum(nan).as_py() or 0)
            valid = valid.filter(pc.invert(nan))
        self._extremes(col, valid, missing)
        n = len(valid)
        if not n:
            return
        values = valid.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):  # infinities make mean/std None
            mean = float(values.mean())
            m2 = float(((values - mean) ** 2).sum())
            total = col.seen + n
            delta = mean - col.mean
            col.mean += delta * n / total
            col.m2 += m2 + delta * delta * col.seen * n / total
        self._sample(col, values)

    def _sample(self, col: _Column, values: np.ndarray[Any, Any]) -> None:
        """Algorithm R over one batch: value i (0-based overall) replaces a random slot with
        probability RESERVOIR_SIZE / (i + 1)."""
        room = RESERVOIR_SIZE - len(col.reservoir)
        if room > 0:
            col.reservoir = np.concatenate([col.reservoir, values[:room]])
        rest = values[max(room, 0) :]
        start = col.seen + max(min(room, len(values)), 0)
        col.seen += len(values)
        if len(rest):
            positions = np.arange(start, start + len(rest))
            slots = (self._rng.random(len(rest)) * (positions + 1)).astype(np.int64)
            keep = slots < RESERVOIR_SIZE
            col.reservoir[slots[keep]] = rest[keep]

    def _categorical(self, col: _Column, array: Any) -> None:
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        col.missing += array.null_count
        valid = array.drop_null()
        col.count += len(valid)
        if not len(valid):
            return
        self._hash_sketch(col, valid)
        counted = pc.value_counts(valid)
        values = counted.field("values").to_pylist()
        counts = counted.field("counts").to_pylist()
        for value, n in zip(values, counts, strict=True):
            col.counts[value] = col.counts.get(value, 0) + n
        if len(col.counts) > MAX_TRACKED_VALUES:
            keep = sorted(col.counts.items(), key=lambda kv: -kv[1])[: MAX_TRACKED_VALUES // 2]
            col.counts = dict(keep)
            col.pruned = True

    @staticmethod
    def _hash_sketch(col: _Column, valid: Any) -> None:
        from pandas.util import hash_array  # type: ignore[import-untyped]

        hashes = hash_array(valid.to_numpy(zero_copy_only=False).astype(object))
        merged = np.unique(np.concatenate([col.kmv, hashes.astype(np.uint64)]))
        col.kmv = merged[:KMV_SIZE]

    # Results ------------------------------------------------------------------------------
    def _profile(self, col: _Column) -> ColumnProfile:
        base: dict[str, Any] = {
            "name": col.name,
            "type": str(col.type),
            "kind": col.kind,
            "count": col.count,
            "missing": col.missing,
        }
        if col.kind is ColumnKind.NUMERIC:
            if col.count:
                sample = np.sort(col.reservoir)
                with np.errstate(invalid="ignore"):  # infinities interpolate to NaN: None
                    quantiles = {
                        k: _finite(float(np.quantile(sample, q))) for k, q in QUANTILES.items()
                    }
                base |= {
                    "min": _number(col.min),
                    "max": _number(col.max),
                    "mean": _finite(col.mean),
                    "std": _finite(math.sqrt(col.m2 / (col.count - 1))) if col.count > 1 else None,
                    "quantiles": quantiles,
                    "quantiles_exact": col.seen <= RESERVOIR_SIZE,
                }
        elif col.kind is ColumnKind.BOOLEAN:
            base |= {
                "true_count": col.true_count,
                "false_count": col.count - col.true_count,
                "mean": col.true_count / col.count if col.count else None,
            }
        elif col.kind is ColumnKind.DATETIME:
            base |= {"min": _iso(col.min), "max": _iso(col.max)}
        elif col.kind is ColumnKind.CATEGORICAL:
            top = sorted(col.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
            base |= {
                "distinct": len(col.counts) if not col.pruned else _kmv_estimate(col.kmv),
                "distinct_exact": not col.pruned,
                "top": [TopValue(value=str(v), count=n) for v, n in top],
            }
        return ColumnProfile(**base)


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return _finite(float(value))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _kmv_estimate(kmv: np.ndarray[Any, Any]) -> int:
    """Distinct values from the k smallest 64-bit hashes: (k - 1) / (k-th smallest / 2^64)."""
    if len(kmv) < KMV_SIZE:
        return len(kmv)
    kth = float(kmv[-1]) / 2.0**64
    return round((KMV_SIZE - 1) / kth)
