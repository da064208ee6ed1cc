"""Captured requests never sit on disk in plaintext: with encryption at rest on, the capture
spool is sealed as it is written, and a spool left by a crash (its last frame torn) is still
stored with every complete frame."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from civicml.core.errors import ArtifactIntegrityError
from civicml.core.identity import Principal
from civicml.serving import CaptureService, CaptureWriter, EndpointService, ModelHost
from civicml.serving._queries import find_endpoint
from civicml.store import Context
from civicml.store.crypto import SealedAppender, is_sealed, read_sealed
from tests.serving.helpers import MODEL, records, register

MARK = 987654.321  # an income no generated record has: found on disk only in plaintext


def _spool_dir(ctx: Context) -> Path:
    return ctx.settings.home / "serving" / "capture-spool"


def _wait_for_spool(ctx: Context) -> Path:
    deadline = time.monotonic() + 30  # a bound on the test, not a timing assertion
    while time.monotonic() < deadline:
        found = [p for p in _spool_dir(ctx).glob("*.jsonl") if p.stat().st_size > 200]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError("the capture writer wrote no spool file")


def test_the_spool_on_disk_holds_no_plaintext_and_reads_back_whole(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    assert ctx.artifacts.encrypt  # the default
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1, capture_percent=100)
    row = {**records(1)[0], "income": MARK}
    host.invoke(project, "web", [row], caller=Principal(user="rosa"))

    spool = _wait_for_spool(ctx)
    on_disk = spool.read_bytes()
    assert is_sealed(spool)
    assert str(MARK).encode() not in on_disk and b"rosa" not in on_disk

    [stored] = CaptureService(ctx, host.capture).files(project, "web")  # flushes and rotates
    [captured] = [json.loads(line) for line in ctx.artifacts.read_bytes(stored.digest).splitlines()]
    assert json.loads(captured["captureData"]["endpointInput"]["data"])["income"] == MARK
    assert not list(_spool_dir(ctx).glob("*.jsonl"))


def test_a_spool_torn_by_a_crash_is_stored_with_every_complete_frame(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    host = ModelHost(ctx, capture=CaptureWriter(ctx, max_age_s=3600))
    try:
        register(ctx, model_dirs[0])
        EndpointService(ctx, host).deploy(project, "web", MODEL, 1, capture_percent=100)
    finally:
        host.close()
    with ctx.db.read() as conn:
        from civicml.governance import ProjectService

        proj = ProjectService(ctx).get(project, "projects.read")
        endpoint = find_endpoint(conn, proj.id, "web")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    _spool_dir(ctx).mkdir(parents=True, exist_ok=True)
    path = _spool_dir(ctx) / f"{dead}-{proj.id}-{endpoint.id}-2026112310-{'a' * 32}.jsonl"
    lines = [json.dumps({"n": i}).encode() + b"\n" for i in range(3)]
    with open(path, "xb") as raw:
        sealed = SealedAppender(raw, ctx.artifacts.keys)  # type: ignore[arg-type]
        for line in lines:
            sealed.write(line)
    path.write_bytes(path.read_bytes()[:-5])  # the process died in the middle of frame 3

    restarted = ModelHost(ctx, capture=CaptureWriter(ctx, max_age_s=3600))
    try:  # the first captured request starts the writer, which stores what the dead one left
        restarted.invoke(project, "web", records(1))
        stored = CaptureService(ctx, restarted.capture).files(project, "web")
    finally:
        restarted.close()
    contents = {ctx.artifacts.read_bytes(f.digest) for f in stored}
    assert b"".join(lines[:2]) in contents and len(contents) == 2
    assert not path.exists()


def test_an_altered_frame_does_not_authenticate(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    with open(path, "xb") as raw:
        sealed = SealedAppender(raw, ctx.artifacts.keys)  # type: ignore[arg-type]
        sealed.write(b'{"income": 1}\n')
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="does not authenticate"):
        read_sealed(path, ctx.artifacts.keys)  # type: ignore[arg-type]
