"""Strict JSON for request bodies: one parser for every route that reads JSON (and one compact,
strict encoder for the hot answers, :func:`compact_dumps`).

Python's :func:`json.loads` accepts what a careful API must not: an object with the same key
twice (the last one silently wins, so ``{"name": "a", "name": "b"}`` means something other than
what a reviewer reads), bare ``NaN``/``Infinity`` (not JSON at all; the answer to such a body
would not be JSON either), and nesting deep enough to exhaust the interpreter's recursion limit
(``RecursionError``, a 500). :func:`loads` refuses each with a 4xx that says what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import JSONDecodeError
from typing import Any

from civicml.core.errors import BadRequestError, InvalidInputError

__all__ = ["MAX_DEPTH", "compact_dumps", "loads"]

#: Deepest nesting of arrays and objects a request body may have.
MAX_DEPTH = 64


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _compact_encoder() -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has _json
        return json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
    encoder = make(
        None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    join = "".join

    def compact_dumps(value: Any) -> str:
        return join(encoder(value, 0))

    return compact_dumps


#: ``JSONEncoder(allow_nan=False, separators=(",", ":")).encode``, the same text (ASCII; a NaN
#: or infinity is a ValueError), without the encoder that method builds, and the closures it
#: defines, on every call: the C encoder is built once. No check for cycles: a value that holds
#: itself fails with RecursionError rather than ValueError. 2-3x faster on a short list.
compact_dumps: Callable[[Any], str] = _compact_encoder()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise BadRequestError(
            f"The JSON body has the key {dup!r} twice in one object.",
            hint="Send each key once; civicml does not guess which value you meant.",
        )
    return obj


def _no_constants(name: str) -> Any:
    raise InvalidInputError(
        f"The JSON body holds the bare number {name}, which is not valid JSON.",
        hint="Send null for a missing value; non-finite numbers are not accepted.",
    )


#: The two decoders :func:`loads` uses, built once (``json.loads`` with a hook builds one, and
#: its scanner, on every call).
_WITH_NAN = json.JSONDecoder(object_pairs_hook=_pairs)
_STRICT = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constants)


def _decode(data: bytes | str, decoder: json.JSONDecoder) -> Any:
    """``json.loads(data, …)`` with ``decoder``'s options: the same text decoding (UTF-8, -16
    or -32 detected in bytes; a UTF-8 byte-order mark refused in text), the same errors."""
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
        return decoder.decode(data)
    return decoder.decode(data.decode(json.detect_encoding(data), "surrogatepass"))


def _depth(value: Any, limit: int) -> int:
    """The nesting depth of ``value``, stopping as soon as it exceeds ``limit`` (iterative)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def loads(
    data: bytes | str,
    *,
    allow_nan: bool = False,
    max_depth: int = MAX_DEPTH,
    what: str = "request body",
) -> Any:
    """Parse JSON strictly.

    Args:
        data: The body (UTF-8 bytes or text).
        allow_nan: Accept bare ``NaN``/``Infinity``/``-Infinity`` (metrics keep them).
        max_depth: Deepest nesting of arrays and objects accepted.
        what: What is parsed, for the error message.

    Raises:
        BadRequestError: Not JSON, a duplicate key, or nested deeper than ``max_depth`` (400).
        InvalidInputError: A bare non-finite number when ``allow_nan`` is false (422).

    Example:
        >>> loads(b'{"records": [{"income": 1}]}')
        {'records': [{'income': 1}]}
    """
    try:
        value = _decode(data, _WITH_NAN if allow_nan else _STRICT)
    except RecursionError as err:
        raise _too_deep(what, max_depth) from err
    except UnicodeDecodeError as err:
        raise BadRequestError(
            f"The {what} is not UTF-8 text.", hint="Send JSON encoded as UTF-8."
        ) from err
    except JSONDecodeError as err:
        raise BadRequestError(
            f"The {what} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}.",
            hint="Check the JSON syntax (quotes, commas, brackets).",
        ) from err
    if (
        isinstance(value, dict | list)
        and not _few_brackets(data, max_depth)
        and _depth(value, max_depth) > max_depth
    ):
        raise _too_deep(what, max_depth)
    return value


def _few_brackets(data: bytes | str, limit: int) -> bool:
    """At most ``limit`` opening brackets in ``data``: nothing in it nests deeper, and walking
    the parsed value is unnecessary. (Every level of nesting opens with ``[`` or ``{``, whose
    byte is in the text in UTF-8, UTF-16 and UTF-32 alike; brackets in strings only count
    more.)"""
    if isinstance(data, str):
        return data.count("[") + data.count("{") <= limit
    return data.count(b"[") + data.count(b"{") <= limit


def _too_deep(what: str, limit: int) -> BadRequestError:
    return BadRequestError(
        f"The {what} nests arrays or objects more than {limit} levels deep.",
        hint=f"Flatten the body; at most {limit} levels of nesting are accepted.",
    )
