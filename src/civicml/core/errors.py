"""Errors that say what went wrong and what to do next.

Every error raised on purpose by civicml is a :class:`CivicMLError`. Its ``status`` is what the
REST layer answers with; the CLI exits 2 for any 4xx (bad input) and 1 otherwise.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = [
    "ArtifactIntegrityError",
    "AuthenticationError",
    "BadRequestError",
    "CivicMLError",
    "ConfigurationError",
    "ConflictError",
    "InsufficientStorageError",
    "InvalidInputError",
    "MissingExtraError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RequestTimeoutError",
    "RetryLaterError",
    "ServiceUnavailableError",
    "TooManyRequestsError",
    "UnsupportedMediaTypeError",
    "closest",
]


class CivicMLError(Exception):
    """Base of every deliberate civicml error.

    Args:
        message: What happened, naming the offending value.
        hint: What the user can do about it.
        details: Structured details (for example one entry per invalid field).
    """

    status: ClassVar[int] = 400

    def __init__(
        self, message: str, *, hint: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []

    def to_body(self) -> dict[str, Any]:
        """The one error body of the REST API."""
        return {
            "ok": False,
            "status": self.status,
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
        }


class InvalidInputError(CivicMLError):
    """The input is malformed or violates a rule; nothing was changed."""

    status = 422


class BadRequestError(CivicMLError):
    """The request itself is malformed (not JSON, duplicate keys, nested too deeply, ...)."""

    status = 400


class NotFoundError(CivicMLError):
    """The named thing does not exist."""

    status = 404


class ConflictError(CivicMLError):
    """The request conflicts with the current state (already exists, wrong status, ...)."""

    status = 409


class AuthenticationError(CivicMLError):
    """No credential, or one that is unknown, expired, revoked or malformed (401)."""

    status = 401


class RetryLaterError(CivicMLError):
    """An error the client may retry after ``retry_after`` seconds (sent as ``Retry-After``).

    Args:
        retry_after: Seconds the client should wait before retrying.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after: int = 1,
    ) -> None:
        super().__init__(message, hint=hint, details=details)
        self.retry_after = retry_after


class TooManyRequestsError(RetryLaterError):
    """Too many failed attempts from one client: wait ``retry_after`` seconds (429)."""

    status = 429


class PermissionDeniedError(CivicMLError):
    """The principal may not do this."""

    status = 403


class PreconditionFailedError(CivicMLError):
    """An ``If-Match`` precondition names a state that is no longer current (stale ETag)."""

    status = 412


class PayloadTooLargeError(CivicMLError):
    """The request body, or a list in it, is larger than the server accepts."""

    status = 413


class RequestTimeoutError(CivicMLError):
    """The request body did not arrive in time (a stalled or trickling client)."""

    status = 408


class UnsupportedMediaTypeError(CivicMLError):
    """The body's content type or content encoding is not one the server takes."""

    status = 415


class ServiceUnavailableError(RetryLaterError):
    """A transient condition (a locked database, a store being repaired): try again later."""

    status = 503


class InsufficientStorageError(ServiceUnavailableError):
    """The artifact store or database is out of space, or read-only; nothing was written."""

    status = 507


class ConfigurationError(CivicMLError):
    """A setting is missing or wrong."""

    status = 400


class MissingExtraError(ConfigurationError):
    """An optional dependency is needed for this feature."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the Python package '{module}', which is not installed.",
            hint=f"pip install 'civicml[{extra}]'",
        )


class ArtifactIntegrityError(CivicMLError):
    """Stored bytes no longer match their SHA-256: the store was corrupted or tampered with."""

    status = 500


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest known names, or ``None`` when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not matches:
        return None
    return "Did you mean " + " or ".join(repr(m) for m in matches) + "?"
