"""The value detectors of personal data: patterns and check digits (see :mod:`civicml.data.pii`).

Each detector takes one value as text and says whether it is that kind of personal data; the
identifiers with a check are checked: SSA ranges never issued, NINO prefixes, IBAN lengths and
mod-97, card network prefixes and Luhn.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from civicml.data.pii_schemas import PiiType

__all__ = [
    "VALUE_DETECTORS",
    "iban_valid",
    "luhn_valid",
    "name_like",
    "possible",
    "postcode_like",
]

_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}"
)
_PHONES = [
    re.compile(r"^\+\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){1,4}\d{2,4}$"),  # international
    re.compile(r"^00\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){1,4}\d{2,4}$"),
    re.compile(r"^\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}$"),  # NANP 555-123-4567, (555) 123-4567
    re.compile(r"^0\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}$"),  # UK/EU national, trunk prefix 0
]
_SSN = re.compile(r"^(\d{3})-?(\d{2})-?(\d{4})$")
_NINO = re.compile(r"^([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]$")
_NINO_BAD = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
_IBAN = re.compile(r"^([A-Z]{2})(\d{2})([A-Z0-9]{11,30})$")
_IBAN_LENGTHS = {
    "AD": 24,
    "AT": 20,
    "BE": 16,
    "BG": 22,
    "CH": 21,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "EE": 20,
    "ES": 24,
    "FI": 18,
    "FR": 27,
    "GB": 22,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IS": 26,
    "IT": 27,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MT": 31,
    "NL": 18,
    "NO": 15,
    "PL": 28,
    "PT": 25,
    "RO": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
}
_CARD = re.compile(r"^\d{4}(?:[\s-]?\d{2,7}){2,4}$")
_CARD_PREFIX = re.compile(r"^(4|5[1-5]|2[2-7]|3[47]|6011|65|35|36|38|30[0-5]|62)")
_ADDRESS = re.compile(
    r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Za-z'.-]+\s+){0,4}(?:street|st|road|rd|avenue|ave|lane|ln|"
    r"drive|dr|boulevard|blvd|way|court|ct|place|pl|terrace|crescent|close|square|sq|highway|"
    r"hwy|parkway|pkwy|circle|cir|rue|strasse|straße)\b\.?",
    re.IGNORECASE,
)
_UK_POSTCODE = re.compile(r"^[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}$")
_US_ZIP = re.compile(r"^\d{5}(?:-\d{4})?$")
_CA_POSTCODE = re.compile(r"^[A-Z]\d[A-Z]\s?\d[A-Z]\d$")
_NAME_WORD = re.compile(
    r"^[A-ZÀ-Þ][A-Za-zÀ-ÿ'\u2019-]+$|^[A-ZÀ-Þ]\.?$|^(?:van|von|de|da|del|der|la|le|di|bin|ibn)$"
)


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """Whether ``text`` (spaces allowed) is an IBAN: its country's length and mod-97 = 1."""
    compact = text.replace(" ", "").upper()
    found = _IBAN.match(compact)
    if found is None or _IBAN_LENGTHS.get(found.group(1), len(compact)) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ssn(v: str) -> bool:
    found = _SSN.match(v)
    if found is None or ("-" not in v and len(v) != 9):
        return False
    area, group, serial = found.groups()
    return area not in ("000", "666") and area < "900" and group != "00" and serial != "0000"


def _nino(v: str) -> bool:
    found = _NINO.match(v.upper())
    return found is not None and found.group(1) not in _NINO_BAD


def _card(v: str) -> bool:
    if _CARD.match(v) is None:
        return False
    digits = re.sub(r"[\s-]", "", v)
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _phone(v: str) -> bool:
    if not any(p.match(v) for p in _PHONES):  # the cheaper test first
        return False
    return 9 <= sum(map(str.isdigit, v)) <= 15


def _ip(v: str) -> bool:
    if not (7 <= len(v) <= 45) or ("." not in v and ":" not in v):
        return False
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def postcode_like(v: str) -> bool:
    """A UK, US or Canadian postcode."""
    u = v.upper()
    return bool(_UK_POSTCODE.match(u) or _US_ZIP.match(u) or _CA_POSTCODE.match(u))


def name_like(v: str) -> bool:
    """One to five capitalised words, as a person's name is written."""
    words = v.replace(",", " ").split()
    return 1 <= len(words) <= 5 and all(_NAME_WORD.match(w) for w in words)


VALUE_DETECTORS: dict[PiiType, Callable[[str], bool]] = {
    PiiType.US_SSN: _ssn,
    PiiType.UK_NINO: _nino,
    PiiType.IBAN: iban_valid,
    PiiType.PAYMENT_CARD: _card,
    PiiType.EMAIL: lambda v: _EMAIL.search(v) is not None,
    PiiType.IP_ADDRESS: _ip,
    PiiType.PHONE: _phone,
    PiiType.POSTAL_ADDRESS: lambda v: _ADDRESS.search(v) is not None,
}


def possible(texts: list[str]) -> dict[PiiType, np.ndarray[Any, Any]]:
    """For each detector (and :func:`postcode_like`, :func:`name_like`), which of ``texts`` it
    can accept at all, from conditions each pattern implies, computed by Arrow over all the
    texts at once: the detector need only be called on those. Digits are Unicode decimal digits
    (``\\p{Nd}``, what ``\\d`` matches in a Python pattern); the phone's count of
    ``str.isdigit`` characters is bounded by the count of all numerals (``\\p{N}``)."""
    values = pa.array(texts, pa.string())
    digits = _count_of(values, r"[^\p{Nd}]+")
    numerals = _count_of(values, r"[^\p{N}]+")
    at = pc.match_substring(values, "@").to_numpy(zero_copy_only=False)
    dot = pc.match_substring_regex(values, r"[.:]").to_numpy(zero_copy_only=False)
    return {
        PiiType.US_SSN: digits == 9,  # ddd-dd-dddd, hyphens optional
        PiiType.UK_NINO: digits == 6,
        PiiType.IBAN: digits >= 2,  # the check digits
        PiiType.PAYMENT_CARD: (digits >= 13) & (digits <= 19),
        PiiType.EMAIL: at,
        PiiType.IP_ADDRESS: dot,
        PiiType.PHONE: numerals >= 9,
        PiiType.POSTAL_ADDRESS: digits >= 1,  # the house number
        PiiType.POSTCODE: digits >= 1,
        PiiType.PERSON_NAME: digits == 0,
    }


def _count_of(values: Any, others: str) -> np.ndarray[Any, Any]:
    """Characters per text once the runs matching ``others`` are removed (one replacement a
    run is about three times as fast as counting the characters one match at a time)."""
    kept = pc.replace_substring_regex(values, others, "")
    return np.asarray(pc.utf8_length(kept).to_numpy(), dtype=np.int64)
