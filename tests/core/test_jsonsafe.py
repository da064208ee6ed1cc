"""core/jsonsafe.py: the compact, strict encoder of the hot answers writes what ``json`` writes;
the strict parser reads what ``json`` reads."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from civicml.core.errors import BadRequestError
from civicml.core.jsonsafe import compact_dumps, loads

VALUES: list[Any] = [
    [1, 0, 2],
    [[0.12345678901234, 0.8765432109876], [1e-300, 1.0]],
    ["yes", "no", 'quote " and \\ backslash', "tab\t", "é ü 漢 \U0001f600", "\x00\x1f"],
    {"b": [True, False, None], "a": {"nested": [1.5, -0.0, 10**20]}},
    [],
    {},
    "",
    3,
]


@pytest.mark.parametrize("value", VALUES)
def test_the_same_text_as_json_dumps(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), allow_nan=False)
    assert compact_dumps(value) == expected
    assert compact_dumps(value).isascii()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        compact_dumps([0.5, bad])


def test_what_json_cannot_carry_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        compact_dumps({"a": {1, 2}})


@pytest.mark.parametrize(
    "data",
    [
        b'{"records": [{"age": 41, "income": 1520.5}]}',
        '{"a": [1, 2, {"b": null}]}',
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 with a byte-order mark: bytes may carry one
        '{"a": 1}'.encode("utf-16"),
        '{"a": "é"}'.encode("utf-32-le"),
        bytearray(b'{"a": true}'),
        '\ufeff{"a": 1}',  # text may not
        b"[1, 2",
        b'"\xff"',  # not UTF-8
        b"",
    ],
)
def test_loads_decodes_as_json_loads_does(data: Any) -> None:
    """``loads`` keeps its decoders instead of ``json.loads`` building one per call: the same
    values, and an error where ``json.loads`` has one."""
    try:
        expected = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        with pytest.raises(BadRequestError):
            loads(data)
    else:
        assert loads(data) == expected
