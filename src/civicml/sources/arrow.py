"""Python values from a database cursor or JSON messages as Arrow columns, with one schema.

Database rows arrive in chunks (a server-side cursor); the first chunks fix the Arrow schema and
later chunks are cast to it, so the stream of batches has one schema however the values vary.
Values Arrow cannot hold as such become text: ``Decimal`` becomes ``float64`` (documented),
``UUID`` text, nested ``dict`` / ``list`` values compact JSON text; aware timestamps become UTC.
A column whose values mix kinds (numbers in one row, text in another) becomes text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError

__all__ = ["cast_batch", "column", "json_rows", "table_of_rows", "unify"]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _needs_plain(values: Sequence[Any]) -> bool:
    for value in values:
        if value is not None:
            return isinstance(value, Decimal | uuid.UUID | dict | list | tuple | memoryview)
    return False


def column(values: Sequence[Any]) -> Any:
    """One Arrow array of ``values`` (text when the values mix kinds)."""
    data = [_plain(v) for v in values] if _needs_plain(values) else values
    try:
        array = pa.array(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = pa.array([None if v is None else _text(v) for v in data], type=pa.string())
    if pa.types.is_timestamp(array.type) and array.type.tz is not None:
        array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    return array


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def table_of_rows(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """A ``pyarrow.Table`` of ``rows`` (tuples in the order of ``names``)."""
    arrays = [column([r[i] for r in rows]) for i in range(len(names))]
    return pa.Table.from_arrays(arrays, names=list(names))


def unify(schemas: Sequence[Any]) -> Any:
    """One schema for the first batches: a column that is null in one batch takes another's
    type; null in all of them becomes text; differing types become text."""
    first = schemas[0]
    fields = []
    for i, field in enumerate(first):
        types = {s.field(i).type for s in schemas} - {pa.null()}
        kind = types.pop() if len(types) == 1 else pa.string()
        fields.append(pa.field(field.name, kind))
    return pa.schema(fields)


def cast_batch(table: Any, schema: Any) -> Any:
    """``table`` with ``schema``'s types.

    Raises:
        InvalidInputError: A later chunk holds values of another kind than the first ones.
    """
    if table.schema.equals(schema):
        return table
    arrays = []
    for field, array in zip(schema, table.columns, strict=True):
        if array.type == field.type:
            arrays.append(array)
            continue
        try:
            if pa.types.is_string(field.type) and not pa.types.is_null(array.type):
                values = array.to_pylist()
                arrays.append(pa.array([None if v is None else _text(v) for v in values]))
            else:
                arrays.append(array.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidInputError(
                f"Column {field.name!r} changed type while it was read ({field.type} first, "
                f"{array.type} later).",
                hint="Cast the column in the source's query, e.g. CAST(col AS TEXT).",
            ) from err
    return pa.Table.from_arrays(arrays, schema=schema)


def json_rows(bodies: Sequence[bytes]) -> tuple[Any, int]:
    """Message bodies (JSON objects) as a table; bodies that are not JSON objects are counted,
    not stored. Columns appear in the order they are first seen."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for body in bodies:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        if not isinstance(value, dict) or not value:
            bad += 1
            continue
        rows.append(value)
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            names.setdefault(str(key), None)
    table = pa.Table.from_arrays(
        [column([row.get(name) for row in rows]) for name in names], names=list(names)
    )
    return table, bad
