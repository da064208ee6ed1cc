"""One column at a time, with little memory: how often each distinct value occurs (without a
code per row where the column is Arrow strings), and histogram counts of values already sorted
(a search per edge instead of a pass over the values)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
from numpy.typing import NDArray

__all__ = ["ValueCounts", "counted_by_value", "histogram_counts", "value_counts"]

#: Distinct present values in order of first appearance (``pd.factorize``'s) and the count of
#: each (int64; 0 for a float column's infinities).
ValueCounts = tuple[list[Any], NDArray[np.int64]]


def counted_by_value(series: pd.Series) -> bool:
    """Whether the baseline statistics count ``series`` by value (strings, objects,
    categories), rather than as numbers (integers, floats) or as text (booleans, datetimes)."""
    dtype = series.dtype
    return not (
        pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_integer_dtype(dtype)
        or pd.api.types.is_float_dtype(dtype)
    )


def value_counts(series: pd.Series) -> ValueCounts:
    """``pd.factorize(series)``'s distinct values and how often each occurs among the present
    values; for a float column, infinities are listed but counted 0 times.

    Arrow strings are counted by Arrow's hash kernel (no int64 code per row); other columns are
    factorized, the codes shifted in place and counted.
    """
    array = series.array
    if isinstance(array, pd.arrays.ArrowStringArray):
        counted = pc.value_counts(array.__arrow_array__())  # order of first appearance
        values, counts = counted.field("values"), counted.field("counts")
        if values.null_count:
            present = values.is_valid()
            values, counts = values.filter(present), counts.filter(present)
        return values.to_pylist(), np.asarray(counts.to_numpy(), dtype=np.int64)
    codes, uniques = pd.factorize(series, sort=False, use_na_sentinel=True)
    if pd.api.types.is_float_dtype(series.dtype):
        codes[~np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan))] = -1
    codes += 1  # missing (-1) counted in bin 0, then dropped: no filtered copy of the codes
    found = np.bincount(codes, minlength=len(uniques) + 1)[1:]
    return list(uniques), found.astype(np.int64)


def histogram_counts(sorted_values: NDArray[Any], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    """``np.histogram(values, edges)[0]`` on sorted values: bins ``[a, b)``, the last ``[a, b]``."""
    idx = np.searchsorted(sorted_values, edges, side="left")
    idx[-1] = np.searchsorted(sorted_values, edges[-1], side="right")
    return np.diff(idx).astype(np.int64)
