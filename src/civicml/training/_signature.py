"""The input signature of a tabular model: infer it from training data, check rows against it.

A signature is the list of raw input columns a model takes, each ``{"name", "type", "nullable"}``
with an Arrow-like type name: ``int64``, ``float64``, ``string``, ``bool`` or ``timestamp``.
:func:`conform` is the one place that turns user input (a DataFrame or JSON records) into the
frame the fitted pipeline expects, so training and serving see identical dtypes:

========== ================================================ =====================================
type       accepted input                                   given to the pipeline as
========== ================================================ =====================================
int64      integers; floats with integral values            ``float64`` (missing: NaN)
float64    integers and floats (not booleans)               ``float64`` (missing: NaN)
bool       booleans                                         ``object`` True/False (missing: NaN)
string     strings (and categoricals of strings)            ``object`` str (missing: NaN)
timestamp  datetimes; ISO 8601 strings (naive means UTC)    ``datetime64[ns]`` UTC-naive (NaT)
========== ================================================ =====================================

Nulls are accepted in every column: the pipeline imputes them. ``nullable`` records whether the
training data had any, for documentation and drift checks.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError, closest

__all__ = ["ColumnType", "SignatureColumn", "conform", "infer_signature", "to_frame"]

ColumnType = Literal["int64", "float64", "string", "bool", "timestamp"]

_NUMBER_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "decimal"})


class SignatureColumn(TypedDict):
    """One raw input column of a model: its name, Arrow-like type and whether training had nulls."""

    name: str
    type: ColumnType
    nullable: bool


def to_frame(data: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, one record (a mapping) or a sequence of records.

    Raises:
        InvalidInputError: ``data`` is none of these, or is empty.
    """
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, Mapping):
        frame = pd.DataFrame.from_records([dict(data)])
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if not all(isinstance(row, Mapping) for row in data):
            raise InvalidInputError(
                "Input rows must be objects mapping column names to values.",
                hint='Send records such as [{"income": 21000, "region": "North"}].',
            )
        frame = pd.DataFrame.from_records([dict(row) for row in data])
    else:
        raise InvalidInputError(
            f"Input must be a pandas DataFrame or a list of records, not {type(data).__name__}.",
            hint='Send records such as [{"income": 21000, "region": "North"}].',
        )
    if len(frame) == 0:
        raise InvalidInputError("Input has no rows.", hint="Send at least one record.")
    return frame


def infer_signature(frame: pd.DataFrame, columns: Sequence[str]) -> list[SignatureColumn]:
    """The signature of ``columns`` in ``frame``, with types inferred from their values.

    Raises:
        InvalidInputError: A column has no values, mixed types or an unsupported type.
    """
    signature: list[SignatureColumn] = []
    for name in columns:
        series = frame[name]
        column_type = _infer_type(name, series)
        signature.append({"name": name, "type": column_type, "nullable": bool(series.isna().any())})
    return signature


def _infer_type(name: str, series: pd.Series) -> ColumnType:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int64"
    if pd.api.types.is_float_dtype(dtype):
        return "float64"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    if isinstance(dtype, pd.CategoricalDtype):
        kind = pd.api.types.infer_dtype(dtype.categories, skipna=True)
    elif pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
    else:
        raise InvalidInputError(
            f"Column {name!r} has type {dtype}, which built-in training does not support.",
            hint="Convert it to numbers, strings, booleans or timestamps, or leave it out "
            "with features=[...].",
        )
    by_kind: dict[str, ColumnType] = {
        "string": "string",
        "boolean": "bool",
        "integer": "int64",
        "floating": "float64",
        "mixed-integer-float": "float64",
        "decimal": "float64",
        "datetime": "timestamp",
        "datetime64": "timestamp",
        "date": "timestamp",
    }
    if kind == "empty":
        raise InvalidInputError(
            f"Column {name!r} has no values (every row is missing).",
            hint="Leave it out with features=[...].",
        )
    if kind not in by_kind:
        raise InvalidInputError(
            f"Column {name!r} mixes value types ({kind}); a feature needs one type.",
            hint="Convert the column to one type (for example strings) before training.",
        )
    return by_kind[kind]


def conform(
    data: Any, signature: Sequence[SignatureColumn], *, allow_extra: bool = False
) -> pd.DataFrame:
    """Check input rows against ``signature`` and return them in the pipeline's dtypes.

    Args:
        data: A DataFrame, one record or a sequence of records.
        signature: The model's input columns.
        allow_extra: Ignore columns the signature does not name instead of refusing them.

    Returns:
        A new frame with exactly the signature's columns, in its order.

    Raises:
        InvalidInputError: A column is missing, unexpected, or has values of the wrong type;
            the message names the column and ``details`` lists every problem found.
    """
    records = _records(data)
    if records is not None:
        return _conform_records(records, signature, allow_extra=allow_extra)
    frame = to_frame(data)
    names = [column["name"] for column in signature]
    missing = [name for name in names if name not in frame.columns]
    extra = [str(name) for name in frame.columns if name not in set(names)]
    problems: list[dict[str, Any]] = [
        {"column": name, "problem": "missing", "expected": column["type"]}
        for name, column in zip(names, signature, strict=True)
        if name in missing
    ]
    if not allow_extra:
        problems += [{"column": name, "problem": "unexpected"} for name in extra]
    converted: dict[str, Any] = {}
    changed = False
    for column in signature:
        if column["name"] in missing:
            continue
        series = frame[column["name"]]
        result = _convert(series, column["type"])
        changed = changed or result is not series
        if isinstance(result, str):
            problems.append(
                {
                    "column": column["name"],
                    "problem": "wrong_type",
                    "expected": column["type"],
                    "got": result,
                }
            )
        else:
            converted[column["name"]] = result
    if problems:
        raise _input_error(problems, names)
    if not changed and frame.columns.is_unique:
        # Every column already in the pipeline's dtype: select them (a copy on write) instead
        # of building a frame from the columns, which copies them all into one block.
        return frame[names]
    return pd.DataFrame(converted, index=frame.index, columns=names)


def _records(data: Any) -> list[Mapping[str, Any]] | None:
    """``data`` as a non-empty list of records, or ``None`` when it is something else."""
    if isinstance(data, Mapping):
        return [data]
    if isinstance(data, list | tuple) and data and all(isinstance(row, Mapping) for row in data):
        return list(data)
    return None


def _conform_records(
    records: list[Mapping[str, Any]], signature: Sequence[SignatureColumn], *, allow_extra: bool
) -> pd.DataFrame:
    """:func:`conform` for JSON-like records, checking values in Python: the serving fast path.

    A column absent from every record is missing; absent from some, it is null in those.
    """
    names = [column["name"] for column in signature]
    known = set(names)
    present: dict[str, None] = {}
    for record in records:
        present.update(dict.fromkeys(record))
    problems: list[dict[str, Any]] = [
        {"column": column["name"], "problem": "missing", "expected": column["type"]}
        for column in signature
        if column["name"] not in present
    ]
    if not allow_extra:
        problems += [
            {"column": str(name), "problem": "unexpected"} for name in present if name not in known
        ]
    columns: dict[str, Any] = {}
    for column in signature:
        name = column["name"]
        if name not in present:
            continue
        values = [record.get(name) for record in records]
        result = _convert_values(values, column["type"])
        if isinstance(result, str):
            problems.append(
                {"column": name, "problem": "wrong_type", "expected": column["type"], "got": result}
            )
        else:
            columns[name] = result
    if problems:
        raise _input_error(problems, names)
    return pd.DataFrame(columns, columns=names)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _convert_values(values: list[Any], column_type: ColumnType) -> pd.Series | str:
    """One column of records in the pipeline's dtype, or why its values do not fit."""
    if column_type in ("int64", "float64"):
        numbers = np.empty(len(values), dtype="float64")
        for i, value in enumerate(values):
            if _is_null(value):
                numbers[i] = np.nan
            elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(
                value, bool | np.bool_
            ):
                numbers[i] = value
                if column_type == "int64" and not float(value).is_integer():
                    return f"non-integer values (e.g. {_plain(value)!r})"
            else:
                return _describe_value(value)
        return pd.Series(numbers, dtype="float64")
    if column_type == "timestamp":
        if not all(
            _is_null(v) or isinstance(v, str | datetime.date | np.datetime64) for v in values
        ):
            return _describe_value(next(v for v in values if not _is_null(v)))
        fast = _parse_iso(values)
        if fast is not None:
            return pd.Series(fast, dtype="datetime64[ns]")
        return _convert_timestamp(pd.Series(values, dtype=object), "string")
    wanted: tuple[type, ...] = (str,) if column_type == "string" else (bool, np.bool_)
    cells = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if _is_null(value):
            cells[i] = np.nan
        elif isinstance(value, wanted):
            cells[i] = _plain(value)
        else:
            return _describe_value(value)
    return pd.Series(cells, dtype=object)


def _parse_iso(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """ISO 8601 strings as UTC-naive ``datetime64[ns]`` with the standard library (fast for few
    values), or ``None`` when a value needs pandas' parser (which also reports bad values)."""
    stamps: list[Any] = []
    for value in values:
        if _is_null(value):
            stamps.append(None)
            continue
        if not isinstance(value, str):
            return None
        try:
            stamp = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(datetime.UTC).replace(tzinfo=None)
        stamps.append(stamp)
    return np.array(stamps, dtype="datetime64[ns]")


def _describe_value(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int):
        kind = "integer"
    elif isinstance(value, float):
        kind = "float"
    elif isinstance(value, str):
        kind = "string"
    else:
        kind = type(value).__name__
    return f"{kind} values (e.g. {value!r})"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _input_error(problems: list[dict[str, Any]], names: list[str]) -> InvalidInputError:
    first = problems[0]
    column = first["column"]
    if first["problem"] == "missing":
        message = f"Input is missing column {column!r} ({first['expected']})."
        hint = "Every request must carry all model input columns: " + ", ".join(names) + "."
    elif first["problem"] == "unexpected":
        message = f"Input has unexpected column {column!r}, which the model does not take."
        hint = closest(column, names) or "Model input columns: " + ", ".join(names) + "."
    else:
        message = f"Column {column!r} should be {first['expected']} but has {first['got']}."
        hint = "Send values of the type in the model signature; nulls are allowed."
    if len(problems) > 1:
        message += f" ({len(problems) - 1} more problem(s) in details.)"
    return InvalidInputError(message, hint=hint, details=problems)


def _convert(series: pd.Series, column_type: ColumnType) -> pd.Series | str:
    """The series in the pipeline's dtype, or a description of why its values do not fit."""
    dtype = series.dtype
    is_object = pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
        is_object = True
    kind = pd.api.types.infer_dtype(series, skipna=True) if is_object else None
    if kind == "empty":
        return _all_missing(series, column_type)
    if column_type in ("int64", "float64"):
        return _convert_number(series, column_type, kind)
    if column_type == "bool":
        if pd.api.types.is_bool_dtype(dtype) or kind == "boolean":
            return series.astype(object).where(series.notna(), np.nan)
        return _describe(series, kind)
    if column_type == "string":
        if kind == "string":
            return series.astype(object).where(series.notna(), np.nan)
        return _describe(series, kind)
    return _convert_timestamp(series, kind)


def _all_missing(series: pd.Series, column_type: ColumnType) -> pd.Series:
    if column_type in ("int64", "float64"):
        return pd.Series(np.nan, index=series.index, dtype="float64")
    if column_type == "timestamp":
        return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
    return pd.Series(np.nan, index=series.index, dtype=object)


def _convert_number(
    series: pd.Series, column_type: ColumnType, kind: str | None
) -> pd.Series | str:
    dtype = series.dtype
    numeric = (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    ) or kind in _NUMBER_KINDS
    if not numeric:
        return _describe(series, kind)
    if dtype == np.float64:
        values = series  # already the pipeline's dtype: nothing to convert (nor copy)
    else:
        values = pd.to_numeric(series, errors="coerce").astype("float64")
    if column_type == "int64":
        present = values.to_numpy()[~np.isnan(values.to_numpy())]
        if not np.all(np.isfinite(present)) or not np.all(present == np.floor(present)):
            sample = present[~np.isfinite(present) | (present != np.floor(present))][0]
            return f"non-integer values (e.g. {sample.item()!r})"
    return values


def _convert_timestamp(series: pd.Series, kind: str | None) -> pd.Series | str:
    if pd.api.types.is_datetime64_any_dtype(series.dtype) or kind in (
        "datetime",
        "datetime64",
        "date",
        "string",
    ):
        try:
            stamps = pd.to_datetime(series, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            return "values that are not ISO 8601 timestamps"
        return stamps.dt.tz_convert(None).astype("datetime64[ns]")
    return _describe(series, kind)


def _describe(series: pd.Series, kind: str | None) -> str:
    """What the values of a column that does not fit look like, e.g. ``string values ('abc')``."""
    if kind is None:
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind = "boolean"
        elif pd.api.types.is_integer_dtype(dtype):
            kind = "integer"
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = "floating"
        else:
            kind = str(dtype)
    names = {"boolean": "bool", "integer": "integer", "floating": "float", "string": "string"}
    present = series.dropna()
    first = present.iloc[0] if len(present) else None
    if isinstance(first, np.generic):
        first = first.item()
    example = f" (e.g. {first!r})" if first is not None else ""
    return f"{names.get(kind, kind)} values{example}"
