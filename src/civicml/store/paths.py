"""Relative artifact paths chosen by clients, checked before anything touches storage.

Clients never choose *where* bytes live (the store keys them by SHA-256); they only name an
artifact inside its owner, e.g. ``model/model.pkl`` inside a run. Most published MLflow
vulnerabilities came from client-supplied storage URIs and ``..`` tricks; this is the one gate.
"""

from __future__ import annotations

import re

from civicml.core.errors import InvalidInputError

__all__ = ["MAX_PATH_LENGTH", "validate_relative_path"]

MAX_PATH_LENGTH = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\:%*?\"<>|]")
_HINT = (
    "Name artifacts with a relative path of plain segments separated by '/', "
    "e.g. 'model/model.pkl' or 'reports/drift.html'."
)


def validate_relative_path(path: str) -> str:
    """Return ``path`` when it is a safe relative artifact path.

    Rejected: empty paths, absolute paths, ``~``, ``.``/``..`` segments, empty segments,
    backslashes, drive letters and URI schemes (``:``), percent-encoded forms (``%2e%2e``),
    control characters and wildcard characters.

    Raises:
        InvalidInputError: Naming the offending path and what a valid one looks like.
    """
    if not isinstance(path, str) or not path:
        raise InvalidInputError("Artifact path is empty.", hint=_HINT)
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidInputError(
            f"Artifact path is {len(path)} characters long; the limit is {MAX_PATH_LENGTH}.",
            hint=_HINT,
        )
    if path.startswith(("/", "~")):
        raise InvalidInputError(f"Artifact path {path!r} is absolute.", hint=_HINT)
    match = _BAD_CHARS.search(path)
    if match:
        raise InvalidInputError(
            f"Artifact path {path!r} contains the character {match.group()!r}, which is not "
            "allowed (no backslashes, drive letters, URI schemes, percent-encoding or control "
            "characters).",
            hint=_HINT,
        )
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInputError(
                f"Artifact path {path!r} has an empty, '.' or '..' segment.", hint=_HINT
            )
    return path
