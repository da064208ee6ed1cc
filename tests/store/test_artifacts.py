from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from civicml.core import (
    ArtifactIntegrityError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
)
from civicml.core.errors import InsufficientStorageError
from civicml.store import LocalArtifactStore, open_artifact_store


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def test_put_is_content_addressed_and_deduplicated(store: LocalArtifactStore) -> None:
    first = store.put_bytes(b"hello")
    second = store.put_stream(io.BytesIO(b"hello"))
    assert first == second
    assert first.digest == hashlib.sha256(b"hello").hexdigest()
    assert first.size == 5
    objects = [p for p in (store.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1
    assert not stat.S_IMODE(objects[0].stat().st_mode) & 0o222  # read-only: never overwritten
    assert store.read_bytes(first.digest) == b"hello"
    assert store.read_bytes("sha256:" + first.digest) == b"hello"


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_buffer_with_its_known_digest_is_stored_as_the_bytes_are(
    tmp_path: Path, encrypted: bool
) -> None:
    from civicml.store.crypto import LocalKeyProvider

    keys = LocalKeyProvider(tmp_path / "keys") if encrypted else None
    store = LocalArtifactStore(tmp_path / "artifacts", keys=keys)
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks and encryption segments
    digest = hashlib.sha256(data).hexdigest()
    stored = store.put_bytes(memoryview(data), sha256=digest)
    assert stored.digest == digest and stored.size == len(data)
    assert store.read_bytes(digest) == data
    assert store.put_bytes(data) == stored  # the same object, hashed by the store
    with pytest.raises(InvalidInputError):
        store.put_bytes(data, sha256="not-a-digest")
    # A wrong digest (a caller's bug) never yields other bytes: reads verify them.
    other = b"other bytes"
    wrong = store.put_bytes(other, sha256=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(ArtifactIntegrityError):
        store.read_bytes(wrong.digest)


def test_large_stream_round_trip(store: LocalArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    stored = store.put_file(source)
    with store.open(stored.digest) as handle:
        assert handle.read() == data
    target = tmp_path / "copy.bin"
    store.copy_to(stored.digest, target)
    assert target.read_bytes() == data


def test_corrupted_object_is_refused_on_read(store: LocalArtifactStore) -> None:
    stored = store.put_bytes(b"model weights")
    path = store._path(stored.digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered weights")
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        store.read_bytes(stored.digest)
    with pytest.raises(ArtifactIntegrityError):
        store.open(stored.digest)


def test_missing_and_malformed_digests(store: LocalArtifactStore) -> None:
    with pytest.raises(NotFoundError, match="not in the artifact store"):
        store.read_bytes("0" * 64)
    with pytest.raises(InvalidInputError, match="not a SHA-256 digest"):
        store.read_bytes("../../etc/passwd")
    assert not store.exists("f" * 64)


def test_recover_removes_temp_files_of_dead_processes(store: LocalArtifactStore) -> None:
    dead = store.root / "tmp" / "999999-deadbeef.part"
    dead.write_bytes(b"half")
    mine = store.root / "tmp" / f"{os.getpid()}-cafe.part"
    mine.write_bytes(b"in progress")
    assert store.recover() == 1
    assert not dead.exists()
    assert mine.exists()


def test_failed_write_leaves_no_object(store: LocalArtifactStore) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk went away")
            return b"x" * 1024

    with pytest.raises(OSError, match="disk went away"):
        store.put_stream(Broken())  # type: ignore[arg-type]
    assert not any(p.is_file() for p in (store.root / "objects").rglob("*"))
    assert not any((store.root / "tmp").iterdir())


def test_unsupported_scheme_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'s3' backend is not a local directory"):
        open_artifact_store("s3://bucket/prefix")
    assert isinstance(open_artifact_store(f"file://{tmp_path}/a"), LocalArtifactStore)


@pytest.mark.parametrize(
    "code,message",
    [
        (errno.ENOSPC, "The artifact store is out of space; nothing was stored."),
        (errno.EDQUOT, "The artifact store is out of space; nothing was stored."),
        (errno.EROFS, "The artifact store is read-only; nothing was stored."),
        (errno.EACCES, "The artifact store is read-only; nothing was stored."),
    ],
)
def test_a_full_or_read_only_store_is_a_507_and_leaves_nothing(
    store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    kept = store.put_bytes(b"kept")
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:  # the data reaches the disk at fsync: it is full
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)

    with pytest.raises(InsufficientStorageError, match=message) as caught:
        store.put_bytes(b"new content")

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert caught.value.status == 507 and caught.value.retry_after >= 1
    assert str(store.root) not in caught.value.message + str(caught.value.hint)
    assert not any((store.root / "tmp").iterdir())
    assert [p.name for p in (store.root / "objects").rglob("*") if p.is_file()] == [kept.digest]
    assert store.read_bytes(kept.digest) == b"kept"
    assert store.put_bytes(b"new content").size == 11  # recovers once the condition clears


def test_a_missing_object_names_no_server_path(store: LocalArtifactStore) -> None:
    with pytest.raises(NotFoundError) as caught:
        store.read_bytes("0" * 64)

    assert str(store.root) not in caught.value.message
    assert str(store.root) not in (caught.value.hint or "")
