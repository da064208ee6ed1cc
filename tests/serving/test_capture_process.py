"""The capture spool process: it writes the lines the writer's thread would write, byte for byte,
sealed as they are written; it is handed batches from the server's event loop without waiting;
and a process that is slow to start, hangs, dies or cannot be started tears nothing, stores
what it wrote, and leaves the writing to the writer's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import importlib.util
import json
import logging
import marshal
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from civicml.core.errors import ArtifactIntegrityError
from civicml.governance import ProjectService
from civicml.sdk.embedded import open_context
from civicml.server.app import create_app
from civicml.serving import CaptureService, EndpointService, ModelHost
from civicml.serving import _capture_spool as spool_module
from civicml.serving._capture_format import (
    CaptureEvent,
    CaptureLines,
    capture_lines,
    event_fields,
    event_from_fields,
)
from civicml.serving.capture import CaptureWriter
from civicml.store import Context
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.crypto import read_sealed
from civicml.store.spool_seal import SPOOL_MAGIC
from tests.server.helpers import isolated_settings, serve
from tests.serving.helpers import CAPTURE_EVENT, MODEL, PROJECT, records, register

BASE: dict[str, Any] = CAPTURE_EVENT
TEXT = b'{"age": 41, "income":1520.50,"region":"n\\u00f6rth\\n", "member":true}'
NESTED = {
    "records": [{"x": {"y": 1}}, {"x": 2}],
    "text": b'{"x":{"y":1}},{"x":2}',  # a record holding an object: not cut into records
    "predictions": [0, 1],
    "probabilities": None,
    "inference_ids": ["n1", "n2"],
}
MARK = "zq-unmistakable-marker"  # a value found in a spool file only if it is plaintext


def _events() -> list[CaptureEvent]:
    east = timezone(timedelta(hours=5, minutes=30))
    return [
        CaptureEvent(**BASE),
        CaptureEvent(**{**BASE, "probabilities": None, "predictions": [1.5], "latency_ms": 2.0}),
        CaptureEvent(**{**BASE, "error": "non_finite_output", "latency_ms": None}),
        CaptureEvent(**{**BASE, "caller": None, "variant": None, "shadow": True}),
        CaptureEvent(**{**BASE, "plain": True, "text": TEXT}),  # captured as sent
        CaptureEvent(**{**BASE, "time": datetime(2026, 11, 23, 15, 45, 2, 999999, tzinfo=east)}),
        CaptureEvent(
            **{
                **BASE,
                "records": [{"x": 1}, {"x": 2}],
                "predictions": [0, 1],
                "probabilities": [[0.9, 0.1], [0.2, 0.8]],
                "inference_ids": ["a", "b"],
            }
        ),
        CaptureEvent(**{**BASE, "request_id": "last", "inference_ids": ["i9"]}),
    ]


def _odd() -> list[CaptureEvent]:
    """Events the process does not take (the writer's thread writes them) or takes with their
    records rather than their text."""
    return [
        # a NumPy scalar: marshal does not write it
        CaptureEvent(**{**BASE, "predictions": [np.float64(1.5)], "probabilities": None}),
        CaptureEvent(**{**BASE, **NESTED}),
    ]


def test_an_event_goes_to_the_process_as_fields_and_gives_the_same_lines() -> None:
    for event in [*_events(), _odd()[1]]:
        fields = event_fields(event)
        assert fields is not None
        again = event_from_fields(marshal.loads(marshal.dumps(fields)))  # noqa: S302
        assert capture_lines(again) == capture_lines(event)
    # records sent as text go as their count: the lines come from the text ...
    sent = event_fields(_events()[4])
    assert sent is not None and sent[8] == 1 and sent[19] == TEXT
    # ... unless the text is not cut into its records: then the records go themselves
    nested = event_fields(_odd()[1])
    assert nested is not None and nested[8] == NESTED["records"] and nested[19] is None


def test_events_the_process_cannot_take_stay_with_the_writer() -> None:
    import pandas as pd

    frame = pd.DataFrame([{"a": 1}])
    assert event_fields(CaptureEvent(**{**BASE, "records": frame, "inference_ids": ["x"]})) is None
    naive = datetime(2026, 11, 23, 10, 15, 2)
    assert event_fields(CaptureEvent(**{**BASE, "time": naive})) is None


@pytest.mark.parametrize(
    ("change", "goes"),
    [
        ({}, True),
        ({"records": [{"x": {"y": [1, 2.5, None, "z"]}}]}, True),
        ({"probabilities": [(0.1, 0.9)]}, False),  # not a list of lists: left to the thread
        ({"predictions": [np.float64(1.5)], "probabilities": None}, False),
        ({"probabilities": [[np.float32(0.5), 0.5]]}, False),
        ({"probabilities": np.array([[0.5, 0.5]])}, False),
        ({"classes": [np.int64(0), 1]}, False),
        ({"latency_ms": np.float64(1.0)}, False),
        ({"records": [{"x": np.int64(1)}]}, False),
        ({"records": [{"x": {"y": [np.bool_(True)]}}]}, False),
    ],
)
def test_values_marshal_would_change_stay_with_the_thread(
    change: dict[str, Any], goes: bool
) -> None:
    # marshal writes a NumPy scalar or array as its raw bytes: the process could not format it
    event = CaptureEvent(**{**BASE, **change})
    payload, count, left = spool_module._batch([event])
    assert (count, left) == ((1, []) if goes else (0, [event]))
    assert (payload is not None) == goes


# Helpers ----------------------------------------------------------------------------------------
def _started(writer: CaptureWriter, timeout: float = 60.0) -> spool_module._Child:
    """Start the writer's spool process and wait until it is ready."""
    process = writer._process
    assert process is not None
    deadline = time.monotonic() + timeout  # a bound on the test, not a timing assertion
    while not process.ready():
        assert time.monotonic() < deadline, "the capture spool process did not start"
        process.hand_over([])  # starts it; hands nothing over
        time.sleep(0.05)
    assert process._child is not None
    return process._child


def _stored_lines(ctx: Context, endpoint_id: str = "e") -> list[bytes]:
    with ctx.db.read() as conn:
        infos = ArtifactIndex.list(conn, "endpoint", endpoint_id, "capture")
    out: list[bytes] = []
    for info in infos:
        out += ctx.artifacts.read_bytes(info.digest).splitlines(keepends=True)
    return out


def _lines(events: list[CaptureEvent]) -> list[bytes]:
    return sorted(b"".join(map(capture_lines, events)).splitlines(keepends=True))


def _wait(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout  # a bound on the test, not a timing assertion
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _spool_files(ctx: Context, pid: int) -> list[Path]:
    spool = ctx.settings.home / "serving" / "capture-spool"
    return sorted(spool.glob(f"{pid}-*.jsonl"))


# The process writes what the thread writes --------------------------------------------------------
def test_the_process_writes_what_the_thread_writes_byte_for_byte(ctx: Context) -> None:
    later = CaptureEvent(**{**BASE, "time": BASE["time"] + timedelta(hours=1)})
    events = [*_events(), later, *_odd()]
    shadow = CaptureLines("p", "e", "2026112310", capture_lines(_events()[3]))
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    try:
        _started(writer)
        for event in events:
            writer.submit(event)
        writer.submit(shadow)
        assert writer.flush()
        process = writer._process
        assert process is not None
        # every event but the NumPy one went to the process (the nested one with its records)
        assert process.handed == len(events) and process.failed == 0
    finally:
        writer.close()
    want = _lines(events) + shadow.data.splitlines(keepends=True)
    assert sorted(_stored_lines(ctx)) == sorted(want)
    # one file per hour of records: the process's and the thread's (the NumPy event)
    with ctx.db.read() as conn:
        paths = [i.path for i in ArtifactIndex.list(conn, "endpoint", "e", "capture")]
    assert {p[:22] for p in paths} == {"capture/2026/11/23/10/", "capture/2026/11/23/11/"}


def test_spool_files_of_the_process_are_sealed_as_they_are_written(ctx: Context) -> None:
    assert ctx.artifacts.encrypt  # on by default
    event = CaptureEvent(**{**BASE, "records": [{"note": MARK}]})
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    try:
        child = _started(writer)
        writer.submit(event)
        _wait(
            lambda: any(p.stat().st_size > 300 for p in _spool_files(ctx, child.process.pid)),
            "the spool process wrote nothing",
        )
        for path in _spool_files(ctx, child.process.pid):
            data = path.read_bytes()
            assert data.startswith(SPOOL_MAGIC) and MARK.encode() not in data
        assert writer.flush()
    finally:
        writer.close()
    assert [json.loads(x)["captureData"]["endpointInput"]["data"] for x in _stored_lines(ctx)] == [
        json.dumps({"note": MARK}, separators=(",", ":"))
    ]


def test_a_sealed_file_waiting_for_its_key_puts_later_batches_aside(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one key ahead: the second file of a batch waits for the key the server sends on its
    # "opened", while the next batches arrive (put aside, then written)
    monkeypatch.setattr(spool_module, "KEYS_AHEAD", 1)
    events = [CaptureEvent(**{**BASE, "endpoint_id": f"e{i % 6}"}) for i in range(60)]
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    process = writer._process
    assert process is not None
    try:
        _started(writer)
        for start in range(0, 60, 12):
            assert process.hand_over(events[start : start + 12]) == []
        assert writer.flush(timeout=60)
        assert process.failed == 0 and process.failures == 0
    finally:
        writer.close()
    for i in range(6):
        mine = [e for e in events if e.endpoint_id == f"e{i}"]
        assert sorted(_stored_lines(ctx, f"e{i}")) == _lines(mine)


def test_the_process_rotates_its_files_by_size(ctx: Context) -> None:
    events = [CaptureEvent(**{**BASE, "request_id": f"r{i}"}) for i in range(40)]
    size = len(capture_lines(events[0]))
    writer = CaptureWriter(ctx, max_bytes=size * 10, max_age_s=3600, format_process=True)
    try:
        _started(writer)
        for event in events:
            writer.submit(event)
        assert writer.flush()
    finally:
        writer.close()
    with ctx.db.read() as conn:
        infos = ArtifactIndex.list(conn, "endpoint", "e", "capture")
    assert len(infos) >= 4  # 40 events, 10 to a file (and a batch may end one sooner)
    assert sorted(_stored_lines(ctx)) == _lines(events)


# Failures ---------------------------------------------------------------------------------------
def test_a_killed_process_tears_nothing_and_what_it_wrote_is_stored(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    first = [CaptureEvent(**{**BASE, "request_id": f"a{i}"}) for i in range(20)]
    second = [CaptureEvent(**{**BASE, "request_id": f"b{i}"}) for i in range(20)]
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    process = writer._process
    assert process is not None
    try:
        child = _started(writer)
        assert process.hand_over(list(first)) == []  # taken
        files = lambda: _spool_files(ctx, child.process.pid)  # noqa: E731
        keys = ctx.artifacts.keys
        assert keys is not None  # encryption at rest is on by default

        def written() -> int:
            try:
                return read_sealed(files()[0], keys).count(b"\n") if files() else 0
            except ArtifactIntegrityError:  # caught before its header was written
                return 0

        _wait(lambda: written() == len(first), "the batch was not written")
        with caplog.at_level(logging.WARNING, logger="civicml.serving.capture"):
            child.process.kill()
            _wait(child.ended.is_set, "the reader did not see the process end")
        assert "capture spool process ended" in caplog.text
        assert files() == []  # stored by the writer's recovery
        assert sorted(_stored_lines(ctx)) == _lines(first)
        assert process.failures == 1
        for event in second:  # a new process (or the thread meanwhile) writes these
            writer.submit(event)
        assert writer.flush()
    finally:
        writer.close()
    assert sorted(_stored_lines(ctx)) == _lines(first + second)  # each once, all whole


def test_a_stop_signal_to_the_process_group_leaves_the_files_to_the_server(
    ctx: Context,
) -> None:
    events = [CaptureEvent(**{**BASE, "request_id": f"t{i}"}) for i in range(10)]
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    try:
        child = _started(writer)
        os.kill(child.process.pid, signal.SIGTERM)  # a service manager stopping the group
        os.kill(child.process.pid, signal.SIGINT)  # Ctrl-C in a terminal
        for event in events:
            writer.submit(event)
        assert writer.flush()
        assert child.process.poll() is None  # still there: the server closes it
    finally:
        writer.close()
    assert child.process.returncode == 0  # ended by the end of its input
    assert sorted(_stored_lines(ctx)) == _lines(events)


def test_a_hung_process_is_replaced_and_its_batch_left_to_the_thread(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(spool_module, "HAND_OVER_TIMEOUT_S", 0.5)
    big = {"note": "x" * 20_000}
    events = [CaptureEvent(**{**BASE, "request_id": f"h{i}", "records": [big]}) for i in range(40)]
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    process = writer._process
    assert process is not None
    try:
        child = _started(writer)
        os.kill(child.process.pid, signal.SIGSTOP)  # takes nothing from its pipe
        left: list[Any] = []
        with caplog.at_level(logging.WARNING, logger="civicml.serving.capture"):
            for event in events:  # the pipe fills; the batch that does not fit comes back
                left += process.hand_over([event])
                if left:
                    break
        assert left, "the pipe never filled"
        assert "failed (the process took no batch within its time)" in caplog.text
        _wait(child.ended.is_set, "the hung process was not killed")
        assert process._child is None and process.failures == 1
        writer._append_all(left)  # what the thread does with it
        writer._rotate_all()
    finally:
        writer.close()
    # the events the stopped process had taken are lost with it (documented); the one it did
    # not take is written by the thread, whole
    stored = _stored_lines(ctx)
    assert [json.loads(x)["eventMetadata"]["requestId"] for x in stored] == [left[0].request_id]


def test_a_process_that_cannot_be_started_leaves_the_writing_to_the_thread(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(self: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(spool_module.SpoolProcess, "_spawn", refused)
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    try:
        with caplog.at_level(logging.WARNING, logger="civicml.serving.capture"):
            for _ in range(spool_module.MAX_FAILURES + 1):
                for event in _events():
                    writer.submit(event)
                assert writer.flush()
    finally:
        writer.close()
    assert writer._process is not None and writer._process.disabled
    assert "could not be started" in caplog.text and "writes every event" in caplog.text
    assert sorted(_stored_lines(ctx)) == _lines(_events() * (spool_module.MAX_FAILURES + 1))


def _worker_module() -> Any:
    path = Path(spool_module.__file__).with_name("_capture_worker.py")
    spec = importlib.util.spec_from_file_location("civicml_capture_worker_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_write_is_taken_back_and_its_file_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _worker_module()
    said: list[str] = []
    spools = worker._Spools(tmp_path, 1 << 20, 3600.0, None, said.append)
    inbox = worker._Inbox(-1)
    spools.add(inbox, "p", "e", "2026112310", b'{"a":1}\n', 1)
    spools.write_out()
    (path,) = tmp_path.glob("*.jsonl")
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:5])  # part of it, then the disk is full
        raise OSError(28, "No space left on device")

    spools.add(inbox, "p", "e", "2026112310", b'{"b":2}\n{"c":3}\n', 2)
    monkeypatch.setattr(worker.os, "write", full_disk)
    spools.write_out()
    monkeypatch.undo()
    assert path.read_bytes() == b'{"a":1}\n'  # whole records only
    assert spools.failed == 2 and said[-1] == f"closed {path.name}"


# The event loop hands batches over ---------------------------------------------------------------
def test_the_event_loop_hands_batches_over_even_when_the_pipe_takes_part(
    ctx: Context,
) -> None:
    events = [CaptureEvent(**{**BASE, "request_id": f"l{i}"}) for i in range(200)]
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    process = writer._process
    assert process is not None
    continued: list[int] = []

    async def serve_requests() -> None:
        writer.attach_loop()
        child = _started(writer)
        fcntl.fcntl(child.stdin, 1031, 4096)  # F_SETPIPE_SZ: one page, so a batch goes in parts
        real = child._continue

        def counted() -> None:
            continued.append(1)
            real()

        child._continue = counted  # type: ignore[method-assign]
        for event in events[:100]:
            writer.submit(event)  # on the loop: kept, handed over a moment later
        assert len(writer._pending) == 100
        await asyncio.sleep(0.1)
        assert writer._pending == []
        for event in events[100:]:
            writer.submit(event)
        # a flush from another thread takes what is pending on the loop too
        assert await asyncio.to_thread(writer.flush)

    try:
        asyncio.run(serve_requests())
    finally:
        writer.close()
    assert continued, "the pipe took every batch at once: nothing tested"
    assert process.handed == len(events)
    assert sorted(_stored_lines(ctx)) == _lines(events)


# Through the server ------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path, model_dirs: tuple[Path, Path]) -> Iterator[tuple[str, Any]]:
    settings = isolated_settings(tmp_path)  # serving_capture_format "auto": process
    ctx = open_context(settings)
    host = ModelHost(ctx)
    try:
        ProjectService(ctx).create(PROJECT)
        register(ctx, model_dirs[0])
        EndpointService(ctx, host).deploy(PROJECT, "web", MODEL, 1, capture_percent=100)
    finally:
        host.close()
        ctx.db.close()
    app = create_app(settings)
    with serve(app) as base:
        yield base, app
    app.state.serving.close()


def test_a_server_has_its_captures_written_by_the_process(served: tuple[str, Any]) -> None:
    base, app = served
    writer = app.state.serving.capture
    assert writer._process is not None and writer._loop is not None
    url = f"{base}/endpoints/web/invocations?project={PROJECT}"
    rows = records(200, seed=4)

    def burst(client: httpx.Client, start: int) -> list[str]:
        def one(i: int) -> str:
            answer = client.post(url, json={"records": [rows[i % len(rows)]]})
            assert answer.status_code == 200, answer.text
            return str(answer.json()["inference_ids"][0])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(start, start + 64)))

    sent: list[str] = []
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 90  # a bound on the test, not a timing assertion
        while writer._process.handed == 0 and time.monotonic() < deadline:
            sent += burst(client, len(sent))
        sent += burst(client, len(sent))  # the process up: from the loop
    assert writer._process.handed > 0, "no batch was handed to the process"
    assert writer.flush()
    ctx = app.state.civicml.ctx
    captured: list[dict[str, Any]] = []
    for f in CaptureService(ctx, writer).files(PROJECT, "web"):
        captured += [json.loads(x) for x in ctx.artifacts.read_bytes(f.digest).splitlines()]
    ids = [c["eventMetadata"]["inferenceId"] for c in captured]
    assert sorted(ids) == sorted(sent)  # every request captured once, whoever wrote it
    by_id = {c["eventMetadata"]["inferenceId"]: c for c in captured}
    first = by_id[sent[0]]["captureData"]["endpointInput"]["data"]
    assert json.loads(first) == rows[0]


def test_a_server_set_to_thread_writes_in_its_writer_thread(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, serving_capture_format="thread")
    app = create_app(settings)
    with serve(app):  # started: the app's lifespan made its model host and capture writer
        assert app.state.serving.capture._process is None
    app.state.serving.close()
