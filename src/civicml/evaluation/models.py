"""Verified loading of a registered model version's files (serving and evaluation share it).

A model version is loaded only after every byte was checked: the manifest's SHA-256 must equal
the registry's ``artifact_digest`` and each file is copied out of the artifact store into a
private directory while being hashed against the digest the manifest names. Only then does
:meth:`TabularModel.load <civicml.training.TabularModel.load>` unpickle it (which runs code).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from civicml.core.errors import ArtifactIntegrityError, InvalidInputError
from civicml.registry.schemas import ModelVersion
from civicml.store.context import Context
from civicml.store.paths import validate_relative_path
from civicml.training import TabularModel

__all__ = ["fetch_version_files", "load_tabular_model"]

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
        return TabularModel.load(_model_directory(directory, mv))
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # the model lives in memory now


def fetch_version_files(ctx: Context, mv: ModelVersion, directory: Path) -> list[Path]:
    """Write every file of ``mv`` under ``directory``, each hashed as it is copied.

    Raises:
        ArtifactIntegrityError: The manifest or a file does not match its SHA-256 or size.
        NotFoundError: A file is missing from the artifact store.
        InvalidInputError: The manifest is malformed.
    """
    label = f"{mv.name} v{mv.version}"
    data = ctx.artifacts.read_bytes(mv.artifact_digest)  # the store checks the digest too
    if hashlib.sha256(data).hexdigest() != mv.artifact_digest:
        raise _integrity(f"The manifest of model {label} does not match the registry's digest.")
    try:
        files = json.loads(data)["files"]
        entries = [(str(p), str(e["digest"]), int(e["size"])) for p, e in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidInputError(
            f"The manifest of model {label} (sha256:{mv.artifact_digest}) is malformed.",
            hint="Register the model again; only manifests written by the registry are served.",
        ) from err
    written = []
    for relative, digest, size in sorted(entries):
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
