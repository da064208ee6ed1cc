"""Checking and cleaning what callers pass the registry, before anything is read or written.

Each function either returns the value in the form the service stores, or raises
``InvalidInputError`` (``NotFoundError`` for artifact digests missing from the store) naming the
offending value and saying what a valid one looks like.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from pydantic import ValidationError
from sqlalchemy import Connection, select

from civicml.core.errors import InvalidInputError, NotFoundError, closest
from civicml.core.ids import NAME_PATTERN, validate_name
from civicml.core.types import INT64_MAX
from civicml.registry.schemas import ApprovalStatus, ColumnSpec, Signature
from civicml.store._tables import artifacts as artifact_index
from civicml.store.artifacts import ArtifactStore
from civicml.store.paths import validate_relative_path

__all__ = [
    "Files",
    "approval_note",
    "check_alias_name",
    "check_artifacts",
    "check_project_digests",
    "clean_metrics",
    "finite",
    "parse_alias_ref",
    "parse_signature",
    "parse_status",
    "parse_version_ref",
]

_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_DIGEST = re.compile(r"(sha256:)?[0-9a-fA-F]{64}")
_MAX_METRIC_KEY = 250
#: (relative path -> (sha256, size)): the files a version's manifest names.
Files: TypeAlias = dict[str, tuple[str, int]]


# Version references and aliases ---------------------------------------------------------------
def parse_version_ref(version: int | str) -> tuple[int | None, str | None]:
    """``(number, None)`` for a version number, ``(None, alias)`` for an alias."""
    if isinstance(version, int) and not isinstance(version, bool):
        if not 1 <= version <= INT64_MAX:
            raise InvalidInputError(
                f"Version {version} is not valid.", hint="Versions are numbered from 1."
            )
        return version, None
    if isinstance(version, str):
        text = version.strip()
        if text.isascii() and text.isdigit():
            return parse_version_ref(int(text))
        if NAME_PATTERN.fullmatch(text):
            return None, text
    raise InvalidInputError(
        f"{version!r} is neither a version number nor an alias.",
        hint="Pass a version number such as 3, or an alias such as 'production'.",
    )


def parse_alias_ref(alias: str) -> str:
    """The alias name ``alias`` refers to; a version number is refused."""
    _, name = parse_version_ref(alias)
    if name is None:
        raise InvalidInputError(
            f"{alias!r} is a version number, not an alias.",
            hint="Aliases are names such as 'production' or 'champion'.",
        )
    return name


def check_alias_name(alias: str) -> None:
    """Refuse an alias name that is not a valid name or that reads as a version number."""
    validate_name("Alias", alias)
    if _NUMBER.fullmatch(alias):
        raise InvalidInputError(
            f"Alias {alias!r} looks like a version number, which would make '{alias}' ambiguous.",
            hint="Use a name such as 'production', 'champion' or 'v2-candidate'.",
        )


# Approval -------------------------------------------------------------------------------------
def parse_status(status: ApprovalStatus | str) -> ApprovalStatus:
    """The approval status ``status`` names, case-insensitively."""
    if isinstance(status, ApprovalStatus):
        return status
    valid = [s.value for s in ApprovalStatus]
    if isinstance(status, str):
        for candidate in ApprovalStatus:
            if candidate.value.lower() == status.strip().lower():
                return candidate
    suggestion = closest(str(status), valid)
    raise InvalidInputError(
        f"Approval status {status!r} is not valid.",
        hint=(suggestion + " " if suggestion else "") + "Use one of " + ", ".join(valid) + ".",
    )


def approval_note(note: str, target: ApprovalStatus, name: str, version: int | str) -> str:
    """The stripped note of a change to ``target``; required for ``Approved`` and ``Rejected``."""
    note = note.strip() if isinstance(note, str) else ""
    if target is not ApprovalStatus.PENDING and not note:
        verb = "Approving" if target is ApprovalStatus.APPROVED else "Rejecting"
        raise InvalidInputError(
            f"{verb} model {name!r} version {version} needs a note saying why.",
            hint="Pass note='...', e.g. note='meets the accuracy and bias policy'; it is "
            "kept in the approval history and the audit trail.",
        )
    return note


# Signature and metrics ------------------------------------------------------------------------
def parse_signature(
    signature: Sequence[ColumnSpec | Mapping[str, Any]] | None,
) -> list[ColumnSpec] | None:
    """The input columns of a signature, or None when none was given."""
    if signature is None:
        return None
    if isinstance(signature, (str, bytes, Mapping)) or not isinstance(signature, Sequence):
        raise InvalidInputError(
            "signature must be a list of columns.",
            hint="e.g. [{'name': 'age', 'type': 'integer', 'nullable': False}]",
        )
    try:
        return Signature.model_validate(list(signature)).root
    except ValidationError as err:
        details = [
            {"loc": ["signature", *err_item["loc"]], "msg": err_item["msg"]}
            for err_item in err.errors()
        ]
        problems = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details)
        raise InvalidInputError(
            f"The model signature is not valid: {problems}.",
            hint="Each column is {'name': str, 'type': str, 'nullable': bool (optional)}, "
            "with unique names.",
            details=details,
        ) from err


def clean_metrics(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    """Metrics with valid names and numeric values; NaN and infinity become None."""
    if not isinstance(metrics, Mapping):
        raise InvalidInputError(
            "metrics must map metric names to numbers.", hint="e.g. {'auc': 0.91, 'f1': 0.84}"
        )
    clean: dict[str, float | None] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key.strip() or len(key) > _MAX_METRIC_KEY:
            raise InvalidInputError(
                f"Metric name {key!r} is not valid.",
                hint=f"Use a non-empty name of at most {_MAX_METRIC_KEY} characters, e.g. 'auc'.",
            )
        if value is None:
            clean[key] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = finite(value)
        else:
            raise InvalidInputError(
                f"Metric {key!r} has the value {value!r}, which is not a number.",
                hint="Metric values are numbers, e.g. {'auc': 0.91}.",
            )
    return clean


def finite(value: float) -> float | None:
    """JSON holds no NaN or infinity: those are stored as None."""
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


# Artifacts ------------------------------------------------------------------------------------
def check_artifacts(store: ArtifactStore, artifacts: Mapping[str, str]) -> Files:
    """Check explicit ``{path: digest}`` files exist (and verify them); returns sizes."""
    if not isinstance(artifacts, Mapping) or not artifacts:
        raise InvalidInputError(
            "artifacts must name at least one file, as {relative path: sha256 digest}.",
            hint="e.g. artifacts={'model.pkl': '3a7b...'} with the digest the artifact store "
            "returned when the bytes were stored.",
        )
    files: Files = {}
    for path, digest in sorted(artifacts.items()):
        validate_relative_path(path)
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidInputError(
                f"Digest {digest!r} of artifact {path!r} is not a SHA-256 digest.",
                hint="A digest is 64 hexadecimal characters, optionally prefixed 'sha256:'.",
            )
        clean = digest.removeprefix("sha256:").lower()
        if not store.exists(clean):
            raise NotFoundError(
                f"Artifact {path!r} (sha256:{clean}) is not in the artifact store.",
                hint="Store the bytes first and pass the digest the store returns, or "
                "register from a run: run_id=<run id>.",
            )
        with store.open(clean) as handle:  # verifies the SHA-256
            files[path] = (clean, handle.seek(0, os.SEEK_END))
    return files


def check_project_digests(conn: Connection, project_id: str, project: str, files: Files) -> None:
    """Refuse explicit files whose bytes belong to other projects only.

    The artifact store is shared and content-addressed, so a digest alone proves nothing about
    who may use the bytes. A digest the artifact index names in another project (a run
    artifact, a dataset version, an evaluation or report file) and in none of ``project``'s is
    refused as if it were not stored at all — the answer does not reveal that another project
    holds it.

    Raises:
        NotFoundError: A digest is indexed only in other projects.
    """
    digests = sorted({digest for digest, _size in files.values()})
    if not digests:
        return
    rows = conn.execute(
        select(artifact_index.c.digest, artifact_index.c.project_id).where(
            artifact_index.c.digest.in_(digests)
        )
    ).all()
    owners: dict[str, set[str]] = {}
    for row in rows:
        owners.setdefault(row.digest, set()).add(row.project_id)
    for path, (digest, _size) in sorted(files.items()):
        projects = owners.get(digest)
        if projects and project_id not in projects:
            raise NotFoundError(
                f"Artifact {path!r} (sha256:{digest}) is not in project {project!r}.",
                hint=f"Upload the file to project {project!r} (POST /projects/{project}/blobs "
                "or log it to one of its runs) and register that digest.",
            )
