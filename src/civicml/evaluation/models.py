"""Verified loading of a registered model version's files (serving and evaluation share it).

A model version is loaded only after every byte was checked: the manifest's SHA-256 must equal
the registry's ``artifact_digest`` and each file is copied out of the artifact store into a
private directory while being hashed against the digest the manifest names. Only then does
:meth:`TabularModel.load <civicml.training.TabularModel.load>` read it: model files are data — a
skops file loaded with an allowlist of types, never a pickle. A bundle in any other format (a
``model.joblib`` pickle uploaded by a user, or one written by civicml before 0.9) is refused with
:class:`~civicml.training.UnsafeModelFormatError` (422) before a byte of it is executed.

:func:`convert_model_bundles` converts the bundles civicml itself wrote before 0.9 (pickles whose
SHA-256 matches the registry) to the safe format, once, outside the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from civicml.core.errors import ArtifactIntegrityError, CivicMLError, InvalidInputError
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.registry._queries import manifest_bytes
from civicml.registry._tables import model_versions, registered_models
from civicml.registry.schemas import ModelVersion
from civicml.store.context import Context
from civicml.store.paths import validate_relative_path
from civicml.store.signing import sign_version, verify_statement, version_statement
from civicml.training import (
    LEGACY_MODEL_FILE,
    TabularModel,
    UnsafeModelFormatError,
    convert_legacy_bundle,
)
from civicml.training.model import LEGACY_FORMAT

__all__ = [
    "BundleConversion",
    "convert_model_bundles",
    "fetch_version_files",
    "load_tabular_model",
]

log = logging.getLogger("civicml.models")

_CHUNK = 1 << 20
_MODEL_MANIFEST = "civicml-model.json"


def load_tabular_model(
    ctx: Context, mv: ModelVersion, cache_root: Path | None = None
) -> TabularModel:
    """Copy the files of ``mv`` into a private directory, verified, and load the model there.

    Args:
        ctx: The stores to read from.
        mv: The registered version.
        cache_root: Where the private directory is made (removed again once loaded); default
            ``<home>/cache/models``.

    Raises:
        ArtifactIntegrityError: The manifest's SHA-256 differs from ``mv.artifact_digest``, or a
            file's bytes differ from the SHA-256 or size its manifest names.
        NotFoundError: A file is missing from the artifact store.
        InvalidInputError: The manifest is malformed or the files are not a civicml model.
    """
    root = cache_root if cache_root is not None else ctx.settings.home / "cache" / "models"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    directory = Path(tempfile.mkdtemp(prefix=f"{mv.id}-", dir=root))
    try:
        fetch_version_files(ctx, mv, directory)
        try:
            return TabularModel.load(_model_directory(directory, mv))
        except UnsafeModelFormatError as err:
            log.warning("model %s v%s was not loaded: %s", mv.name, mv.version, err.message)
            raise UnsafeModelFormatError(
                f"Model {mv.name} v{mv.version} was not loaded: {err.message}",
                hint=err.hint,
            ) from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # the model lives in memory now


def fetch_version_files(ctx: Context, mv: ModelVersion, directory: Path) -> list[Path]:
    """Write every file of ``mv`` under ``directory``, each hashed as it is copied.

    Raises:
        ArtifactIntegrityError: The manifest or a file does not match its SHA-256 or size.
        NotFoundError: A file is missing from the artifact store.
        InvalidInputError: The manifest is malformed.
    """
    return _fetch(ctx, f"{mv.name} v{mv.version}", mv.artifact_digest, directory)


def _manifest_entries(ctx: Context, label: str, manifest_digest: str) -> list[tuple[str, str, int]]:
    data = ctx.artifacts.read_bytes(manifest_digest)  # the store checks the digest too
    if hashlib.sha256(data).hexdigest() != manifest_digest:
        raise _integrity(f"The manifest of model {label} does not match the registry's digest.")
    try:
        files = json.loads(data)["files"]
        return sorted((str(p), str(e["digest"]), int(e["size"])) for p, e in files.items())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidInputError(
            f"The manifest of model {label} (sha256:{manifest_digest}) is malformed.",
            hint="Register the model again; only manifests written by the registry are served.",
        ) from err


def _fetch(ctx: Context, label: str, manifest_digest: str, directory: Path) -> list[Path]:
    written = []
    for relative, digest, size in _manifest_entries(ctx, label, manifest_digest):
        target = directory / validate_relative_path(relative)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _copy_verified(ctx, digest, size, target, f"{relative!r} of model {label}")
        written.append(target)
    return written


def _copy_verified(ctx: Context, digest: str, size: int, target: Path, what: str) -> None:
    hasher = hashlib.sha256()
    copied = 0
    with ctx.artifacts.open(digest) as src, open(target, "xb") as dst:
        while chunk := src.read(_CHUNK):
            hasher.update(chunk)
            dst.write(chunk)
            copied += len(chunk)
    if hasher.hexdigest() != digest or copied != size:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise _integrity(f"File {what} does not match its SHA-256 or size in the manifest.")


def _model_directory(directory: Path, mv: ModelVersion) -> Path:
    if (directory / _MODEL_MANIFEST).is_file():
        return directory
    found = sorted(p.parent for p in directory.rglob(_MODEL_MANIFEST))
    if len(found) == 1:
        return found[0]
    raise InvalidInputError(
        f"Model {mv.name} v{mv.version} is not a civicml tabular model: "
        + ("no" if not found else "more than one")
        + f" {_MODEL_MANIFEST} among its files.",
        hint="Serve models saved with TabularModel.save() (what civicml training registers).",
    )


def _integrity(message: str) -> ArtifactIntegrityError:
    log.error("%s It was not loaded.", message)
    return ArtifactIntegrityError(
        message + " It was not loaded.",
        hint="Restore the artifact store from a backup, or register and approve the model "
        "again; run 'civicml audit verify' to check the audit trail.",
    )


# Converting bundles written before 0.9 ---------------------------------------------------------
@dataclass(slots=True)
class BundleConversion:
    """What :func:`convert_model_bundles` did: versions converted and versions left alone.

    Attributes:
        converted: ``"<project>/<model> v<n>"`` of each version now in the safe format.
        failed: ``(version label, reason)`` of each pickle bundle that was not converted (its
            bytes did not match the registry, or it could not be read); these still refuse to
            load.
    """

    converted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def convert_model_bundles(ctx: Context, *, cache_root: Path | None = None) -> BundleConversion:
    """Convert every registered version whose bundle is a pre-0.9 pickle to the safe format.

    For each version whose files hold ``model.joblib`` beside a ``civicml.tabular/1`` manifest,
    every file is copied out of the artifact store and checked against the SHA-256 the registry
    recorded (so only bundles civicml itself wrote are touched); the pickle is then loaded once
    (:func:`~civicml.training.convert_legacy_bundle`) and rewritten as ``model.skops``; the new
    files and a new bundle manifest go into the content-addressed store; the version's
    ``artifact_digest`` is switched to the new manifest and a ``model_version.files_converted``
    audit event keeps the old digest (the old bytes stay in the store). Running it again
    converts nothing. It unpickles, so it runs in the operator's process, never on a request.

    Args:
        ctx: The stores.
        cache_root: Where the private working directories are made (default
            ``<home>/cache/models``).

    Returns:
        The versions converted and those that could not be.
    """
    root = cache_root if cache_root is not None else ctx.settings.home / "cache" / "models"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    report = BundleConversion()
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(
                model_versions.c.id,
                model_versions.c.version,
                model_versions.c.artifact_digest,
                model_versions.c.manifest_signature,
                registered_models.c.name,
                projects.c.name.label("project"),
            )
            .join(registered_models, registered_models.c.id == model_versions.c.model_id)
            .join(projects, projects.c.id == registered_models.c.project_id)
            .order_by(model_versions.c.created_at, model_versions.c.id)
        ).all()
    for row in rows:
        label = f"{row.project}/{row.name} v{row.version}"
        try:
            if not _is_legacy(ctx, label, row.artifact_digest):
                continue
            new_digest = _convert_one(ctx, label, row.artifact_digest, root)
        except CivicMLError as err:
            log.error("model %s was not converted: %s", label, err.message)
            report.failed.append((label, err.message))
            continue
        _record_conversion(ctx, row, row.artifact_digest, new_digest)
        log.info("model %s converted to the safe format", label)
        report.converted.append(label)
    return report


def _is_legacy(ctx: Context, label: str, manifest_digest: str) -> bool:
    listed = _manifest_entries(ctx, label, manifest_digest)
    entries = {path: digest for path, digest, _size in listed}
    for path, digest in entries.items():
        if path != _MODEL_MANIFEST and not path.endswith("/" + _MODEL_MANIFEST):
            continue
        folder = path[: -len(_MODEL_MANIFEST)]
        if folder + LEGACY_MODEL_FILE not in entries:
            continue
        try:
            manifest = json.loads(ctx.artifacts.read_bytes(digest))
        except ValueError:
            continue
        if isinstance(manifest, dict) and manifest.get("format") == LEGACY_FORMAT:
            return True
    return False


def _convert_one(ctx: Context, label: str, manifest_digest: str, root: Path) -> str:
    directory = Path(tempfile.mkdtemp(prefix="convert-", dir=root))
    try:
        _fetch(ctx, label, manifest_digest, directory)  # every byte checked against the registry
        model_dir = _find_manifest_dir(directory, label)
        try:
            convert_legacy_bundle(model_dir)
        except CivicMLError:
            raise
        except Exception as err:  # a pickle civicml wrote but this environment cannot read
            raise InvalidInputError(
                f"The pickle of model {label} could not be read ({type(err).__name__}).",
                hint="Convert it with the library versions it was trained with, or train and "
                "register it again.",
            ) from err
        TabularModel.load(model_dir)  # the converted bundle loads without pickle
        files: dict[str, tuple[str, int]] = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            stored = ctx.artifacts.put_file(path)
            files[path.relative_to(directory).as_posix()] = (stored.digest, stored.size)
        return ctx.artifacts.put_bytes(manifest_bytes(files)).digest
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _find_manifest_dir(directory: Path, label: str) -> Path:
    found = sorted(p.parent for p in directory.rglob(_MODEL_MANIFEST))
    if len(found) != 1:
        raise InvalidInputError(
            f"Model {label} does not hold exactly one {_MODEL_MANIFEST}.",
            hint="Only bundles written by TabularModel.save() are converted.",
        )
    return found[0]


def _resigned(ctx: Context, row: Any, old: str, new: str) -> dict[str, Any]:
    """A new registration signature for the converted manifest, if the old one verified."""
    signature = row.manifest_signature
    statement = version_statement(row.project, row.name, row.version, old)
    if signature is None or verify_statement(ctx.settings, statement, signature) is not None:
        return {}  # legacy unsigned stays unsigned; a bad signature stays bad (deploy refuses)
    sig = sign_version(ctx.settings, row.project, row.name, row.version, new)
    return {"manifest_signature": sig}


def _record_conversion(ctx: Context, row: Any, old: str, new: str) -> None:
    with ctx.db.write() as uow:
        changed = uow.conn.execute(
            update(model_versions)
            .where(model_versions.c.id == row.id, model_versions.c.artifact_digest == old)
            .values(artifact_digest=new, **_resigned(ctx, row, old, new))
        ).rowcount
        if not changed:  # converted (or changed) by someone else meanwhile
            return
        AuditTrail(ctx).record(
            uow,
            "model_version.files_converted",
            "model_version",
            row.id,
            project=row.project,
            before={"artifact_digest": old, "format": LEGACY_FORMAT},
            after={
                "name": row.name,
                "version": row.version,
                "artifact_digest": new,
                "format": "civicml.tabular/2",
            },
        )
