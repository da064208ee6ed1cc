"""Redaction transforms over Arrow record batches, and the k-anonymity check.

:func:`redact_file` streams a Parquet file batch by batch through the rules into a new Parquet
file (memory bounded by one batch), so the redacted successor is made the way every version is:
ingested from that file. The transforms:

- ``drop``: the column is removed.
- ``mask``: every character but the last ``keep`` becomes ``*``; an e-mail address keeps its
  first letter and its domain (``j***@agency.example``).
- ``hash``: HMAC-SHA256 of the value's text under a secret key, as 64 hex digits. The same value
  gives the same pseudonym within a project (joins and counts still work); without the key a
  pseudonym cannot be reversed or recomputed, unlike a plain hash of a guessable value.
- ``generalize_date``: a date or timestamp (or ISO text) becomes its year (``"1984"``) or month
  (``"1984-03"``).
- ``age_band``: a number becomes its band, ``"30-39"`` for width 10.
- ``postcode_prefix``: a UK postcode keeps its outward code (``"SW1A 1AA"`` → ``"SW1A"``); other
  values their first ``keep`` characters (default 3).

Missing values stay missing. :func:`k_anonymity` groups a table by its quasi-identifiers with
DuckDB (out of core) and reports the smallest group: the table is k-anonymous for that k.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.dataset as pads  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.data.expectations import _fetch, quote_ident, sandbox
from civicml.data.pii_schemas import KAnonymity, RedactAction, RedactionRule

__all__ = ["k_anonymity", "redact_batch", "redact_file"]

_UK_OUTWARD = re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?)\s*\d[A-Z]{2}$")
_BATCH_ROWS = 65_536


def redact_file(
    source: Path, target: Path, rules: list[RedactionRule], *, secrets: dict[str, bytes]
) -> int:
    """Write ``source`` through ``rules`` to ``target`` (Parquet); returns the rows written.

    Raises:
        InvalidInputError: A rule names a column the file lacks, or the file would have no
            column left.
    """
    parquet = pq.ParquetFile(str(source))
    names = parquet.schema_arrow.names
    missing = [r.column for r in rules if r.column not in names]
    if missing:
        raise InvalidInputError(
            f"Column(s) {', '.join(map(repr, missing))} are not in the dataset version.",
            hint=f"Its columns: {', '.join(names[:50])}.",
        )
    if all(any(r.column == n and r.action is RedactAction.DROP for r in rules) for n in names):
        raise InvalidInputError("Every column would be dropped.", hint="Keep at least one column.")
    rows = 0
    writer = None
    try:
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
            out = redact_batch(pa.Table.from_batches([batch]), rules, secrets=secrets)
            if writer is None:
                writer = pq.ParquetWriter(str(target), out.schema)
            writer.write_table(out)
            rows += out.num_rows
        if writer is None:  # no rows: keep the redacted columns
            empty = redact_batch(parquet.schema_arrow.empty_table(), rules, secrets=secrets)
            pq.write_table(empty, str(target))
    finally:
        if writer is not None:
            writer.close()
    return rows


def redact_batch(table: Any, rules: list[RedactionRule], *, secrets: dict[str, bytes]) -> Any:
    """``table`` with each rule applied to its column."""
    for rule in rules:
        index = table.schema.get_field_index(rule.column)
        if rule.action is RedactAction.DROP:
            table = table.remove_column(index)
            continue
        column = table.column(index)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        transform = _transform(rule, column.type, secrets)
        values = [None if v is None else transform(v) for v in column.to_pylist()]
        table = table.set_column(index, rule.column, pa.array(values, pa.string()))
    return table


def _transform(
    rule: RedactionRule, arrow_type: Any, secrets: dict[str, bytes]
) -> Callable[[Any], str | None]:
    action = rule.action
    if action is RedactAction.MASK:
        return lambda v: _mask(_text(v), rule.keep)
    if action is RedactAction.HASH:
        key = secrets[rule.key]
        return lambda v: hmac.new(key, _text(v).encode(), hashlib.sha256).hexdigest()
    if action is RedactAction.GENERALIZE_DATE:
        if not (
            pa.types.is_timestamp(arrow_type)
            or pa.types.is_date(arrow_type)
            or pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type)
        ):
            raise _wrong(rule, arrow_type, "a date, timestamp or ISO date text")
        size = 4 if rule.granularity == "year" else 7
        return lambda v: _date_text(v, size)
    if action is RedactAction.AGE_BAND:
        if not (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)):
            raise _wrong(rule, arrow_type, "a number")
        return lambda v: _band(v, rule.width)
    if action is RedactAction.POSTCODE_PREFIX:
        return lambda v: _postcode(_text(v), rule.keep or 3)
    raise AssertionError(action)  # pragma: no cover


def _wrong(rule: RedactionRule, arrow_type: Any, needs: str) -> InvalidInputError:
    return InvalidInputError(
        f"Column {rule.column!r} is {arrow_type}; {rule.action.value} needs {needs}.",
        hint="Use mask, hash or drop for this column.",
    )


def _text(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mask(text: str, keep: int) -> str:
    if "@" in text and keep == 0:
        local, _, domain = text.rpartition("@")
        return (local[:1] + "***@" + domain) if local else "***@" + domain
    shown = text[-keep:] if keep else ""
    return "*" * (len(text) - len(shown)) + shown


def _date_text(value: Any, size: int) -> str | None:
    text = value.isoformat() if isinstance(value, datetime | date) else str(value).strip()
    try:
        date.fromisoformat(text[:10])
    except ValueError:
        return None  # not a date: nothing of it is kept
    return text[:size]


def _band(value: Any, width: int) -> str | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    low = int(value // width) * width
    return f"{low}-{low + width - 1}"


def _postcode(text: str, keep: int) -> str:
    compact = text.strip().upper()
    found = _UK_OUTWARD.match(compact)
    return found.group(1) if found else compact.replace(" ", "")[:keep]


def k_anonymity(path: Path, quasi_identifiers: list[str]) -> KAnonymity:
    """The k of the Parquet file at ``path`` over ``quasi_identifiers`` and its smallest groups.

    Raises:
        InvalidInputError: A quasi-identifier is not a column of the file.
    """
    data = pads.dataset(str(path), format="parquet")
    missing = [c for c in quasi_identifiers if c not in data.schema.names]
    if missing:
        raise InvalidInputError(
            f"Quasi-identifier column(s) {', '.join(map(repr, missing))} are not in the "
            "redacted version.",
            hint="Name columns that remain after the redaction (a dropped column is gone).",
        )
    cols = ", ".join(quote_ident(c) for c in quasi_identifiers)
    with sandbox({"data": data}) as con:
        groups = f"SELECT {cols}, count(*) AS count FROM data GROUP BY {cols}"
        k, n = con.execute(f"SELECT coalesce(min(count), 0), count(*) FROM ({groups}) g").fetchone()  # type: ignore[misc]
        smallest = _fetch(con, f"{groups} ORDER BY count, {cols} LIMIT 5")
    return KAnonymity(
        quasi_identifiers=list(quasi_identifiers),
        k=int(k),
        groups=int(n),
        smallest=[
            {
                str(key): _text(v) if v is not None and key != "count" else v
                for key, v in row.items()
            }
            for row in smallest
        ],
    )
