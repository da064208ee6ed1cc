"""The capture formatter process: the same lines as the writer's thread, byte for byte, and
nothing lost when it is slow to start, dies or answers something wrong."""

from __future__ import annotations

import concurrent.futures
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

from civicml.governance import ProjectService
from civicml.sdk.embedded import open_context
from civicml.server.app import create_app
from civicml.serving import CaptureService, EndpointService, ModelHost
from civicml.serving import capture as capture_module
from civicml.serving._capture_format import (
    CaptureEvent,
    CaptureLines,
    capture_lines,
    event_fields,
    event_from_fields,
)
from civicml.serving.capture import CaptureWriter, _Formatter
from civicml.store import Context
from tests.server.helpers import isolated_settings, serve
from tests.serving.helpers import CAPTURE_EVENT, MODEL, PROJECT, records, register

BASE: dict[str, Any] = CAPTURE_EVENT
TEXT = b'{"age": 41, "income":1520.50,"region":"n\\u00f6rth\\n", "member":true}'


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


def test_an_event_goes_to_the_process_as_fields_and_gives_the_same_lines() -> None:
    for event in _events():
        fields = event_fields(event)
        assert fields is not None
        again = event_from_fields(marshal.loads(marshal.dumps(fields)))  # noqa: S302
        assert capture_lines(again) == capture_lines(event)
    # records sent as text go as their count: the lines come from the text
    sent = event_fields(_events()[4])
    assert sent is not None and sent[8] == 1 and sent[19] == TEXT


def test_events_the_process_cannot_take_stay_with_the_writer() -> None:
    import pandas as pd

    frame = pd.DataFrame([{"a": 1}])
    assert event_fields(CaptureEvent(**{**BASE, "records": frame, "inference_ids": ["x"]})) is None
    naive = datetime(2026, 11, 23, 10, 15, 2)
    assert event_fields(CaptureEvent(**{**BASE, "time": naive})) is None


def _ready(formatter: _Formatter, events: list[Any], timeout: float = 60.0) -> list[Any]:
    """Offer ``events`` until the process (starting) formats them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = formatter.format(events)
        if lines is not None:
            return lines
        time.sleep(0.05)
    raise AssertionError("the formatter process did not start")


def test_the_process_formats_a_batch_byte_for_byte() -> None:
    events = _events()
    odd = [
        # a NumPy scalar: marshal does not write it, so the writer formats this one itself
        CaptureEvent(**{**BASE, "predictions": [np.float64(1.5)], "probabilities": None}),
        # a text the flat-record pattern does not cut (a nested object): formatted by the writer
        CaptureEvent(
            **{
                **BASE,
                "records": [{"x": {"y": 1}}, {"x": 2}],
                "text": b'{"x":{"y":1}},{"x":2}',
                "predictions": [0, 1],
                "probabilities": None,
                "inference_ids": ["a", "b"],
            }
        ),
    ]
    formatter = _Formatter()
    try:
        items = _ready(formatter, events + odd)
        # one run of lines for the events of one endpoint and hour, the others left as they are
        joined = b"".join(capture_lines(e) for e in events)
        assert items == [CaptureLines("p", "e", "2026112310", joined), *odd]
        assert formatter.formatted == len(events) and formatter.failures == 0
        later = CaptureEvent(**{**BASE, "time": BASE["time"] + timedelta(hours=1)})
        other = CaptureEvent(**{**BASE, "endpoint_id": "f"})
        items = formatter.format([events[0], later, other, events[1], *events[2:6]])
        assert items is not None
        assert [(x.endpoint_id, x.hour) for x in items] == [
            ("e", "2026112310"),
            ("e", "2026112311"),
            ("f", "2026112310"),
            ("e", "2026112310"),
        ]
        assert items[3].data == b"".join(capture_lines(e) for e in events[1:6])
    finally:
        formatter.close()


def _spool_bytes(writer: CaptureWriter) -> bytes:
    """What the writer wrote to its spool files so far (decrypted)."""
    from civicml.store.crypto import is_sealed, read_sealed

    out = b""
    for spool in writer._spools.values():
        spool.handle.flush()
        sealed = is_sealed(spool.path)
        keys = writer._ctx.artifacts.keys
        out += read_sealed(spool.path, keys) if sealed and keys else spool.path.read_bytes()
    return out


def _close_spools(writer: CaptureWriter) -> None:
    for spool in writer._spools.values():  # the writer's thread never ran: nothing rotates
        spool.handle.close()
    writer.close()


def test_a_writer_with_the_process_writes_what_the_writer_alone_writes(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events() * 2
    alone = CaptureWriter(ctx, max_age_s=3600, format_process=False)
    helped = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    assert helped._formatter is not None
    try:
        _ready(helped._formatter, events)  # started
        alone._append_all(events)
        formatted_here: list[Any] = []
        real = capture_module.capture_lines
        monkeypatch.setattr(
            capture_module, "capture_lines", lambda e: formatted_here.append(e) or real(e)
        )
        helped._append_all(events)
        assert _spool_bytes(helped) == _spool_bytes(alone) == b"".join(map(real, events))
        assert formatted_here == []  # every event's lines came from the process
    finally:
        _close_spools(alone)
        _close_spools(helped)


def test_a_small_batch_and_a_process_not_yet_started_are_formatted_by_the_writer(
    ctx: Context,
) -> None:
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    assert writer._formatter is not None
    try:
        writer._append_all(_events()[: capture_module.FORMAT_MIN_EVENTS - 1])  # too few
        assert writer._formatter._worker is None
        writer._append_all(_events())  # starts it, and does not wait for it
        assert writer._formatter._worker is not None and writer._formatter.formatted == 0
        few = _events()[: capture_module.FORMAT_MIN_EVENTS - 1]
        assert _spool_bytes(writer) == b"".join(map(capture_lines, few + _events()))
    finally:
        _close_spools(writer)


def test_a_process_that_dies_or_answers_wrong_loses_nothing(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    events = _events()
    want = b"".join(capture_lines(e) for e in events)
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    formatter = writer._formatter
    assert formatter is not None
    try:
        _ready(formatter, events)
        formatter._worker.process.kill()  # dies: the batch is formatted by the writer
        formatter._worker.process.wait()
        with caplog.at_level(logging.WARNING, logger="civicml.serving.capture"):
            writer._append_all(events)
        assert _spool_bytes(writer) == want
        assert formatter.failures == 1 and "failed (it ended)" in caplog.text
        _ready(formatter, events)  # started again
        assert formatter.failures == 0
        os.kill(formatter._worker.process.pid, signal.SIGSTOP)  # hangs: killed, not waited for
        monkeypatch.setattr(capture_module, "FORMAT_TIMEOUT_S", 0.3)
        before = len(_spool_bytes(writer))
        with caplog.at_level(logging.WARNING, logger="civicml.serving.capture"):
            writer._append_all(events)
        assert _spool_bytes(writer)[before:] == want
        assert formatter.failures == 1 and "no answer within 0.3 s" in caplog.text
        monkeypatch.setattr(capture_module, "FORMAT_TIMEOUT_S", 10.0)
        _ready(formatter, events)

        def wrong(*_: Any) -> Any:
            raise capture_module._FormatterError("a malformed answer (sizes)")

        monkeypatch.setattr(capture_module, "_split_answer", wrong)
        for _ in range(capture_module.FORMAT_MAX_FAILURES):
            _ready_or_fail(formatter, events)
        assert formatter.disabled and "formats every event itself" in caplog.text
        before = len(_spool_bytes(writer))
        writer._append_all(events)
        assert _spool_bytes(writer)[before:] == want  # still written, by the writer
        assert formatter._worker is None  # and no process left
    finally:
        _close_spools(writer)


def _ready_or_fail(formatter: _Formatter, events: list[Any], timeout: float = 60.0) -> None:
    """Offer ``events`` until the process (re)started and failed on them once more."""
    failures = formatter.failures
    deadline = time.monotonic() + timeout
    while formatter.failures == failures and time.monotonic() < deadline:
        assert formatter.format(events) is None
        time.sleep(0.05)
    assert formatter.failures == failures + 1


def test_the_answer_is_checked_line_by_line() -> None:
    from civicml.serving.capture import _FormatterError, _split_answer

    events = _events()[:2]
    lines = [capture_lines(e) for e in events]
    fields = [event_fields(e) for e in events]

    def frame(sizes: list[int], data: bytes) -> bytes:
        return b"".join(n.to_bytes(4, "big") for n in [len(sizes), *sizes]) + data

    good = frame([len(x) for x in lines], b"".join(lines))
    assert _split_answer(good, events, fields) == [
        CaptureLines("p", "e", "2026112310", b"".join(lines))
    ]
    for bad in (
        frame([len(lines[0])], lines[0]),  # one size for two events
        frame([len(x) for x in lines], b"".join(lines) + b"more"),  # bytes left over
        frame([len(lines[0]) - 1, len(lines[1])], lines[0][:-1] + lines[1]),  # a line short
        b"\x00\x00",
    ):
        with pytest.raises(_FormatterError):
            _split_answer(bad, events, fields)


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


def test_a_busy_server_has_its_captures_formatted_by_the_process(
    served: tuple[str, Any],
) -> None:
    base, app = served
    writer = app.state.serving.capture
    assert writer._formatter is not None
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
        deadline = time.monotonic() + 90
        while writer._formatter.formatted == 0 and time.monotonic() < deadline:
            sent += burst(client, len(sent))
    assert writer._formatter.formatted > 0, "no batch was formatted by the process"
    assert writer.flush()
    ctx = app.state.civicml.ctx
    captured: list[dict[str, Any]] = []
    for f in CaptureService(ctx, writer).files(PROJECT, "web"):
        captured += [json.loads(x) for x in ctx.artifacts.read_bytes(f.digest).splitlines()]
    ids = [c["eventMetadata"]["inferenceId"] for c in captured]
    assert sorted(ids) == sorted(sent)  # every request captured once, whoever formatted it
    by_id = {c["eventMetadata"]["inferenceId"]: c for c in captured}
    first = by_id[sent[0]]["captureData"]["endpointInput"]["data"]
    assert json.loads(first) == rows[0]


def test_a_process_that_cannot_be_started_leaves_the_formatting_to_the_writer(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused() -> Any:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(capture_module, "_spawn_formatter", refused)
    writer = CaptureWriter(ctx, max_age_s=3600, format_process=True)
    assert writer._formatter is not None
    try:
        with caplog.at_level(logging.WARNING, logger="civicml.serving.capture"):
            for _ in range(capture_module.FORMAT_MAX_FAILURES + 1):
                writer._append_all(_events())
        assert _spool_bytes(writer) == b"".join(map(capture_lines, _events())) * 4
        assert writer._formatter.disabled and "could not be started" in caplog.text
    finally:
        _close_spools(writer)


def test_a_server_set_to_thread_formats_in_its_writer_thread(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, serving_capture_format="thread")
    app = create_app(settings)
    with serve(app):  # started: the app's lifespan made its model host and capture writer
        assert app.state.serving.capture._formatter is None
    app.state.serving.close()
