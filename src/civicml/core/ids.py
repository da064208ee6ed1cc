"""Identifiers: time-ordered, random, 32 hex characters (like MLflow run ids)."""

from __future__ import annotations

import os
import re
import time

__all__ = ["NAME_PATTERN", "new_id", "validate_name"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_id() -> str:
    """A new identifier: 48 bits of milliseconds then 80 random bits, as hex.

    Ids sort by creation time, which keeps B-tree inserts local.
    """
    millis = time.time_ns() // 1_000_000
    return f"{millis:012x}{os.urandom(10).hex()}"


def validate_name(kind: str, name: str) -> str:
    """Check a user-chosen name (project, experiment, model, alias).

    Raises:
        InvalidInputError: When the name is empty, too long or has characters outside
            ``A-Z a-z 0-9 . _ -``.
    """
    from civicml.core.errors import InvalidInputError

    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"{kind} name {name!r} is not valid.",
            hint="Use 1-128 characters: letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, e.g. 'benefits-eligibility'.",
        )
    return name
