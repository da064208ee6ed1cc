"""Strict, bounded field types for request bodies: one definition for every route.

FastAPI validates a JSON body in pydantic's *python* mode, where ``int`` accepts ``true`` (as 1),
``1.0`` and ``"1"``, and ``float`` accepts ``"1.5"``: a client's mistake would silently become a
number. A model-wide ``strict=True`` would also refuse enums and datetimes sent as strings, so the
strictness is per field, through these types. Integers are bounded to what the database stores
(64-bit signed), so an oversized number is a 422, never a driver ``OverflowError`` (a 500).

Example:
    >>> from pydantic import BaseModel
    >>> class Body(BaseModel):
    ...     step: NonNegativeInt64 = 0
    >>> Body.model_validate({"step": 3}).step
    3
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BeforeValidator, Field, Strict, WithJsonSchema

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "FiniteFloat",
    "Float",
    "Int64",
    "MetricNumber",
    "NonNegativeInt32",
    "NonNegativeInt64",
    "PositiveInt64",
    "StrictBool",
    "StrictInt",
]

#: Bounds of a 64-bit signed integer (SQLite INTEGER, PostgreSQL BIGINT).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

#: A whole number, never a boolean, float or string: for fields with their own narrower bounds,
#: given on the field (``StrictInt = Field(ge=1, le=1000)``). Bounds in these ``Annotated`` types
#: are not overridden by a field's own ``ge``/``le``, hence this unbounded one.
StrictInt = Annotated[int, Strict()]
#: Any whole number the database can store; refuses booleans, floats and strings.
Int64 = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
#: A whole number from 0 (steps, offsets, timestamps).
NonNegativeInt64 = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
#: A whole number from 1 (version numbers, page sizes).
PositiveInt64 = Annotated[int, Strict(), Field(ge=1, le=INT64_MAX)]
#: A whole number from 0 for a 32-bit column (e.g. a process id).
NonNegativeInt32 = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX)]
#: A number: an integer or a float, never a boolean or a string.
Float = Annotated[float, Strict()]
#: A finite number (JSON's ``1e400`` parses as infinity: refused here).
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
#: ``true`` or ``false`` only (not ``1``, ``"yes"`` or ``"true"``).
StrictBool = Annotated[bool, Strict()]

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _metric_number(value: object) -> object:
    if isinstance(value, str):
        if value in _NON_FINITE:
            return _NON_FINITE[value]
        raise ValueError(
            f'{value!r} is a string: send a JSON number, or "NaN", "Infinity" or "-Infinity"'
        )
    if isinstance(value, bool):
        raise ValueError("a metric value must be a number, not a boolean")
    return value


#: A metric value: a number, or the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (how
#: non-finite values travel in JSON). Booleans and other strings are refused.
MetricNumber = Annotated[
    float,
    Strict(),
    BeforeValidator(_metric_number),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "enum": list(_NON_FINITE)}]}),
]
