"""Detect personal data in a table, offline: patterns, check digits and column names.

Each column is judged from an evenly spread sample of its values (:func:`scan_table`) and from
its name. A value detector counts the sampled values that match; the share of matches is the
confidence, raised by 0.2 when the column's name agrees (``email``, ``phone``, ``ssn``, …). A
match is more than a shape wherever the identifier has a check: a US social security number
outside the ranges the SSA never issues (area 000, 666, 900-999; group 00; serial 0000), a UK
National Insurance number with a valid prefix and suffix, an IBAN whose mod-97 remainder is 1
with its country's length, a payment card number that passes Luhn with a card network's prefix,
an IP address that :mod:`ipaddress` parses. Dates of birth, person names and ages are judged by
the column name *and* the values' shape (dates with plausible birth years; words with capitals;
whole numbers 0-120); postal addresses by a house number followed by a street word.

The verdict, :func:`classify`: ``personal`` when a direct identifier is found with confidence
0.5 or more, ``confidential`` when only quasi-identifiers (postcodes, ages) or redacted columns
are, ``internal`` otherwise. Nothing is downloaded; no model is used.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from civicml.data.pii_patterns import (
    VALUE_DETECTORS,
    iban_valid,
    luhn_valid,
    name_like,
    possible,
    postcode_like,
)
from civicml.data.pii_schemas import Classification, PiiFinding, PiiType

__all__ = [
    "DETECTED",
    "classify",
    "detect_column",
    "iban_valid",
    "luhn_valid",
    "needs_values",
    "scan_table",
]

#: Confidence from which a finding counts for the classification.
DETECTED = 0.5
_REPORTED = 0.3
_MAX_LEN = 256

_TOKENS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

_NAME_HINTS: dict[PiiType, set[str]] = {
    PiiType.EMAIL: {"email", "mail", "e_mail"},
    PiiType.PHONE: {"phone", "telephone", "tel", "mobile", "cell", "fax", "msisdn"},
    PiiType.US_SSN: {"ssn", "social", "sin"},
    PiiType.UK_NINO: {"nino", "ni", "insurance"},
    PiiType.IBAN: {"iban", "account", "bank"},
    PiiType.PAYMENT_CARD: {"card", "pan", "cc", "credit", "debit"},
    PiiType.IP_ADDRESS: {"ip", "ipv4", "ipv6", "ipaddress"},
    PiiType.POSTAL_ADDRESS: {"address", "addr", "street", "residence", "domicile"},
    PiiType.POSTCODE: {"postcode", "zip", "zipcode", "postal", "plz", "cp"},
}
#: The value detectors a column of whole numbers is tested with (under a hinting name).
_NUMERIC_DETECTORS = (PiiType.PAYMENT_CARD, PiiType.PHONE, PiiType.US_SSN)
_DOB_NAMES = re.compile(r"(^|_)(dob|birth|born|birthdate|birthday|date_of_birth|naissance)($|_)")
_AGE_NAMES = re.compile(r"^(age|age_years|age_at_\w+|applicant_age|client_age|person_age)$")
_NOT_PERSON = {
    "file",
    "product",
    "company",
    "org",
    "organisation",
    "organization",
    "business",
    "street",
    "city",
    "dataset",
    "column",
    "table",
    "host",
    "domain",
    "agency",
    "office",
    "program",
    "programme",
    "brand",
    "model",
    "feature",
    "field",
    "region",
    "country",
    "state",
    "department",
    "team",
    "project",
    "service",
    "branch",
    "app",
}


def _tokens(name: str) -> list[str]:
    return [t.lower() for t in _TOKENS.findall(name)]


def _hinted(kind: PiiType, tokens: list[str], joined: str) -> bool:
    hints = _NAME_HINTS.get(kind, set())
    return bool(hints & set(tokens)) or joined in hints


def _person_column(tokens: list[str], joined: str) -> bool:
    if set(tokens) & _NOT_PERSON:
        return False
    if joined in {"name", "surname", "forename", "firstname", "lastname", "fullname", "givenname"}:
        return True
    return "name" in tokens or "surname" in tokens


def needs_values(name: str, arrow_type: Any) -> bool:
    """Whether :func:`detect_column` can find anything in a column of this name and type from
    its values: numbers, dates and booleans only under a name that hints at personal data (a
    scan need not read the others)."""
    tokens, joined = _tokens(name), "_".join(_tokens(name))
    kind_of = pa.types
    if _DOB_NAMES.search(joined):
        return True
    if kind_of.is_integer(arrow_type) or kind_of.is_floating(arrow_type):
        if _AGE_NAMES.match(joined):
            return True
        if kind_of.is_floating(arrow_type):
            return False
        return any(_hinted(k, tokens, joined) for k in (*_NUMERIC_DETECTORS, PiiType.POSTCODE))
    temporal = kind_of.is_timestamp(arrow_type) or kind_of.is_date(arrow_type)
    return not (temporal or kind_of.is_boolean(arrow_type))


def detect_column(name: str, arrow_type: Any, values: list[Any]) -> list[PiiFinding]:
    """Findings for one column from its name and sampled non-missing ``values``. Each distinct
    text is tested once and counted as often as it occurs."""
    tokens, joined = _tokens(name), "_".join(_tokens(name))
    found: list[PiiFinding] = []
    kind_of = pa.types
    temporal = kind_of.is_timestamp(arrow_type) or kind_of.is_date(arrow_type)
    if _DOB_NAMES.search(joined):
        dates = [v for v in values if _birth_date(v)]
        share = len(dates) / len(values) if values else 0.0
        if share > 0 or temporal:
            found.append(
                _finding(
                    name,
                    PiiType.DATE_OF_BIRTH,
                    max(share, 0.6),
                    len(dates),
                    len(values),
                    "values+name",
                )
            )
    if _AGE_NAMES.match(joined) and (
        kind_of.is_integer(arrow_type) or kind_of.is_floating(arrow_type)
    ):
        ages = [v for v in values if isinstance(v, int | float) and 0 <= v <= 120]
        share = len(ages) / len(values) if values else 0.0
        if share >= 0.9:
            found.append(
                _finding(name, PiiType.AGE, min(1.0, share), len(ages), len(values), "values+name")
            )
    if temporal or kind_of.is_floating(arrow_type) or kind_of.is_boolean(arrow_type):
        return found
    texts = _texts(values)
    if not texts:
        return found
    total = texts.total()
    matches = _Matcher(texts)
    numeric = kind_of.is_integer(arrow_type)
    for kind, test in VALUE_DETECTORS.items():
        if numeric and kind not in _NUMERIC_DETECTORS:
            continue
        hinted = _hinted(kind, tokens, joined)
        if numeric and not hinted:
            continue
        matched = matches.count(kind, test)
        if matched:
            share = matched / total
            evidence = "values+name" if hinted else "values"
            found.append(
                _finding(name, kind, min(1.0, share + 0.2 * hinted), matched, total, evidence)
            )
    if _hinted(PiiType.POSTCODE, tokens, joined):
        matched = matches.count(PiiType.POSTCODE, postcode_like)
        if matched:
            found.append(
                _finding(
                    name,
                    PiiType.POSTCODE,
                    min(1.0, matched / total + 0.2),
                    matched,
                    total,
                    "values+name",
                )
            )
    if _person_column(tokens, joined) and not numeric:
        matched = matches.count(PiiType.PERSON_NAME, name_like)
        share = matched / total
        if share >= 0.5:
            found.append(
                _finding(
                    name,
                    PiiType.PERSON_NAME,
                    min(1.0, 0.4 + share * 0.6),
                    matched,
                    total,
                    "values+name",
                )
            )
    elif (
        _hinted(PiiType.POSTAL_ADDRESS, tokens, joined)
        and not numeric
        and not any(f.type is PiiType.POSTAL_ADDRESS for f in found)
    ):
        found.append(_finding(name, PiiType.POSTAL_ADDRESS, 0.5, 0, total, "name"))
    return _best_first(found)


def _texts(values: list[Any]) -> Counter[str]:
    """The values as stripped texts (at most :data:`_MAX_LEN` characters, none empty), counted:
    each distinct value converted once."""
    try:
        distinct = Counter(v for v in values if v is not None)
    except TypeError:  # unhashable values (lists, dicts of nested columns): one at a time
        distinct = Counter()
        for v in values:
            if v is not None:
                distinct[str(v)] += 1
    texts: Counter[str] = Counter()
    for v, n in distinct.items():
        text = v if isinstance(v, str) else str(v)
        if len(text) <= _MAX_LEN and (text := text.strip()):
            texts[text] += n
    return texts


class _Matcher:
    """Counts the texts a detector accepts, calling it once per distinct text and, for many
    texts, only on those it can accept (:func:`~civicml.data.pii_patterns.possible`)."""

    _VECTOR_FROM = 64  # distinct texts from which Arrow's prefilter pays

    def __init__(self, texts: Counter[str]) -> None:
        self._texts = texts
        self._keys = list(texts)
        self._possible = None
        if len(self._keys) >= self._VECTOR_FROM:
            try:
                self._possible = possible(self._keys)
            except (UnicodeEncodeError, pa.ArrowInvalid):  # not UTF-8 (lone surrogates)
                self._possible = None  # every text goes to the detectors

    def count(self, kind: PiiType, test: Callable[[str], bool]) -> int:
        keys, texts = self._keys, self._texts
        if self._possible is None:
            return sum(texts[t] for t in keys if test(t))
        return sum(texts[keys[i]] for i in np.flatnonzero(self._possible[kind]) if test(keys[i]))


def _best_first(found: list[PiiFinding]) -> list[PiiFinding]:
    kept = [f for f in found if f.confidence >= _REPORTED]
    order = list(VALUE_DETECTORS)  # checksums before shapes when equally confident
    return sorted(
        kept, key=lambda f: (-f.confidence, order.index(f.type) if f.type in order else 99)
    )


def _finding(
    column: str, kind: PiiType, confidence: float, matched: int, sampled: int, evidence: str
) -> PiiFinding:
    return PiiFinding(
        column=column,
        type=kind,
        confidence=round(confidence, 3),
        matched=matched,
        sampled=sampled,
        evidence=evidence,
    )


def _birth_date(value: Any) -> bool:
    moment: date | None = None
    if isinstance(value, datetime):
        moment = value.date()
    elif isinstance(value, date):
        moment = value
    elif isinstance(value, str):
        try:
            moment = date.fromisoformat(value.strip()[:10])
        except ValueError:
            for fmt in ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y"):
                try:
                    moment = datetime.strptime(value.strip(), fmt).date()
                    break
                except ValueError:
                    continue
    return moment is not None and 1900 <= moment.year <= date.today().year


@dataclass(frozen=True, slots=True)
class Scan:
    """What :func:`scan_table` found."""

    findings: list[PiiFinding]
    columns_scanned: int
    rows_scanned: int
    complete: bool


def scan_table(
    table: Any,
    *,
    time_budget_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    schema: Any = None,
) -> Scan:
    """Scan every column of a pyarrow ``table`` (already sampled) within ``time_budget_s``.

    ``schema``: the columns to scan when ``table`` holds only those of them whose values a scan
    looks at (:func:`needs_values`); the others are judged without reading them.
    """
    start = clock()
    findings: list[PiiFinding] = []
    scanned = 0
    for field in table.schema if schema is None else schema:
        if clock() - start > time_budget_s:
            return Scan(findings, scanned, table.num_rows, complete=False)
        if not needs_values(field.name, field.type):
            scanned += 1  # nothing to find in its values
            continue
        column = table.column(field.name)
        if pa.types.is_dictionary(field.type):
            column = column.cast(field.type.value_type)
        values = [v for v in column.to_pylist() if v is not None]
        findings.extend(detect_column(field.name, field.type, values))
        scanned += 1
    return Scan(_best_first(findings), scanned, table.num_rows, complete=True)


def classify(findings: Iterable[PiiFinding]) -> Classification:
    """``personal`` / ``confidential`` / ``internal`` from a scan's findings (see module doc)."""
    level = Classification.INTERNAL
    for f in findings:
        if f.confidence < DETECTED:
            continue
        if f.redacted is not None or f.type.quasi:
            level = max(level, Classification.CONFIDENTIAL, key=lambda c: c.rank)
        else:
            return Classification.PERSONAL
    return level
