"""Signed model packages: move an approved model version to another civicml (air-gapped promotion).

:meth:`PackageService.export` writes a plain tar holding

* ``files/<path>``: every file of the version as stored (read through the artifact store, so
  plaintext even when encrypted at rest);
* ``package.json``: the package manifest in canonical JSON: model name, version, input schema,
  metrics, approval status and history, the model card, a lineage summary (training datasets
  with their digests) and every file with its SHA-256 and size;
* ``signature.json``: the Ed25519 signature over the bytes of ``package.json`` and the id and
  public key of the signer.

The signing key is ``model-signing-ed25519.pem`` in ``keys_dir`` (created on first use, mode
0600; its public key beside it as ``.pub``). :meth:`PackageService.import_package` treats the tar
as hostile: it refuses links, absolute or ``..`` paths, duplicate and oversized members before
reading any of them, verifies the signature against ``trusted_signers`` (the local key is *not*
trusted unless listed) and every file's SHA-256, and only then stores the files and registers
the version ``PendingManualApproval``: the receiving side approves it again. Nothing in a
package is ever unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, cast

from cryptography.exceptions import InvalidSignature

from civicml.core.errors import CivicMLError, InvalidInputError, NotFoundError
from civicml.core.jsonsafe import loads
from civicml.core.settings import Settings
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.oversight.cards import CardService, training_datasets
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.store.context import Context
from civicml.store.signing import (  # the key moved below the registry; re-exported
    KEY_FILE,
    PackageSigner,
    canonical_json,
    key_id,
    trusted_keys,
)

__all__ = [
    "KEY_FILE",
    "PACKAGE_FORMAT",
    "PackageService",
    "PackageSigner",
    "PackageVerificationError",
    "canonical_json",
    "key_id",
    "trusted_keys",
]

PACKAGE_FORMAT = "civicml-model-package/1"
MANIFEST_NAME = "package.json"
SIGNATURE_NAME = "signature.json"
FILES_PREFIX = "files/"
#: Hostile-input limits: members in one package, bytes of one file, bytes of the two JSON files.
MAX_MEMBERS = 10_000
MAX_FILE_BYTES = 8 * 1024**3
MAX_JSON_BYTES = 16 * 1024**2
_CHUNK = 1024 * 1024


class PackageVerificationError(CivicMLError):
    """A model package failed verification: untrusted signer, bad signature or wrong hash."""

    status = 422


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    info: tarfile.TarInfo


class PackageService:
    """Exports model versions as signed packages and imports verified ones."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._registry = RegistryService(ctx)
        self._cards = CardService(ctx)
        self._lineage = LineageService(ctx)
        self._audit = AuditTrail(ctx)
        self._projects = ProjectService(ctx)

    # Export -----------------------------------------------------------------------------------
    def manifest(self, project: str, name: str, version: int | str) -> dict[str, Any]:
        """The package manifest of a version (what :meth:`export` signs).

        Raises:
            PermissionDeniedError: The caller lacks ``models.export`` on the project.
        """
        self._projects.get(project, "models.export")
        mv = self._registry.get_version(project, name, version)
        files = self._registry.get_manifest(mv)["files"]
        try:
            card: Any = self._cards.get(project, mv.name, mv.version).model_dump(mode="json")
        except NotFoundError:
            card = None
        history = self._registry.approval_history(project, mv.name, mv.version)
        return {
            "format": PACKAGE_FORMAT,
            "model": mv.name,
            "version": mv.version,
            "description": mv.description,
            "source_project": project,
            "source_artifact_digest": mv.artifact_digest,
            "input_schema": [c.model_dump(mode="json") for c in mv.signature or []],
            "metrics": mv.metrics,
            "approval": {
                "status": mv.approval_status.value,
                "by": mv.approval_by,
                "note": mv.approval_note,
                "at": None if mv.approval_at is None else mv.approval_at.isoformat(),
                "history": [r.model_dump(mode="json") for r in history],
            },
            "card": card,
            "lineage": {
                "run_id": mv.run_id,
                "training_datasets": [
                    {"name": d.name, "version": d.version, "digest": d.digest}
                    for d in training_datasets(self._ctx, mv)
                ],
            },
            "files": {
                path: {"sha256": meta["digest"], "size": meta["size"]}
                for path, meta in sorted(files.items())
            },
            "exported_at": self._ctx.clock.now().isoformat(),
            "exported_by": self._ctx.principal.user,
        }

    def export(self, project: str, name: str, version: int | str, sink: BinaryIO) -> str:
        """Write the signed package of a version to ``sink``; returns the signer's key id."""
        manifest = self.manifest(project, name, version)
        body = canonical_json(manifest)
        signature = PackageSigner(self._ctx.settings).sign(body)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, MANIFEST_NAME, body)
            _add_bytes(tar, SIGNATURE_NAME, canonical_json(signature))
            for path, meta in manifest["files"].items():
                info = tarfile.TarInfo(FILES_PREFIX + path)
                info.size = int(meta["size"])
                info.mode = 0o644
                with self._ctx.artifacts.open(meta["sha256"]) as data:
                    tar.addfile(info, data)
        return signature["key_id"]

    # Import -----------------------------------------------------------------------------------
    def import_package(
        self, project: str, source: BinaryIO, *, name: str | None = None
    ) -> ModelVersion:
        """Verify a package and register its model as a new version, pending local approval.

        Raises:
            InvalidInputError: Not a plain tar, or a member that is a link, a device, an absolute
                or ``..`` path, a duplicate, too large, or not part of the package layout.
            PackageVerificationError: The signer is not in ``trusted_signers``, the signature
                does not verify, or a file's SHA-256 or size differs from the manifest.
        """
        self._projects.get(project, "models.write")
        try:
            tar = tarfile.open(fileobj=source, mode="r:")
        except (tarfile.TarError, OSError) as err:
            raise InvalidInputError(
                "The model package is not a readable tar file.",
                hint="Give the file written by 'civicml models export' (an uncompressed tar).",
            ) from err
        with tar:
            members = _check_members(tar)
            body = _read_small(tar, members, MANIFEST_NAME)
            signature = loads(_read_small(tar, members, SIGNATURE_NAME))
            signer = _verify_signature(self._ctx.settings, body, signature)
            manifest = loads(body)
            files = _check_layout(manifest, members)
            for path, meta in files.items():  # every hash checked before anything is stored
                _verify_file(tar, members[FILES_PREFIX + path].info, meta, path)
            digests = {
                path: self._store(tar, members[FILES_PREFIX + path].info, meta, path)
                for path, meta in files.items()
            }
        model = name or str(manifest.get("model") or "")
        mv = self._registry.register(
            project,
            model,
            artifacts=digests,
            signature=manifest.get("input_schema") or None,
            metrics=manifest.get("metrics") or {},
            description=str(manifest.get("description") or ""),
        )
        package_digest = hashlib.sha256(body).hexdigest()
        proj = self._projects.get(project, "models.write")
        with self._ctx.db.write() as uow:
            node = self._lineage.node(uow, "model_version", mv.id, name=f"{mv.name} v{mv.version}")
            pkg = self._lineage.node(
                uow,
                "model_package",
                package_digest,
                name=f"{manifest.get('model')} v{manifest.get('version')} package",
                project_id=proj.id,
                properties={
                    "digest": package_digest,
                    "signer": signer,
                    "source_model": manifest.get("model"),
                    "source_version": manifest.get("version"),
                    "source_project": manifest.get("source_project"),
                    "source_approval": (manifest.get("approval") or {}).get("status"),
                    "training_datasets": (manifest.get("lineage") or {}).get(
                        "training_datasets", []
                    ),
                },
            )
            self._lineage.link(uow, pkg, node, "DerivedFrom")
            self._audit.record(
                uow,
                "model_version.imported",
                "model_version",
                mv.id,
                project=proj.name,
                after={
                    "name": mv.name,
                    "version": mv.version,
                    "package_digest": package_digest,
                    "signer": signer,
                    "source_model": manifest.get("model"),
                    "source_version": manifest.get("version"),
                    "approval_status": mv.approval_status.value,
                },
            )
        return mv

    def _store(
        self, tar: tarfile.TarFile, info: tarfile.TarInfo, meta: dict[str, Any], path: str
    ) -> str:
        handle = _open(tar, info, path)
        stored = self._ctx.artifacts.put_stream(handle)
        if stored.digest != meta.get("sha256"):  # the file changed since it was verified
            raise _hash_mismatch(path)
        return stored.digest


def _open(tar: tarfile.TarFile, info: tarfile.TarInfo, path: str) -> BinaryIO:
    handle = tar.extractfile(info)
    if handle is None:  # pragma: no cover - _check_members admits regular files only
        raise _bad_member(path, "is not a regular file")
    return cast(BinaryIO, handle)


def _hash_mismatch(path: str) -> PackageVerificationError:
    return PackageVerificationError(
        f"File {path!r} of the model package does not match its signed SHA-256.",
        hint="The package was altered after it was signed; export it again from the source "
        "installation.",
    )


def _verify_file(
    tar: tarfile.TarFile, info: tarfile.TarInfo, meta: dict[str, Any], path: str
) -> None:
    hasher, size = hashlib.sha256(), 0
    handle = _open(tar, info, path)
    while block := handle.read(_CHUNK):
        hasher.update(block)
        size += len(block)
    if hasher.hexdigest() != meta.get("sha256") or size != meta.get("size"):
        raise _hash_mismatch(path)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _bad_member(name: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"The model package holds a member {name!r} that {why}.",
        hint="Only import packages written by 'civicml models export'; this one was made or "
        "altered by something else.",
    )


def _check_members(tar: tarfile.TarFile) -> dict[str, _Member]:
    """Every member, checked before any is read: regular files at safe relative paths only."""
    members: dict[str, _Member] = {}
    for count, info in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise _bad_member(info.name, f"is beyond the limit of {MAX_MEMBERS} members")
        name = info.name
        pure = PurePosixPath(name)
        if (
            not name
            or "\\" in name
            or "\x00" in name
            or pure.is_absolute()
            or any(part in ("..", "") for part in name.split("/"))
        ):
            raise _bad_member(name, "escapes the package (an absolute or '..' path)")
        if info.isdir():
            continue
        if not info.isreg():
            raise _bad_member(name, "is a link or a special file")
        if info.size > MAX_FILE_BYTES:
            raise _bad_member(name, f"is larger than {MAX_FILE_BYTES} bytes")
        if name in members:
            raise _bad_member(name, "appears twice")
        members[name] = _Member(name, info)
    return members


def _read_small(tar: tarfile.TarFile, members: dict[str, _Member], name: str) -> bytes:
    member = members.get(name)
    if member is None:
        raise InvalidInputError(
            f"The model package has no {name}.",
            hint="Give the file written by 'civicml models export'.",
        )
    if member.info.size > MAX_JSON_BYTES:
        raise _bad_member(name, f"is larger than {MAX_JSON_BYTES} bytes")
    handle = tar.extractfile(member.info)
    if handle is None:  # pragma: no cover - _check_members admits regular files only
        raise _bad_member(name, "is not a regular file")
    return handle.read()


def _verify_signature(settings: Settings, body: bytes, signature: Any) -> str:
    if not isinstance(signature, dict) or signature.get("algorithm") != "Ed25519":
        raise PackageVerificationError(
            "The model package's signature.json is not an Ed25519 signature.",
            hint="Give the file written by 'civicml models export'.",
        )
    claimed = str(signature.get("key_id", ""))
    trusted = trusted_keys(settings)
    key = trusted.get(claimed)
    if key is None:
        raise PackageVerificationError(
            f"The model package is signed by key {claimed!r}, which is not a trusted signer.",
            hint="Add the exporting installation's public key (keys_dir/"
            "model-signing-ed25519.pub) to trusted_signers if you trust it.",
        )
    try:
        key.verify(base64.b64decode(str(signature.get("signature", "")), validate=True), body)
    except (InvalidSignature, ValueError) as err:
        raise PackageVerificationError(
            f"The signature of the model package does not verify with trusted key {claimed!r}.",
            hint="The package was altered after it was signed; export it again from the "
            "source installation.",
        ) from err
    return claimed


def _check_layout(manifest: Any, members: dict[str, _Member]) -> dict[str, dict[str, Any]]:
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise InvalidInputError(
            "The model package's manifest is not of a format this civicml reads.",
            hint=f"Export the package with a civicml that writes {PACKAGE_FORMAT}.",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InvalidInputError(
            "The model package's manifest lists no files.",
            hint="Give the file written by 'civicml models export'.",
        )
    expected = {MANIFEST_NAME, SIGNATURE_NAME} | {FILES_PREFIX + p for p in files}
    extra = sorted(set(members) - expected)
    if extra:
        raise _bad_member(extra[0], "is not listed in the signed manifest")
    missing = sorted(expected - set(members))
    if missing:
        raise PackageVerificationError(
            f"The model package lacks {missing[0]!r}, listed in its signed manifest.",
            hint="The package is incomplete; export it again from the source installation.",
        )
    for path, meta in files.items():
        if not isinstance(meta, dict) or members[FILES_PREFIX + path].info.size != meta.get("size"):
            raise PackageVerificationError(
                f"File {path!r} of the model package does not have its signed size.",
                hint="The package was altered after it was signed; export it again.",
            )
    return files
