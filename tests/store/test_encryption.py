"""Encryption at rest of the artifact store (``civicml.store.crypto``): envelope encryption,
tamper and truncation detection, wrong or missing keys, rotation, retirement, legacy plaintext."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from civicml.cli.main import main
from civicml.core import ArtifactIntegrityError
from civicml.core.errors import ConfigurationError, ConflictError, NotFoundError
from civicml.core.settings import Settings
from civicml.data import DatasetService
from civicml.governance import ProjectService
from civicml.store import Context, LocalArtifactStore, crypto
from civicml.store.artifacts import artifact_store_for
from civicml.store.crypto import MAGIC, SEGMENT_BYTES, TAG_BYTES, LocalKeyProvider

MARKER = "Zyxwvut-Confidential-Applicant-4417"
BIG = (8 << 20) + 3 * SEGMENT_BYTES + 7  # above what open() decrypts into memory at once


@pytest.fixture
def keys(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path, keys: LocalKeyProvider) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts", keys=keys)


def blob(store: LocalArtifactStore, digest: str) -> Path:
    return store.root / "objects" / digest[:2] / digest[2:4] / digest


def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.chmod(0o644)
    path.write_bytes(change(path.read_bytes()))


class Trickle(io.RawIOBase):
    """A non-seekable stream that answers short reads (like a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), 70_001, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


# Nothing readable on disk ------------------------------------------------------------------------
def test_bytes_on_disk_contain_no_plaintext_of_an_ingested_dataset(
    any_ctx: Context, tmp_path: Path
) -> None:
    csv = tmp_path / "applicants.csv"
    csv.write_text(
        "name,income\n" + "".join(f"{MARKER}-{i},{1000 + i}\n" for i in range(200)),
        encoding="utf-8",
    )
    ProjectService(any_ctx).ensure("p", "projects.read")
    version = DatasetService(any_ctx).ingest("p", "applicants", csv)

    root = any_ctx.settings.artifacts_root
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, "the ingest stored its Parquet file"
    for path in files:
        data = path.read_bytes()
        assert MARKER.encode() not in data, path.name
        assert b"PAR1" not in data[:4] and data[:8] == MAGIC, path.name
    table = DatasetService(any_ctx).read(version)  # and it reads back through the key
    assert table.column("name")[0].as_py() == f"{MARKER}-0"

    keys_dir = any_ctx.settings.keys_root
    assert not keys_dir.resolve().is_relative_to(root.resolve())
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    (key_file,) = keys_dir.glob("kek-*.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_settings_turn_encryption_off_for_new_objects_only(tmp_path: Path) -> None:
    on = artifact_store_for(Settings.load(home=tmp_path / "home"))
    sealed = on.put_bytes(b"secret one")
    off = artifact_store_for(Settings.load(home=tmp_path / "home", encrypt_artifacts=False))
    plain = off.put_bytes(b"plain two")
    assert blob(off, plain.digest).read_bytes() == b"plain two"
    assert off.read_bytes(sealed.digest) == b"secret one"  # older encrypted objects still read


def test_a_key_directory_inside_the_artifact_store_is_refused(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "home", keys_dir=tmp_path / "home/artifacts/keys")
    with pytest.raises(ConfigurationError, match="inside the artifact store"):
        artifact_store_for(settings)


# Round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size",
    [0, 1, SEGMENT_BYTES - 1, SEGMENT_BYTES, 2 * SEGMENT_BYTES, 5 * SEGMENT_BYTES + 12345, BIG],
)
def test_streamed_objects_round_trip(store: LocalArtifactStore, size: int) -> None:
    data = os.urandom(size)
    stored = store.put_stream(Trickle(data))  # type: ignore[arg-type]
    assert stored.digest == hashlib.sha256(data).hexdigest() and stored.size == size
    assert store.read_bytes(stored.digest) == data
    with store.open(stored.digest) as handle:
        assert handle.read() == data
    on_disk = blob(store, stored.digest).read_bytes()
    assert on_disk.startswith(MAGIC) and (size < 64 or data[:64] not in on_disk)


def test_a_stream_that_answers_more_than_asked_round_trips(store: LocalArtifactStore) -> None:
    class Gush:
        """Returns 1 MiB + 3 bytes per read, whatever size was asked (like a careless reader)."""

        def __init__(self) -> None:
            self.parts = [os.urandom((1 << 20) + 3) for _ in range(3)]
            self.left = list(self.parts)

        def read(self, size: int = -1) -> bytes:
            return self.left.pop(0) if self.left else b""

    source = Gush()
    data = b"".join(source.parts)
    stored = store.put_stream(source)  # type: ignore[arg-type]
    assert (stored.digest, stored.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert store.read_bytes(stored.digest) == data


@pytest.mark.parametrize("size", [3 * SEGMENT_BYTES + 999, BIG])  # in memory / streamed
def test_an_open_object_seeks_anywhere(store: LocalArtifactStore, size: int) -> None:
    data = os.urandom(size)
    digest = store.put_bytes(data).digest
    with store.open(digest) as handle:
        assert handle.seekable()
        for offset in (SEGMENT_BYTES + 5, 7, 3 * SEGMENT_BYTES + 500, SEGMENT_BYTES - 3):
            handle.seek(offset)
            assert handle.read(10) == data[offset : offset + 10]
        handle.seek(-20, io.SEEK_END)
        assert handle.read() == data[-20:]
        assert handle.tell() == len(data)
        handle.seek(SEGMENT_BYTES - 2)
        assert handle.read(SEGMENT_BYTES + 4) == data[SEGMENT_BYTES - 2 : 2 * SEGMENT_BYTES + 2]


def test_parquet_reads_through_the_decrypting_handle(store: LocalArtifactStore) -> None:
    rows = 1_200_000  # more than open() keeps in memory: pyarrow seeks the decrypting reader
    table = pa.table({"n": list(range(rows)), "s": [f"row {i}" for i in range(rows)]})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=200_000, compression="none")
    assert sink.tell() > 8 << 20
    digest = store.put_bytes(sink.getvalue()).digest
    with store.open(digest) as handle:
        assert not isinstance(handle, io.BytesIO)
        assert pq.read_table(handle, columns=["s"]).column("s")[1_123_456].as_py() == "row 1123456"


# Tampering -------------------------------------------------------------------------------------
def _flip(offset: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        out = bytearray(data)
        out[offset if offset >= 0 else len(out) + offset] ^= 0x01
        return bytes(out)

    return change


@pytest.mark.parametrize(
    "change",
    [
        _flip(-1),  # the last tag
        _flip(-(SEGMENT_BYTES // 2)),  # inside a segment
        _flip(10),  # the header's segment size
        _flip(14),  # the nonce prefix
        _flip(20),  # the blob id
        lambda d: d[:-1],  # cut inside the last segment
        lambda d: d[: len(d) - (len(d) - 100) % (SEGMENT_BYTES + TAG_BYTES)],  # cut at a boundary
        lambda d: d + d[-(SEGMENT_BYTES + TAG_BYTES) :],  # a segment appended
        lambda d: d[:100],  # only the header left
        lambda d: b"EVIL-BYTES",
    ],
    ids=[
        "tag",
        "body",
        "header",
        "nonce",
        "blob-id",
        "cut",
        "cut-at-boundary",
        "appended",
        "header-only",
        "evil",
    ],
)
def test_tampered_or_truncated_objects_are_an_integrity_error(
    store: LocalArtifactStore, change: Callable[[bytes], bytes]
) -> None:
    data = os.urandom(2 * SEGMENT_BYTES + 4321)
    digest = store.put_bytes(data).digest
    rewrite(blob(store, digest), change)
    expected = "failed its integrity check|header was altered"  # the blob id binds the key
    with pytest.raises(ArtifactIntegrityError, match=expected):
        store.read_bytes(digest)
    with pytest.raises(ArtifactIntegrityError, match=expected):
        store.open(digest)


def test_two_objects_swapped_on_disk_are_an_integrity_error(store: LocalArtifactStore) -> None:
    a, b = store.put_bytes(b"a" * 5000).digest, store.put_bytes(b"b" * 5000).digest
    rewrite(blob(store, a), lambda _: blob(store, b).read_bytes())
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        store.read_bytes(a)


# Keys ------------------------------------------------------------------------------------------
def test_a_wrong_key_is_a_clear_error_never_garbage(
    store: LocalArtifactStore, keys: LocalKeyProvider
) -> None:
    digest = store.put_bytes(b"payload " * 1000).digest
    (key_file,) = keys.directory.glob("kek-*.key")
    key_file.chmod(0o600)
    key_file.write_bytes(os.urandom(32))
    fresh = LocalArtifactStore(store.root, keys=LocalKeyProvider(keys.directory))
    with pytest.raises(ArtifactIntegrityError, match="could not unwrap a data key") as err:
        fresh.read_bytes(digest)
    assert "keys_dir" in (err.value.hint or "")
    with pytest.raises(ArtifactIntegrityError, match="could not unwrap"):
        fresh.open(digest)


def test_a_missing_key_file_is_a_clear_error(
    store: LocalArtifactStore, keys: LocalKeyProvider
) -> None:
    digest = store.put_bytes(b"payload").digest
    key_id = keys.current_key_id()
    (keys.directory / f"kek-{key_id}.key").unlink()
    fresh = LocalArtifactStore(store.root, keys=LocalKeyProvider(keys.directory))
    with pytest.raises(ArtifactIntegrityError, match=f"Key-encryption key '{key_id}' is missing"):
        fresh.read_bytes(digest)
    with pytest.raises(ConfigurationError, match=r"current key-encryption key .* is missing"):
        fresh.put_bytes(b"more")  # never silently starts a new key over lost ones
    no_keys = LocalArtifactStore(store.root)
    with pytest.raises(ArtifactIntegrityError, match="no key provider is configured"):
        no_keys.open(digest)


def test_a_key_being_created_is_never_seen_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two pipeline steps storing the first objects of a new home at the same moment: one thread
    # made the first key while the other listed the keys, found the key file still empty and
    # failed its step ("is not a 256-bit key (its file holds 0 bytes)").
    directory = tmp_path / "keys"
    generating, release = threading.Event(), threading.Event()
    real = crypto.AESGCM.generate_key

    def slow_generate(bit_length: int) -> bytes:
        if threading.current_thread().name == "first-key":
            generating.set()
            assert release.wait(30)
        return real(bit_length)

    monkeypatch.setattr(crypto.AESGCM, "generate_key", staticmethod(slow_generate))
    first = LocalKeyProvider(directory)
    made: list[str] = []
    creator = threading.Thread(target=lambda: made.append(first.create_key()), name="first-key")
    creator.start()
    try:
        assert generating.wait(30)
        assert first.key_ids() == []  # nothing under a key's name until it is whole
        other = LocalKeyProvider(directory)  # another process, in effect
        other_store = LocalArtifactStore(tmp_path / "artifacts", keys=other)
        digest = other_store.put_bytes(b"payload").digest
    finally:
        release.set()
        creator.join(30)
    assert other_store.read_bytes(digest) == b"payload"
    assert len(made) == 1 and made[0] in first.key_ids()


def test_threads_storing_their_first_objects_at_once_share_one_new_key(tmp_path: Path) -> None:
    keys = LocalKeyProvider(tmp_path / "keys")
    store = LocalArtifactStore(tmp_path / "artifacts", keys=keys)
    barrier = threading.Barrier(8, timeout=30)
    digests: list[str] = []
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            barrier.wait()
            digests.append(store.put_bytes(f"object {i}".encode()).digest)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(keys.key_ids()) == 1
    assert sorted(store.read_bytes(d) for d in digests) == sorted(
        f"object {i}".encode() for i in range(8)
    )


def test_rotation_rewraps_without_rewriting_the_data(
    store: LocalArtifactStore, keys: LocalKeyProvider
) -> None:
    payloads = [os.urandom(n) for n in (10, SEGMENT_BYTES + 7, 333)]
    digests = [store.put_bytes(p).digest for p in payloads]
    first = keys.current_key_id()
    before = {d: (blob(store, d).read_bytes(), blob(store, d).stat().st_mtime_ns) for d in digests}

    result = store.rotate_keys()

    assert (result.previous_key_id, result.rewrapped, result.encrypted) == (first, 3, 0)
    assert keys.current_key_id() == result.key_id != first
    for d, payload in zip(digests, payloads, strict=True):
        path = blob(store, d)
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before[d]  # data untouched
        assert (path.parent / f"{d}.key").is_file()
        assert store.read_bytes(d) == payload
    report = store.key_report()
    assert {k.key_id: (k.current, k.objects) for k in report.keys} == {
        first: (False, 0),
        result.key_id: (True, 3),
    }
    store.retire_key(first)
    assert keys.key_ids() == [result.key_id]
    fresh = LocalArtifactStore(store.root, keys=LocalKeyProvider(keys.directory))
    assert [fresh.read_bytes(d) for d in digests] == payloads  # readable without the old key
    assert store.rotate_keys().rewrapped == 3  # and again: the sidecar is replaced atomically


def test_a_key_in_use_or_current_cannot_be_retired(
    store: LocalArtifactStore, keys: LocalKeyProvider
) -> None:
    digest = store.put_bytes(b"kept under the first key").digest
    first = keys.current_key_id()
    second = keys.create_key()  # a new current key, nothing re-wrapped yet
    with pytest.raises(ConflictError, match=f"'{first}' still protects 1 artifact"):
        store.retire_key(first)
    with pytest.raises(ConflictError, match="is the current key"):
        store.retire_key(second)
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        store.retire_key("nope")
    assert store.read_bytes(digest) == b"kept under the first key"
    assert store.rewrap() == 1
    store.retire_key(first)
    assert store.read_bytes(digest) == b"kept under the first key"


def test_a_stale_sidecar_of_a_deleted_object_is_ignored(store: LocalArtifactStore) -> None:
    digest = store.put_bytes(b"comes and goes").digest
    store.rotate_keys()
    path = blob(store, digest)
    path.unlink()
    assert store.put_bytes(b"comes and goes").digest == digest  # a new data key, new blob id
    assert store.read_bytes(digest) == b"comes and goes"


# Plaintext written before --------------------------------------------------------------------
def test_legacy_plaintext_objects_read_and_are_encrypted_on_request(
    tmp_path: Path, keys: LocalKeyProvider
) -> None:
    legacy = LocalArtifactStore(tmp_path / "artifacts")  # a store from before encryption
    data = b"old,plain\n" * 5000
    digest = legacy.put_bytes(data).digest
    assert blob(legacy, digest).read_bytes() == data

    store = LocalArtifactStore(tmp_path / "artifacts", keys=keys)
    assert store.read_bytes(digest) == data
    assert store.key_report().plaintext_objects == 1
    assert store.encrypt_existing() == 1
    assert blob(store, digest).read_bytes()[:8] == MAGIC
    assert store.read_bytes(digest) == data
    assert store.key_report().plaintext_objects == 0
    assert store.encrypt_existing() == 0


def test_a_tampered_legacy_object_is_not_encrypted(tmp_path: Path, keys: LocalKeyProvider) -> None:
    legacy = LocalArtifactStore(tmp_path / "artifacts")
    digest = legacy.put_bytes(b"x" * 100).digest
    rewrite(blob(legacy, digest), _flip(5))
    store = LocalArtifactStore(tmp_path / "artifacts", keys=keys)
    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        store.encrypt_existing()


def test_a_plaintext_object_that_starts_like_a_header_still_reads(
    tmp_path: Path, keys: LocalKeyProvider
) -> None:
    legacy = LocalArtifactStore(tmp_path / "artifacts")
    data = MAGIC + b"not really encrypted"
    digest = legacy.put_bytes(data).digest
    store = LocalArtifactStore(tmp_path / "artifacts", keys=keys)
    assert store.read_bytes(digest) == data
    with store.open(digest) as handle:
        assert handle.read() == data


# CLI ---------------------------------------------------------------------------------------------
def test_keys_cli_lists_rotates_and_retires(
    ctx: Context, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = ctx.artifacts.put_bytes(b"through the cli").digest
    home = str(settings.home)
    old = LocalKeyProvider(settings.keys_root).current_key_id()

    assert main(["--home", home, "keys", "rotate"]) == 0
    out = capsys.readouterr().out
    assert "1 artifact key(s) re-wrapped" in out and f"civicml keys retire {old}" in out

    assert main(["--home", home, "keys", "list"]) == 0
    assert "plaintext: 0" in capsys.readouterr().out

    (legacy := blob(ctx.artifacts, digest)).parent.mkdir(parents=True, exist_ok=True)
    new = LocalKeyProvider(settings.keys_root).create_key()
    assert main(["--home", home, "keys", "retire", new]) == 2
    err = capsys.readouterr().err
    assert "Error:" in err and "is the current key" in err and "Hint:" in err
    assert str(settings.home) not in err

    assert main(["--home", home, "keys", "retire", old]) == 0
    assert main(["--home", home, "keys", "encrypt-existing"]) == 0
    assert "0 plaintext artifact(s) encrypted" in capsys.readouterr().out
    assert ctx.artifacts.read_bytes(digest) == b"through the cli" and legacy.is_file()
