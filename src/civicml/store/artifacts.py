"""Content-addressed artifact storage.

Bytes are keyed by their SHA-256. Writes are atomic (temp file, fsync, hard link into place, fsync
of the directory), so a killed process never leaves a partial object under a real key; identical
content is stored once; an object is never overwritten; every read re-hashes the bytes and refuses
to return them when they no longer match.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from civicml.core.errors import (
    ArtifactIntegrityError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
)
from civicml.core.process import process_alive
from civicml.store.faults import translate_storage_errors

__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "Stored",
    "check_digest",
    "open_artifact_store",
]

_CHUNK = 1 << 20
log = logging.getLogger("civicml.artifacts")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store answers after a put."""

    digest: str
    size: int


class ArtifactStore(Protocol):
    """Where artifact bytes live. Backends are chosen by URL (local directory now, S3 next)."""

    def put_bytes(self, data: bytes) -> Stored: ...

    def put_stream(self, stream: BinaryIO) -> Stored: ...

    def put_file(self, path: Path) -> Stored: ...

    def exists(self, digest: str) -> bool: ...

    def read_bytes(self, digest: str) -> bytes: ...

    def open(self, digest: str) -> BinaryIO: ...

    def recover(self) -> int: ...


def check_digest(digest: str) -> str:
    """Accept ``sha256:<hex>`` or ``<hex>``; return the bare lower-case hex."""
    value = digest.removeprefix("sha256:").lower()
    if not _DIGEST.match(value):
        raise InvalidInputError(
            f"{digest!r} is not a SHA-256 digest.",
            hint="A digest is 64 hexadecimal characters, optionally prefixed with 'sha256:'.",
        )
    return value


class LocalArtifactStore:
    """Artifacts in a local (or mounted) directory: ``objects/ab/cd/<sha256>``.

    Args:
        root: The directory; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    @property
    def scratch_dir(self) -> Path:
        """A directory on the store's volume for temporary files (uploads being received)."""
        return self._tmp

    def _path(self, digest: str) -> Path:
        return self._objects / digest[:2] / digest[2:4] / digest

    # Writes ---------------------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> Stored:
        return self.put_stream(io.BytesIO(data))

    def put_file(self, path: Path) -> Stored:
        with open(path, "rb") as handle:
            return self.put_stream(handle)

    def put_stream(self, stream: BinaryIO) -> Stored:
        """Store the stream's bytes; returns their digest and size.

        Raises:
            InsufficientStorageError: The store's volume is full or read-only (507); nothing
                was stored and the temp file is gone.
        """
        hasher = hashlib.sha256()
        size = 0
        with translate_storage_errors(), self._temp_file() as (tmp_path, handle):
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            digest = hasher.hexdigest()
            final = self._path(digest)
            if not final.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp_path, 0o444)
                try:
                    os.link(tmp_path, final)  # never replaces an existing object
                except FileExistsError:
                    pass
                else:
                    _fsync_dir(final.parent)
        return Stored(digest=digest, size=size)

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        tmp_path = self._tmp / f"{os.getpid()}-{os.urandom(8).hex()}.part"
        try:
            with open(tmp_path, "xb") as handle:
                yield tmp_path, handle
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    # Reads ----------------------------------------------------------------------------------
    def exists(self, digest: str) -> bool:
        return self._path(check_digest(digest)).is_file()

    def read_bytes(self, digest: str) -> bytes:
        digest = check_digest(digest)
        path = self._existing(digest)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise _corrupted(digest)
        return data

    def open(self, digest: str) -> BinaryIO:
        """Open an object for reading after checking its whole content against the digest."""
        digest = check_digest(digest)
        path = self._existing(digest)
        handle = open(path, "rb")
        hasher = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
        if hasher.hexdigest() != digest:
            handle.close()
            raise _corrupted(digest)
        handle.seek(0)
        return handle

    def copy_to(self, digest: str, target: Path) -> None:
        """Write a verified copy of an object to ``target`` (atomically)."""
        with self.open(digest) as src:
            tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)

    def _existing(self, digest: str) -> Path:
        path = self._path(digest)
        if not path.is_file():
            raise NotFoundError(
                f"Artifact sha256:{digest} is not in the artifact store: its bytes are missing.",
                hint="Restore them from a backup, or check that CIVICML_ARTIFACTS points at the "
                "store this metadata database uses.",
            )
        return path

    # Recovery -------------------------------------------------------------------------------
    def recover(self) -> int:
        """Delete temp files left by processes that died mid-write; returns how many."""
        removed = 0
        for tmp in self._tmp.glob("*.part"):
            pid_text = tmp.name.split("-", 1)[0]
            if pid_text.isdigit() and process_alive(int(pid_text)):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
        return removed


def _corrupted(digest: str) -> ArtifactIntegrityError:
    log.error("artifact sha256:%s failed its integrity check", digest)
    return ArtifactIntegrityError(
        f"Artifact sha256:{digest} failed its integrity check: its stored bytes no longer "
        "match their SHA-256. They were not used.",
        hint="Restore the file from a backup; run 'civicml audit verify' to check the audit trail.",
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_artifact_store(location: str | Path) -> LocalArtifactStore:
    """The artifact store for a location (a directory path or ``file://`` URL)."""
    text = str(location)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"Artifact store {text!r}: the {scheme!r} backend is not available in this version.",
            hint="Use a local or mounted directory for CIVICML_ARTIFACTS.",
        )
    return LocalArtifactStore(Path(text).expanduser())
