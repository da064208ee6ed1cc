"""Entity tags of the registry's mutable resources, and ``If-Match`` preconditions.

An ETag is computed from the resource's current state (no stored counter): the same state gives
the same tag wherever it is computed — in the service inside the transaction that changes it, in
the REST layer from the response it sends, or in the SDK from the object it received. A change
whose ``If-Match`` names no current tag is refused with 412 (``PreconditionFailedError``), so two
people who read the same alias cannot both move it, the second unknowingly undoing the first.

Resources and what their tag covers:

* a model version — its approval status (who, why, when), archived flag and aliases;
* an alias — the version it points at;
* an approval policy — the model and the policy's version number.

(The model card's tag, its status and written version, is in :mod:`civicml.oversight.cards`.)
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from civicml.core.errors import PreconditionFailedError
from civicml.registry.schemas import ApprovalPolicyRecord, ModelVersion

__all__ = [
    "alias_etag",
    "check_if_match",
    "make_etag",
    "policy_etag",
    "policy_etag_of",
    "version_etag",
]


def make_etag(*parts: object) -> str:
    """A strong entity tag (quoted, as HTTP sends it) of the given state."""
    text = "\x1f".join("" if p is None else _part(p) for p in parts)
    return '"' + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + '"'


def version_etag(mv: ModelVersion) -> str:
    """The tag of a model version's mutable state."""
    return make_etag(
        "model_version",
        mv.id,
        mv.approval_status.value,
        mv.approval_by,
        mv.approval_note,
        mv.approval_at,
        mv.archived,
        ",".join(sorted(mv.aliases)),
        mv.description,
    )


def alias_etag(version_id: str, alias: str) -> str:
    """The tag of an alias: which version (by id) it points at."""
    return make_etag("model_alias", alias.casefold(), version_id)


def policy_etag(record: ApprovalPolicyRecord) -> str:
    """The tag of a model's approval policy: its latest version."""
    return policy_etag_of(record.model, record.version)


def policy_etag_of(model: str, version: int) -> str:
    """The tag of version ``version`` of the approval policy of model ``model``."""
    return make_etag("approval_policy", model.casefold(), version)


def check_if_match(if_match: str | None, current: str | None, what: str, reread: str) -> None:
    """Refuse a change whose ``If-Match`` names no current tag of the resource.

    ``None`` (no header) always passes; ``*`` passes when the resource exists. Tags are compared
    strongly (RFC 9110): a weak ``W/"..."`` tag never matches. An unquoted tag is read as if
    quoted.

    Args:
        current: The resource's tag now, ``None`` when it does not exist.
        what: The resource in words, e.g. ``"alias 'production' of eligibility"``.
        reread: How to read it again, for the hint.

    Raises:
        PreconditionFailedError: The precondition fails.
    """
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",") if t.strip()]
    if "*" in tags and current is not None:
        return
    if current is not None and current in {
        t if t.startswith(('"', "W/")) else f'"{t}"' for t in tags
    }:
        return
    now = "it does not exist now" if current is None else f"its ETag is now {current}"
    shown = if_match if len(if_match) <= 80 else if_match[:77] + "..."
    raise PreconditionFailedError(
        f"The {what} changed since you read it: If-Match {shown} does not match ({now}).",
        hint=f"Read it again ({reread}), check the change still makes sense, and retry with "
        "the ETag it answers.",
    )


def _part(value: object) -> str:
    if isinstance(value, datetime):  # the same instant whether naive UTC or aware
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)
