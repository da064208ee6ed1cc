"""Faults under a live server: a full or read-only artifact store answers 507, a database lock
held past the busy timeout 503, both with Retry-After; nothing stored before is lost, nothing is
half-written, and the server recovers when the condition clears. Bugs are logged without SQL."""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request
from sqlalchemy import text

from civicml.core import Settings
from civicml.server import create_app
from civicml.store import artifacts as artifacts_module
from tests.server.helpers import (
    API,
    OCTET,
    assert_error,
    audit_count,
    create_run,
    files_under,
    isolated_settings,
    serve,
    upload,
)

STORE_BYTES = 256 << 10  # the tiny file system's size
BIG = 600 << 10  # more than fits on it


@dataclass
class Store:
    """A live server whose artifact store can be made full or read-only."""

    api: httpx.Client
    settings: Settings
    how: str  # "tmpfs": a real file system; "patched": the OS calls fail as they would
    mount: Path
    monkeypatch: pytest.MonkeyPatch

    def make_read_only(self) -> None:
        if self.how == "tmpfs":
            _mount("-o", "remount,ro", "tmpfs", str(self.mount))
        else:
            self.monkeypatch.setattr(
                artifacts_module, "open", _failing_open(errno.EROFS, True), raising=False
            )

    def make_writable(self) -> None:
        if self.how == "tmpfs":
            _mount("-o", "remount,rw", "tmpfs", str(self.mount))
        else:
            self.monkeypatch.delattr(artifacts_module, "open")

    def fill_up(self) -> None:
        """From now on a big write runs out of space (the tmpfs is full past ``STORE_BYTES``)."""
        if self.how == "patched":
            self.monkeypatch.setattr(
                artifacts_module, "open", _failing_open(errno.ENOSPC, False), raising=False
            )

    def objects(self) -> set[str]:
        return files_under(self.settings.artifacts_root / "objects")

    def temp_files(self) -> list[Path]:
        return list((self.settings.artifacts_root / "tmp").iterdir())


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


class _FullFile:
    """A file whose writes fail with ENOSPC once more than STORE_BYTES were written."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._written = 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if self._written > STORE_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self._handle.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def _failing_open(code: int, at_open: bool) -> Any:
    """``open`` for the artifact store's temp files that fails as the OS would with ``code``."""

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "x" not in mode:
            return builtins.open(file, mode, *args, **kwargs)
        if at_open:
            raise OSError(code, "Read-only file system", str(file))
        return _FullFile(builtins.open(file, mode, *args, **kwargs))

    return fake_open


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("mount") is None:
        return False
    try:
        _mount("-t", "tmpfs", "-o", f"size={STORE_BYTES}", "tmpfs", str(where))
    except (subprocess.CalledProcessError, OSError):
        return False
    return True


@pytest.fixture(params=["tmpfs", "patched"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    how = request.param
    mount = tmp_path / "store"
    mount.mkdir()
    if how == "tmpfs" and not _can_mount_tmpfs(mount):
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN; the patched case runs")
    try:
        settings = isolated_settings(tmp_path, artifacts=str(mount))
        with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as api:
            yield Store(api, settings, how, mount, monkeypatch)
    finally:
        monkeypatch.undo()
        if how == "tmpfs":
            with contextlib.suppress(subprocess.CalledProcessError):
                _mount("-o", "remount,rw", "tmpfs", str(mount))
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _assert_storage_error(response: httpx.Response, message: str, settings: Settings) -> None:
    body = assert_error(response, 507, "InsufficientStorageError", message)
    assert "nothing was stored" in body["message"]
    assert body["hint"] and "retry" in body["hint"]
    assert int(response.headers["retry-after"]) >= 1
    assert str(settings.home) not in response.text
    assert str(settings.artifacts_root) not in response.text


def test_a_full_artifact_store_answers_507_keeps_what_was_stored_and_recovers(
    store: Store,
) -> None:
    api = store.api
    run = create_run(api, "default")
    assert upload(api, run["id"], "model/small.bin", b"kept").status_code == 201
    objects = store.objects()
    events = audit_count(api)
    store.fill_up()

    response = upload(api, run["id"], "model/big.bin", b"\x07" * BIG)

    _assert_storage_error(response, "The artifact store is out of space", store.settings)
    listed = api.get(f"{API}/runs/{run['id']}/artifacts").json()
    assert [a["path"] for a in listed] == ["model/small.bin"]
    assert api.get(f"{API}/runs/{run['id']}/artifacts/model/small.bin").content == b"kept"
    assert store.objects() == objects  # no half-written object
    assert store.temp_files() == []  # the partial temp file is gone: the space is free again
    assert audit_count(api) == events
    # The condition cleared (the failed write freed what it took): the next write succeeds.
    retried = upload(api, run["id"], "model/next.bin", b"\x08" * (STORE_BYTES // 4))
    assert retried.status_code == 201, retried.text


def test_a_full_store_refuses_a_blob_upload_with_507(store: Store) -> None:
    assert store.api.post(f"{API}/projects", json={"name": "blobs"}).status_code == 201
    store.fill_up()

    response = store.api.post(f"{API}/projects/blobs/blobs", content=b"\x09" * BIG, headers=OCTET)

    _assert_storage_error(response, "The artifact store is out of space", store.settings)
    assert store.temp_files() == []


def test_a_read_only_artifact_store_answers_507_serves_reads_and_recovers(store: Store) -> None:
    api = store.api
    run = create_run(api, "default")
    assert upload(api, run["id"], "model/small.bin", b"kept").status_code == 201
    objects = store.objects()
    store.make_read_only()

    response = upload(api, run["id"], "model/other.bin", b"new bytes")

    _assert_storage_error(response, "The artifact store is read-only", store.settings)
    assert api.get(f"{API}/runs/{run['id']}/artifacts/model/small.bin").content == b"kept"
    assert [a["path"] for a in api.get(f"{API}/runs/{run['id']}/artifacts").json()] == [
        "model/small.bin"
    ]
    store.make_writable()
    assert store.objects() == objects
    retried = upload(api, run["id"], "model/other.bin", b"new bytes")
    assert retried.status_code == 201, retried.text


# The database ---------------------------------------------------------------------------------
@pytest.fixture
def locked_db(tmp_path: Path) -> Iterator[tuple[httpx.Client, Settings]]:
    settings = isolated_settings(tmp_path, db_busy_timeout_s=0.3)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as api:
        yield api, settings


@contextlib.contextmanager
def _exclusive_lock(settings: Settings) -> Iterator[None]:
    """Another process's connection holding the SQLite write lock."""
    conn = sqlite3.connect(settings.home / "civicml.db", isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_a_database_lock_past_the_busy_timeout_answers_503_then_succeeds(
    locked_db: tuple[httpx.Client, Settings],
) -> None:
    api, settings = locked_db
    events = audit_count(api)

    with _exclusive_lock(settings):
        response = api.post(f"{API}/projects", json={"name": "during-lock"})
        listed = api.get(f"{API}/projects")  # reads go on (WAL)

    body = assert_error(response, 503, "ServiceUnavailableError", "The metadata database is locked")
    assert "Nothing was changed" in body["message"]
    assert body["hint"] and "Retry in 2 seconds" in body["hint"]
    assert response.headers["retry-after"] == "2"
    assert "SELECT" not in response.text and "INSERT" not in response.text
    assert listed.status_code == 200
    assert all(p["name"] != "during-lock" for p in listed.json())
    assert audit_count(api) == events
    retried = api.post(f"{API}/projects", json={"name": "during-lock"})
    assert retried.status_code == 201, retried.text
    assert audit_count(api) == events + 1


def test_a_database_bug_is_logged_without_its_statement_or_values(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/api/v1/boom-sql")
    def boom(request: Request) -> None:
        with request.app.state.civicml.ctx.db.read() as conn:
            conn.execute(
                text("SELECT name FROM no_such_table WHERE name = :v"), {"v": "secret-value-42"}
            )

    with (
        caplog.at_level(logging.ERROR),
        serve(app) as url,
        httpx.Client(base_url=url) as client,
    ):
        response = client.get("/api/v1/boom-sql")

    assert_error(response, 500, "InternalError")
    assert "OperationalError" in caplog.text
    assert "no such table: no_such_table" in caplog.text
    assert "boom" in caplog.text  # the stack is logged
    for leak in ("SELECT", "secret-value-42", "[parameters"):
        assert leak not in caplog.text, caplog.text
        assert leak not in response.text
