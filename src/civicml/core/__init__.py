"""Foundations: settings, errors with hints, ids, the clock and the calling principal."""

from civicml.core.clock import SYSTEM_CLOCK, Clock, FrozenClock, SystemClock
from civicml.core.errors import (
    ArtifactIntegrityError,
    CivicMLError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    MissingExtraError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.core.identity import Principal, resolve_principal
from civicml.core.settings import Settings

__all__ = [
    "SYSTEM_CLOCK",
    "ArtifactIntegrityError",
    "CivicMLError",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "FrozenClock",
    "InvalidInputError",
    "MissingExtraError",
    "NotFoundError",
    "PermissionDeniedError",
    "Principal",
    "Settings",
    "SystemClock",
    "resolve_principal",
]
