"""The checks of invocation records and model outputs, shared by the model host's paths.

Records must carry every signature column (``null`` for an unknown value) and no non-finite
number; a model's output must be finite. Each failure is an :class:`InvalidInputError` naming the
column and the record (never a value), or the index of the first bad output.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from civicml.core.errors import InvalidInputError

__all__ = [
    "check_keys",
    "non_finite_record",
    "not_finite",
    "numeric_frame",
    "refuse_infinite",
    "refuse_non_finite",
]


def non_finite_record(
    predictions: list[Any], probabilities: list[list[float]] | None, classification: bool
) -> int | None:
    """The index of the first record whose output is not finite, or None (the common case,
    found with one C-level sum: a sum of finite probabilities is finite)."""
    if classification:
        if probabilities is None:
            return None
        with contextlib.suppress(TypeError):
            if math.isfinite(sum(map(sum, probabilities))):
                return None
        for index, row in enumerate(probabilities):
            if not all(isinstance(p, int | float) and math.isfinite(p) for p in row):
                return index
        return None
    with contextlib.suppress(TypeError, OverflowError):
        if math.isfinite(math.fsum(predictions)):
            return None
    for index, value in enumerate(predictions):
        if isinstance(value, float | np.floating) and not math.isfinite(value):
            return index
    return None


def check_keys(rows: list[Any], signature: list[Any]) -> None:
    """Refuse a record that lacks a column (tables would read it as null; an explicit null is
    fine). Columns no record should have are left to the model's own validation."""
    names = {column["name"] for column in signature}
    for index, row in enumerate(rows):
        if isinstance(row, Mapping) and row.keys() != names:
            for column in signature:
                if column["name"] not in row:
                    raise InvalidInputError(
                        f"Input is missing column {column['name']!r} ({column['type']}) in "
                        f"record {index}.",
                        hint="Every record must carry all model input columns (null where a "
                        "value is unknown): " + ", ".join(c["name"] for c in signature) + ".",
                        details=[
                            {
                                "column": column["name"],
                                "problem": "missing",
                                "expected": column["type"],
                                "record": index,
                            }
                        ],
                    )


def refuse_non_finite(rows: Any) -> None:
    """Refuse records holding a non-finite number (NaN, Infinity, -Infinity) in any column.

    ``rows`` is one record (a mapping) or a list of them; anything else (a DataFrame, whose NaN
    means missing) passes. The documented input rule: a non-finite number is a 422 naming the
    column and record; ``null`` (``None``) is the way to send an unknown value.

    Raises:
        InvalidInputError: A value is a non-finite float (``float`` or a NumPy float).
    """
    if isinstance(rows, Mapping):
        rows = [rows]
    if not isinstance(rows, list):
        return
    for index, row in enumerate(rows):
        if isinstance(row, Mapping):
            for name, value in row.items():
                if isinstance(value, float | np.floating) and not math.isfinite(value):
                    not_finite(str(name), index, float(value))


def refuse_infinite(frame: Any, numbers: list[str]) -> None:
    """Refuse an infinity in a validated frame (built from a DataFrame: NaN there is missing)."""
    first: tuple[int, int, float] | None = None  # (row, column, value) of the first infinity
    for column, name in enumerate(numbers):  # column by column: no copy of the whole frame
        values = frame[name].to_numpy(dtype=np.float64, copy=False)
        infinite = np.isinf(values)
        if infinite.any():
            row = int(infinite.argmax())
            if first is None or row < first[0]:
                first = (row, column, float(values[row]))
    if first is not None:
        not_finite(numbers[first[1]], first[0], first[2])


def not_finite(name: str, record: int, value: float) -> NoReturn:
    word = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    raise InvalidInputError(
        f"Column {name!r} has a non-finite value ({word}) in record {record}; numbers must be "
        "finite.",
        hint="Send null (None in Python) for an unknown value.",
        details=[{"column": name, "problem": "not_finite", "record": record, "got": word}],
    )


def numeric_frame(
    rows: list[Any], names: list[str], known: frozenset[str], ints: frozenset[str]
) -> Any:
    """The float64 frame of records whose values all plainly fit ``names``, else ``None``."""
    import pandas as pd  # type: ignore[import-untyped]

    for row in rows:
        if not isinstance(row, dict) or row.keys() != known:
            return None
        for name in names:
            value = row[name]
            kind = type(value)
            if kind is float:
                if name in ints and not value.is_integer() and not math.isnan(value):
                    return None  # a fraction in an integer column: let validate word it
            elif kind is not int and value is not None:
                return None
    values = np.array([[row[name] for name in names] for row in rows], dtype="float64")
    return pd.DataFrame(values, columns=names)
