"""Envelope encryption of artifact bytes at rest (AES-256-GCM, segmented like streaming AEAD).

Every encrypted object starts with a header::

    magic "CMLAEAD1" | segment size (u32) | nonce prefix (7 bytes) | blob id (16 bytes)
    | key-id length (u16) | wrapped-key length (u16) | key id | wrapped data key

followed by the ciphertext segments. Each segment holds ``segment size`` bytes of plaintext (the
last one may hold fewer, even none) plus a 16-byte GCM tag; its 12-byte nonce is the nonce prefix,
the segment's index (u32) and a flag byte that is 1 only on the last segment, and its associated
data is the fixed part of the header. So a flipped byte, a reordered, dropped or appended segment,
or a file cut at any point fails authentication instead of returning other bytes.

The data key is random per object and wrapped by a key-encryption key (KEK) from a
:class:`KeyProvider`. Rotation re-wraps it under a new KEK into a small sidecar file
``<digest>.key`` (written atomically on its own) and never rewrites the data; the sidecar names the
blob id it belongs to, so a stale one (its object deleted and stored again) is ignored.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from civicml.core.errors import ArtifactIntegrityError, ConfigurationError, NotFoundError
from civicml.core.files import fsync_directory
from civicml.store.spool_seal import (
    FRAME,
    SPOOL_AAD,
    SPOOL_FIXED,
    SPOOL_MAGIC,
    FrameSealer,
    spool_header,
)

__all__ = [
    "MAGIC",
    "SEGMENT_BYTES",
    "BlobHeader",
    "DecryptingReader",
    "KeyProvider",
    "LocalKeyProvider",
    "SealedAppender",
    "SpoolKey",
    "encrypt_stream",
    "is_sealed",
    "new_spool_key",
    "read_header",
    "read_sealed",
]

MAGIC = b"CMLAEAD1"
SEGMENT_BYTES = 256 << 10
TAG_BYTES = 16
_FIXED = struct.Struct(">8sI7s16sHH")
_AAD_BYTES = 8 + 4 + 7 + 16  # magic .. blob id: what every segment is bound to
_WRAP_AAD = b"civicml/artifact-data-key/v1|"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY_HINT = (
    "Restore the key directory (keys_dir, default $CIVICML_HOME/keys) from its backup, or "
    "point keys_dir at the directory that holds this key; see 'Encryption at rest' in "
    "docs/security.md."
)


@runtime_checkable
class KeyProvider(Protocol):
    """Where key-encryption keys live: a local key directory, or a KMS / Vault transit engine.

    A provider never hands out a KEK; it wraps and unwraps data keys with one, named by id.
    ``aad`` must be bound into the wrapping (a KMS encryption context, Vault's ``context``).
    """

    def current_key_id(self) -> str:
        """The KEK new data keys are wrapped with (created on first use where the provider can)."""
        ...

    def key_ids(self) -> list[str]:
        """Every KEK the provider still holds, oldest first."""
        ...

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes: ...

    def create_key(self) -> str:
        """Make a new KEK the current one; returns its id."""
        ...

    def destroy_key(self, key_id: str) -> None:
        """Forget a KEK for good (the caller checked that nothing uses it)."""
        ...


class LocalKeyProvider:
    """KEKs as 256-bit key files ``kek-<id>.key`` (mode 0600) in a directory outside the artifact
    store; ``kek-current`` names the current one. The first key is generated on first use.

    Args:
        directory: The key directory (created with mode 0700 when missing).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, AESGCM] = {}
        # The first key is made once per process even when threads store their first objects
        # at the same moment (parallel pipeline steps).
        self._first = threading.Lock()

    # Keys -----------------------------------------------------------------------------------
    def key_ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        found = (p.name[4:-4] for p in self.directory.glob("kek-*.key"))
        return sorted(k for k in found if _KEY_ID.match(k))

    def current_key_id(self) -> str:
        key_id = self._pointed()
        if key_id is not None:
            return key_id
        with self._first:
            key_id = self._pointed()  # another thread made the first key meanwhile
            if key_id is not None:
                return key_id
            existing = self.key_ids()
            if existing:
                self._set_current(existing[-1])
                return existing[-1]
            return self.create_key()

    def _pointed(self) -> str | None:
        """The key ``kek-current`` names (None: no pointer yet)."""
        try:
            key_id = (self.directory / "kek-current").read_text().strip()
        except FileNotFoundError:
            return None
        if (self.directory / f"kek-{key_id}.key").is_file():
            return key_id
        raise ConfigurationError(
            f"The current key-encryption key {key_id!r} is missing from the key directory.",
            hint=_KEY_HINT,
        )

    def create_key(self) -> str:
        """Generate a key and make it current. The key file appears under its name only once
        it holds the whole key, durably (written to a temp file, fsynced, hard-linked into
        place): a thread or process that lists the keys meanwhile never finds an empty one."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        key_id = f"{stamp}-{os.urandom(3).hex()}"
        tmp = self.directory / f".kek-{key_id}.{os.getpid()}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, AESGCM.generate_key(bit_length=256))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, self.directory / f"kek-{key_id}.key")  # never replaces a key
        finally:
            tmp.unlink(missing_ok=True)
        fsync_directory(self.directory)
        self._set_current(key_id)
        return key_id

    def destroy_key(self, key_id: str) -> None:
        path = self._key_path(key_id)
        if not path.is_file():
            raise NotFoundError(
                f"Key-encryption key {key_id!r} does not exist.",
                hint="List the keys with 'civicml keys list'.",
            )
        path.unlink()
        self._cache.pop(key_id, None)

    def _set_current(self, key_id: str) -> None:
        tmp = self.directory / f".kek-current.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.write_text(key_id + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.directory / "kek-current")

    def _key_path(self, key_id: str) -> Path:
        if not _KEY_ID.match(key_id):
            raise NotFoundError(
                f"Key-encryption key {key_id!r} does not exist.",
                hint="List the keys with 'civicml keys list'.",
            )
        return self.directory / f"kek-{key_id}.key"

    def _aead(self, key_id: str) -> AESGCM:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        try:
            raw = self._key_path(key_id).read_bytes()
        except (FileNotFoundError, NotFoundError) as err:
            raise ArtifactIntegrityError(
                f"Key-encryption key {key_id!r} is missing: the artifacts it protects cannot be "
                "decrypted.",
                hint=_KEY_HINT,
            ) from err
        if len(raw) != 32:
            raise ArtifactIntegrityError(
                f"Key-encryption key {key_id!r} is not a 256-bit key (its file holds "
                f"{len(raw)} bytes).",
                hint=_KEY_HINT,
            )
        aead = self._cache[key_id] = AESGCM(raw)
        return aead

    # Wrapping -------------------------------------------------------------------------------
    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead(key_id).encrypt(nonce, data_key, aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        aead = self._aead(key_id)
        try:
            return aead.decrypt(wrapped[:12], wrapped[12:], aad)
        except InvalidTag as err:
            raise ArtifactIntegrityError(
                f"Key-encryption key {key_id!r} could not unwrap a data key: the key file holds "
                "a different key, or the artifact's header was altered.",
                hint=_KEY_HINT,
            ) from err


# Objects --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The header of an encrypted object."""

    segment_bytes: int
    nonce_prefix: bytes
    blob_id: bytes
    key_id: str
    wrapped_key: bytes
    aad: bytes
    size: int  # header bytes on disk

    @property
    def wrap_aad(self) -> bytes:
        return _WRAP_AAD + self.blob_id


def _build_header(key_id: str, wrapped: bytes, nonce_prefix: bytes, blob_id: bytes) -> bytes:
    kid = key_id.encode()
    fixed = _FIXED.pack(MAGIC, SEGMENT_BYTES, nonce_prefix, blob_id, len(kid), len(wrapped))
    return fixed + kid + wrapped


def read_header(handle: BinaryIO, bad: ArtifactIntegrityError) -> BlobHeader:
    """Parse the header at the start of ``handle``; ``bad`` is raised when it is malformed."""
    fixed = handle.read(_FIXED.size)
    if len(fixed) != _FIXED.size:
        raise bad
    magic, segment, prefix, blob_id, kid_len, wrap_len = _FIXED.unpack(fixed)
    if magic != MAGIC or not 1024 <= segment <= (1 << 26):
        raise bad
    rest = handle.read(kid_len + wrap_len)
    if len(rest) != kid_len + wrap_len:
        raise bad
    try:
        key_id = rest[:kid_len].decode("ascii")
    except UnicodeDecodeError:
        raise bad from None
    return BlobHeader(
        segment_bytes=segment,
        nonce_prefix=prefix,
        blob_id=blob_id,
        key_id=key_id,
        wrapped_key=rest[kid_len:],
        aad=fixed[:_AAD_BYTES],
        size=_FIXED.size + kid_len + wrap_len,
    )


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def _chunks(stream: BinaryIO, n: int) -> Iterator[bytes | memoryview]:
    """``stream``'s bytes in chunks of exactly ``n`` (the last one shorter, possibly empty),
    whatever sizes its ``read`` returns (short reads, or more than asked)."""
    pending = b""
    while True:
        while len(pending) < n:
            more = stream.read(n - len(pending))
            if not more:
                yield pending
                return
            pending = more if not pending else bytes(pending) + bytes(more)
        yield pending[:n]
        pending = pending[n:]


def encrypt_stream(
    source: BinaryIO, sink: BinaryIO, provider: KeyProvider
) -> Iterator[bytes | memoryview]:
    """Encrypt ``source`` into ``sink`` under a fresh data key; yields each plaintext segment
    (for the caller to hash) after it was written. Memory stays at two segments."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce_prefix, blob_id = os.urandom(7), os.urandom(16)
    key_id = provider.current_key_id()
    wrapped = provider.wrap(key_id, data_key, _WRAP_AAD + blob_id)
    header = _build_header(key_id, wrapped, nonce_prefix, blob_id)
    sink.write(header)
    aad = header[:_AAD_BYTES]
    aead = AESGCM(data_key)
    chunks = _chunks(source, SEGMENT_BYTES)
    segment = next(chunks)
    index = 0
    while True:
        following = next(chunks) if len(segment) == SEGMENT_BYTES else b""
        last = not following
        sink.write(aead.encrypt(_nonce(nonce_prefix, index, last), segment, aad))
        yield segment
        if last:
            return
        segment, index = following, index + 1


class DecryptingReader(io.RawIOBase):
    """A seekable, read-only view of an encrypted object's plaintext; each segment is
    authenticated as it is decrypted (one segment is kept in memory).

    Raises ``bad`` (an :class:`ArtifactIntegrityError`) on any segment that fails.
    """

    def __init__(
        self, raw: BinaryIO, header: BlobHeader, data_key: bytes, bad: ArtifactIntegrityError
    ) -> None:
        super().__init__()
        self._raw = raw
        self._header = header
        self._aead = AESGCM(data_key)
        self._bad = bad
        seg = header.segment_bytes
        stored = os.fstat(raw.fileno()).st_size - header.size
        full, rest = divmod(stored, seg + TAG_BYTES)
        if rest == 0 and full == 0:
            raise bad
        if rest and rest < TAG_BYTES:
            raise bad
        self._segments = full + (1 if rest else 0)
        last_plain = rest - TAG_BYTES if rest else seg
        self._length = (self._segments - 1) * seg + last_plain
        self._pos = 0
        self._cached_index = -1
        self._cached = b""

    @property
    def length(self) -> int:
        """Plaintext bytes in the object."""
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._length + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def segment(self, index: int) -> bytes:
        """The plaintext of segment ``index`` (authenticated)."""
        if index == self._cached_index:
            return self._cached
        seg = self._header.segment_bytes
        self._raw.seek(self._header.size + index * (seg + TAG_BYTES))
        sealed = self._raw.read(seg + TAG_BYTES)
        last = index == self._segments - 1
        try:
            plain = self._aead.decrypt(
                _nonce(self._header.nonce_prefix, index, last), sealed, self._header.aad
            )
        except InvalidTag:
            raise self._bad from None
        self._cached_index, self._cached = index, plain
        return plain

    @property
    def segments(self) -> int:
        return self._segments

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._pos >= self._length or not len(view):
            return 0
        seg = self._header.segment_bytes
        index, start = divmod(self._pos, seg)
        plain = self.segment(index)
        n = min(len(view), len(plain) - start)
        view[:n] = plain[start : start + n]
        self._pos += n
        return n

    def readall(self) -> bytes:
        parts = []
        while self._pos < self._length:
            seg = self._header.segment_bytes
            index, start = divmod(self._pos, seg)
            plain = self.segment(index)
            parts.append(plain[start:] if start else plain)
            self._pos += len(plain) - start
        return b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
            self._cached = b""
        super().close()


# Sidecars -------------------------------------------------------------------------------------
def sidecar_path(blob: Path) -> Path:
    return blob.with_name(blob.name + ".key")


def read_sidecar(blob: Path, header: BlobHeader) -> tuple[str, bytes] | None:
    """The (key id, wrapped key) a rotation left for this blob, if any and if it is this blob's."""
    try:
        record = json.loads(sidecar_path(blob).read_text())
        if record.get("blob") != header.blob_id.hex():
            return None  # left by an object of the same digest that was deleted since
        return str(record["kek"]), base64.b64decode(record["wrapped"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable: the header's own wrapping still applies


def write_sidecar(blob: Path, header: BlobHeader, key_id: str, wrapped: bytes) -> None:
    """Atomically (temp file, fsync, rename) record the data key wrapped under ``key_id``."""
    target = sidecar_path(blob)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}")
    record = {"v": 1, "blob": header.blob_id.hex(), "kek": key_id}
    record["wrapped"] = base64.b64encode(wrapped).decode("ascii")
    try:
        with open(tmp, "x") as handle:
            handle.write(json.dumps(record))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def effective_wrapping(blob: Path, header: BlobHeader) -> tuple[str, bytes]:
    """The (key id, wrapped data key) that currently protects ``blob``."""
    return read_sidecar(blob, header) or (header.key_id, header.wrapped_key)


# Sealed append-only files (the capture spool) ------------------------------------------------
@dataclass(frozen=True)
class SpoolKey:
    """What a writer of one sealed spool file needs: its header (the data key wrapped by the
    provider's current KEK) and the data key itself, to seal frames (:class:`FrameSealer`)."""

    header: bytes
    data_key: bytes
    file_id: bytes


def new_spool_key(keys: KeyProvider) -> SpoolKey:
    """A fresh data key for one sealed spool file, wrapped by the provider's current KEK."""
    data_key = AESGCM.generate_key(bit_length=256)
    file_id = os.urandom(16)
    key_id = keys.current_key_id()
    wrapped = keys.wrap(key_id, data_key, SPOOL_AAD + file_id)
    return SpoolKey(spool_header(file_id, key_id, wrapped), data_key, file_id)


class SealedAppender:
    """An append-only file in which every :meth:`write` is one AES-256-GCM frame, under a data
    key of its own wrapped by the provider's current key-encryption key — for files that live
    outside the content-addressed store for a while (the capture spool), so no plaintext of
    them ever reaches the disk. A frame torn by a crash is dropped when the file is read back
    (:func:`read_sealed`); every complete frame is authenticated. The format:
    :mod:`civicml.store.spool_seal`.

    Args:
        handle: The file, opened for binary writing, empty.
        keys: The key provider.
    """

    def __init__(self, handle: BinaryIO, keys: KeyProvider) -> None:
        key = new_spool_key(keys)
        handle.write(key.header)
        self._handle = handle
        self._sealer = FrameSealer(key.data_key, key.file_id)

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def write(self, data: bytes) -> int:
        self._handle.write(self._sealer.seal(data))
        return len(data)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def is_sealed(path: Path) -> bool:
    """Whether ``path`` was written by :class:`SealedAppender`."""
    with open(path, "rb") as handle:
        return handle.read(len(SPOOL_MAGIC)) == SPOOL_MAGIC


def read_sealed(path: Path, keys: KeyProvider) -> bytes:
    """The plaintext of a file :class:`SealedAppender` wrote: every complete frame, in order;
    a last frame cut short by a crash is dropped.

    Raises:
        ArtifactIntegrityError: The header or a complete frame does not authenticate (the file
            was altered, or its key is not this provider's).
    """
    bad = ArtifactIntegrityError(
        f"The sealed file {path.name} does not authenticate: it was altered, or was written "
        "under a key this server does not hold.",
        hint="Check keys_dir; the file is left where it is.",
    )
    data = path.read_bytes()
    start = len(SPOOL_MAGIC) + SPOOL_FIXED.size
    if not data.startswith(SPOOL_MAGIC) or len(data) < start:
        raise bad
    file_id, kid_len, wrap_len = SPOOL_FIXED.unpack(data[len(SPOOL_MAGIC) : start])
    try:
        key_id = data[start : start + kid_len].decode("ascii")
        wrapped = data[start + kid_len : start + kid_len + wrap_len]
        aead = AESGCM(keys.unwrap(key_id, wrapped, SPOOL_AAD + file_id))
    except (UnicodeDecodeError, InvalidTag, ValueError):
        raise bad from None
    offset, frame, out = start + kid_len + wrap_len, 0, []
    while offset + FRAME.size <= len(data):
        (size,) = FRAME.unpack(data[offset : offset + FRAME.size])
        body = data[offset + FRAME.size : offset + FRAME.size + size]
        if len(body) < size:
            break  # torn by a crash mid-write: that frame never completed
        counter = frame.to_bytes(12, "big")
        try:
            out.append(aead.decrypt(counter, body, file_id + counter))
        except InvalidTag:
            raise bad from None
        offset += FRAME.size + size
        frame += 1
    return b"".join(out)
