"""Content-addressed artifact storage.

Bytes are keyed by the SHA-256 of their plaintext. Writes are atomic (temp file, fsync, hard link
into place, fsync of the directory), so a killed process never leaves a partial object under a real
key; identical content is stored once; an object is never overwritten; every read re-hashes the
plaintext and refuses to return it when it no longer matches.

With a key provider and ``encrypt`` on (the default through :func:`artifact_store_for`), objects
are written encrypted (AES-256-GCM envelope encryption, see :mod:`civicml.store.crypto`); plaintext
objects written before that still read, and :meth:`LocalArtifactStore.encrypt_existing` converts
them.
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
from typing import Any, BinaryIO, Protocol, cast

from civicml.core.errors import (
    ArtifactIntegrityError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from civicml.core.files import fsync_directory
from civicml.core.process import process_alive
from civicml.core.settings import Settings
from civicml.store.crypto import (
    MAGIC,
    BlobHeader,
    DecryptingReader,
    KeyProvider,
    LocalKeyProvider,
    effective_wrapping,
    encrypt_stream,
    read_header,
    write_sidecar,
)
from civicml.store.faults import translate_storage_errors

__all__ = [
    "ArtifactStore",
    "BufferReader",
    "KeyAdministration",
    "KeyReport",
    "KeyUsage",
    "KnownDigest",
    "LocalArtifactStore",
    "RotationResult",
    "Stored",
    "artifact_store_for",
    "check_digest",
    "open_artifact_store",
]

_CHUNK = 1 << 20
_KEEP_DECRYPTED = 8 << 20  # objects up to this size are decrypted once by open(), into memory
log = logging.getLogger("civicml.artifacts")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store answers after a put."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """One key-encryption key and how many stored objects it protects."""

    key_id: str
    current: bool
    objects: int


@dataclass(frozen=True, slots=True)
class KeyReport:
    """Every key-encryption key, and the objects still stored in plaintext."""

    encrypt: bool
    keys: list[KeyUsage]
    plaintext_objects: int
    unknown_keys: dict[str, int]


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What ``civicml keys rotate`` did."""

    key_id: str
    previous_key_id: str | None
    rewrapped: int
    encrypted: int


class ArtifactStore(Protocol):
    """Where artifact bytes live. Backends are chosen by URL: a local or mounted directory
    (:class:`LocalArtifactStore`) or an S3-compatible bucket
    (:class:`civicml.store.s3.S3ArtifactStore`); both keep the same guarantees."""

    #: A local directory the store owns (for S3, its working directory); ``root / "tmp"`` holds
    #: temp files that :meth:`recover` removes once their process is gone.
    root: Path
    #: Where key-encryption keys come from (None: plaintext only).
    keys: KeyProvider | None
    #: Whether new objects are written encrypted.
    encrypt: bool

    @property
    def scratch_dir(self) -> Path: ...

    def put_bytes(self, data: bytes | memoryview, *, sha256: str | None = None) -> Stored: ...

    def put_stream(self, stream: BinaryIO) -> Stored: ...

    def put_file(self, path: Path) -> Stored: ...

    def exists(self, digest: str) -> bool: ...

    def read_bytes(self, digest: str) -> bytes: ...

    def open(self, digest: str) -> BinaryIO: ...

    def recover(self) -> int: ...

    def delete(self, digest: str) -> bool: ...

    def copy_to(self, digest: str, target: Path) -> None: ...

    def key_report(self) -> KeyReport: ...

    def rewrap(self) -> int: ...

    def rotate_keys(self) -> RotationResult: ...

    def retire_key(self, key_id: str) -> None: ...

    def encrypt_existing(self) -> int: ...


def check_digest(digest: str) -> str:
    """Accept ``sha256:<hex>`` or ``<hex>``; return the bare lower-case hex."""
    value = digest.removeprefix("sha256:").lower()
    if not _DIGEST.match(value):
        raise InvalidInputError(
            f"{digest!r} is not a SHA-256 digest.",
            hint="A digest is 64 hexadecimal characters, optionally prefixed with 'sha256:'.",
        )
    return value


class KeyAdministration:
    """What every artifact store does with its key-encryption keys, on top of three things each
    store knows how to do itself: name the key that wraps each object's data key
    (:meth:`_object_key_ids`), re-wrap them (:meth:`rewrap`) and encrypt plaintext objects
    (:meth:`encrypt_existing`)."""

    keys: KeyProvider | None
    encrypt: bool

    def _object_key_ids(self) -> Iterator[str | None]:
        """The id of the key wrapping each stored object's data key (None: plaintext)."""
        raise NotImplementedError

    def rewrap(self) -> int:
        raise NotImplementedError

    def encrypt_existing(self) -> int:
        raise NotImplementedError

    def _provider(self) -> KeyProvider:
        if self.keys is None:
            raise ConfigurationError(
                "This artifact store has no key provider.",
                hint="Set keys_dir (default $CIVICML_HOME/keys).",
            )
        return self.keys

    def key_report(self) -> KeyReport:
        """Every key-encryption key with how many objects it protects (creates the first key
        when there is none yet)."""
        keys = self._provider()
        current = keys.current_key_id()
        held = keys.key_ids()
        counts: dict[str, int] = {}
        plaintext = 0
        for key_id in self._object_key_ids():
            if key_id is None:
                plaintext += 1
            else:
                counts[key_id] = counts.get(key_id, 0) + 1
        usage = [KeyUsage(k, k == current, counts.pop(k, 0)) for k in held]
        return KeyReport(
            encrypt=self.encrypt, keys=usage, plaintext_objects=plaintext, unknown_keys=counts
        )

    def rotate_keys(self) -> RotationResult:
        """Make a new key-encryption key current and re-wrap every data key under it; plaintext
        objects are encrypted too when encryption is on."""
        keys = self._provider()
        previous = keys.current_key_id() if keys.key_ids() else None
        key_id = keys.create_key()
        rewrapped = self.rewrap()
        encrypted = self.encrypt_existing() if self.encrypt else 0
        return RotationResult(
            key_id=key_id, previous_key_id=previous, rewrapped=rewrapped, encrypted=encrypted
        )

    def retire_key(self, key_id: str) -> None:
        """Destroy a key-encryption key that no object uses any more.

        Raises:
            NotFoundError: The provider has no such key.
            ConflictError: It is the current key, or objects still use it (409).
        """
        keys = self._provider()
        if key_id not in keys.key_ids():
            raise NotFoundError(
                f"Key-encryption key {key_id!r} does not exist.",
                hint="List the keys with 'civicml keys list'.",
            )
        if key_id == keys.current_key_id():
            raise ConflictError(
                f"Key-encryption key {key_id!r} is the current key; it cannot be retired.",
                hint="Run 'civicml keys rotate' first, then retire the old key.",
            )
        using = sum(1 for used in self._object_key_ids() if used == key_id)
        if using:
            raise ConflictError(
                f"Key-encryption key {key_id!r} still protects {using} artifact(s); it cannot "
                "be retired.",
                hint="Run 'civicml keys rotate' (it re-wraps every data key under a new key), "
                "then retire this one.",
            )
        keys.destroy_key(key_id)


class LocalArtifactStore(KeyAdministration):
    """Artifacts in a local (or mounted) directory: ``objects/ab/cd/<sha256>``.

    Args:
        root: The directory; created when missing.
        keys: Where key-encryption keys come from; without one, objects are written in
            plaintext and encrypted objects cannot be read.
        encrypt: Write new objects encrypted (default: whenever ``keys`` is given).
    """

    def __init__(
        self, root: Path, *, keys: KeyProvider | None = None, encrypt: bool | None = None
    ) -> None:
        self.root = root
        self.keys = keys
        self.encrypt = keys is not None if encrypt is None else encrypt
        if self.encrypt and keys is None:
            raise ConfigurationError(
                "Artifact encryption is on but no key provider is configured.",
                hint="Set keys_dir, or encrypt_artifacts = false.",
            )
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
    def put_bytes(self, data: bytes | memoryview, *, sha256: str | None = None) -> Stored:
        """Store ``data`` (read in place, not copied). ``sha256``: its SHA-256, when the caller
        has just computed it over exactly these bytes in this process — then they are not
        hashed a second time (a wrong one makes the object unreadable: reads verify it)."""
        return self._put(
            cast(BinaryIO, BufferReader(data)), None if sha256 is None else check_digest(sha256)
        )

    def put_file(self, path: Path) -> Stored:
        with open(path, "rb") as handle:
            return self.put_stream(handle)

    def put_stream(self, stream: BinaryIO) -> Stored:
        """Store the stream's bytes; returns their digest and size.

        Raises:
            InsufficientStorageError: The store's volume is full or read-only (507); nothing
                was stored and the temp file is gone.
        """
        return self._put(stream, None)

    def _put(self, stream: BinaryIO, known: str | None) -> Stored:
        hasher: Any = hashlib.sha256() if known is None else KnownDigest(known)
        size = 0
        with translate_storage_errors(), self._temp_file() as (tmp_path, handle):
            if self.encrypt and self.keys is not None:
                for segment in encrypt_stream(stream, handle, self.keys):
                    hasher.update(segment)
                    size += len(segment)
            else:
                while chunk := stream.read(_CHUNK):
                    hasher.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            digest: str = hasher.hexdigest()
            final = self._path(digest)
            if not final.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp_path, 0o444)
                try:
                    os.link(tmp_path, final)  # never replaces an existing object
                except FileExistsError:
                    pass
                else:
                    fsync_directory(final.parent)
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
        with open(path, "rb") as handle:
            if handle.read(len(MAGIC)) == MAGIC:
                try:
                    with self._decrypting(digest, path, open(path, "rb")) as reader:
                        data = reader.readall()
                except ArtifactIntegrityError:
                    if _plain_digest(path) == digest:  # a plaintext object that starts so
                        return path.read_bytes()
                    raise
            else:
                data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise _corrupted(digest)
        return data

    def open(self, digest: str) -> BinaryIO:
        """Open an object for reading after checking its whole content against the digest.

        The handle is seekable; an encrypted object is decrypted segment by segment as it is
        read, each segment authenticated again.
        """
        digest = check_digest(digest)
        path = self._existing(digest)
        handle = open(path, "rb")
        if handle.read(len(MAGIC)) == MAGIC:
            handle.seek(0)
            try:
                return self._open_encrypted(digest, path, handle)
            except ArtifactIntegrityError:
                if _plain_digest(path) != digest:
                    raise
                handle = open(path, "rb")  # a plaintext object that starts so
        handle.seek(0)
        hasher = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
        if hasher.hexdigest() != digest:
            handle.close()
            raise _corrupted(digest)
        handle.seek(0)
        return handle

    def _open_encrypted(self, digest: str, path: Path, handle: BinaryIO) -> BinaryIO:
        reader = self._decrypting(digest, path, handle)
        keep = reader.length <= _KEEP_DECRYPTED  # small: decrypt once, hand out the bytes
        kept = []
        try:
            hasher = hashlib.sha256()
            for index in range(reader.segments):
                plain = reader.segment(index)
                hasher.update(plain)
                if keep:
                    kept.append(plain)
            if hasher.hexdigest() != digest:
                raise _corrupted(digest)
        except BaseException:
            reader.close()
            raise
        if keep:
            reader.close()
            return io.BytesIO(b"".join(kept))
        reader.seek(0)
        return io.BufferedReader(reader, buffer_size=_CHUNK)

    def _decrypting(self, digest: str, path: Path, handle: BinaryIO) -> DecryptingReader:
        """A plaintext view of an encrypted object (closes ``handle`` when it fails)."""
        bad = _corrupted(digest, log_it=False)
        try:
            header = read_header(handle, bad)
            key_id, wrapped = effective_wrapping(path, header)
            if self.keys is None:
                raise ArtifactIntegrityError(
                    f"Artifact sha256:{digest} is encrypted, and no key provider is configured.",
                    hint="Set keys_dir to the directory that holds the key-encryption keys.",
                )
            try:
                data_key = self.keys.unwrap(key_id, wrapped, header.wrap_aad)
            except ArtifactIntegrityError as err:
                raise ArtifactIntegrityError(
                    f"Artifact sha256:{digest} cannot be decrypted: {err.message}", hint=err.hint
                ) from err
            return DecryptingReader(handle, header, data_key, bad)
        except BaseException as err:
            handle.close()
            if err is bad:
                log.error("artifact sha256:%s failed its integrity check", digest)
            raise

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

    # Deletion -------------------------------------------------------------------------------
    def delete(self, digest: str) -> bool:
        """Remove an object's bytes (erasure and retention, docs/privacy.md); False when they
        were already gone. The caller has checked that no index row names the digest any more:
        objects are shared by content, so this store never decides that by itself."""
        path = self._path(check_digest(digest))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_directory(path.parent)
        return True

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

    # Keys -----------------------------------------------------------------------------------
    def _object_files(self) -> Iterator[tuple[str, Path]]:
        for path in sorted(self._objects.glob("??/??/*")):
            if _DIGEST.match(path.name) and path.is_file():
                yield path.name, path

    def _object_key_ids(self) -> Iterator[str | None]:
        for digest, path in self._object_files():
            found = self._wrapping(digest, path)
            yield None if found is None else found[0]

    def _wrapping(self, digest: str, path: Path) -> tuple[str, bytes, Path] | None:
        """(key id, wrapped data key, path) of an encrypted object; None for a plaintext one."""
        with open(path, "rb") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                return None
            handle.seek(0)
            header = _header_of(handle, digest)
        key_id, wrapped = effective_wrapping(path, header)
        return key_id, wrapped, path

    def rewrap(self) -> int:
        """Re-wrap every object's data key under the current key-encryption key, in its sidecar
        file (the object's bytes are not rewritten); returns how many were re-wrapped."""
        keys = self._provider()
        current = keys.current_key_id()
        done = 0
        for digest, path in self._object_files():
            with open(path, "rb") as handle:
                if handle.read(len(MAGIC)) != MAGIC:
                    continue
                handle.seek(0)
                header = _header_of(handle, digest)
            key_id, wrapped = effective_wrapping(path, header)
            if key_id == current:
                continue
            data_key = keys.unwrap(key_id, wrapped, header.wrap_aad)
            with translate_storage_errors():
                write_sidecar(path, header, current, keys.wrap(current, data_key, header.wrap_aad))
            done += 1
        return done

    def encrypt_existing(self) -> int:
        """Encrypt every object still stored in plaintext (each is checked against its digest
        first and replaced atomically); returns how many were converted."""
        keys = self._provider()
        converted = 0
        for digest, path in self._object_files():
            with open(path, "rb") as handle:
                if handle.read(len(MAGIC)) == MAGIC:
                    continue
            if _plain_digest(path) != digest:
                raise _corrupted(digest)
            hasher = hashlib.sha256()
            with (
                translate_storage_errors(),
                self._temp_file() as (tmp_path, handle),
                open(path, "rb") as source,
            ):
                for segment in encrypt_stream(source, handle, keys):
                    hasher.update(segment)
                handle.flush()
                os.fsync(handle.fileno())
                if hasher.hexdigest() != digest:
                    raise _corrupted(digest)
                os.chmod(tmp_path, 0o444)
                os.replace(tmp_path, path)
                fsync_directory(path.parent)
            converted += 1
        return converted


def _header_of(handle: BinaryIO, digest: str) -> BlobHeader:
    """The encryption header of object ``digest``; logged and raised only when it is malformed
    (building the error eagerly would log an integrity failure for every healthy object)."""
    try:
        return read_header(handle, _corrupted(digest, log_it=False))
    except ArtifactIntegrityError:
        log.error("artifact sha256:%s failed its integrity check", digest)
        raise


def _corrupted(digest: str, *, log_it: bool = True) -> ArtifactIntegrityError:
    if log_it:
        log.error("artifact sha256:%s failed its integrity check", digest)
    return ArtifactIntegrityError(
        f"Artifact sha256:{digest} failed its integrity check: its stored bytes no longer "
        "match their SHA-256. They were not used.",
        hint="Restore the file from a backup; run 'civicml audit verify' to check the audit trail.",
    )


def _plain_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


class KnownDigest:
    """Stands in for a hasher when the caller gave the digest of the bytes being stored."""

    def __init__(self, digest: str) -> None:
        self._digest = digest

    def update(self, _data: bytes | memoryview) -> None:
        return None

    def hexdigest(self) -> str:
        return self._digest


class BufferReader(io.RawIOBase):
    """A read-only stream over bytes in memory whose reads are views of them, not copies (what
    :meth:`put_bytes` writes from: a DataFrame's Arrow IPC file is tens of megabytes)."""

    def __init__(self, data: bytes | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> memoryview:
        start = self._pos
        end = len(self._view) if size is None or size < 0 else min(start + size, len(self._view))
        self._pos = end
        return self._view[start:end]


def artifact_store_for(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name, with their key provider (``keys_dir``) and
    ``encrypt_artifacts``: an S3 bucket for ``s3://bucket/prefix``, else a directory."""
    if settings.artifacts_s3:
        from civicml.store.s3 import s3_artifact_store

        return s3_artifact_store(settings, keys=LocalKeyProvider(settings.keys_root))
    store = open_artifact_store(
        settings.artifacts_root,
        keys=LocalKeyProvider(settings.keys_root),
        encrypt=settings.encrypt_artifacts,
    )
    keys_dir = settings.keys_root.resolve()
    if keys_dir.is_relative_to(store.root.resolve()):
        raise ConfigurationError(
            "The key directory (keys_dir) is inside the artifact store.",
            hint="Keep key-encryption keys apart from the data they protect: point keys_dir "
            "outside the artifacts directory (default $CIVICML_HOME/keys).",
        )
    return store


def open_artifact_store(
    location: str | Path, *, keys: KeyProvider | None = None, encrypt: bool | None = None
) -> LocalArtifactStore:
    """The artifact store for a location (a directory path or ``file://`` URL)."""
    text = str(location)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"Artifact store {text!r}: the {scheme!r} backend is not a local directory.",
            hint="Use a local or mounted directory here; an s3:// store is opened from "
            "settings (artifact_store_for).",
        )
    return LocalArtifactStore(Path(text).expanduser(), keys=keys, encrypt=encrypt)
