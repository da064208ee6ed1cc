"""Identifiers: time-ordered, random, 32 hex characters (like MLflow run ids)."""

from __future__ import annotations

import os
import time

from civicml.core.names import NAME_PATTERN, validate_name

# The entity-name validator lives in civicml.core.names; re-exported here for existing callers.
__all__ = ["NAME_PATTERN", "new_id", "validate_name"]


def new_id() -> str:
    """A new identifier: 48 bits of milliseconds then 80 random bits, as hex.

    Ids sort by creation time, which keeps B-tree inserts local.
    """
    millis = time.time_ns() // 1_000_000
    return f"{millis:012x}{os.urandom(10).hex()}"
