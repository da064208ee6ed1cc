"""Shadow copies answered in a worker process (serving_shadow_mode = "process"): the same capture
records as the thread, a worker that dies is restarted or marked failed, none outlives its host."""

from __future__ import annotations

import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from civicml.core import Settings
from civicml.serving import (
    CaptureService,
    CaptureWriter,
    EndpointService,
    ModelHost,
    _shadow_process,
)
from civicml.serving import shadow as shadow_module
from civicml.store import Context
from tests.serving.helpers import MODEL, records
from tests.serving.test_shadow import _ready, _shadowed


def _host(ctx: Context, mode: str) -> ModelHost:
    settings = Settings.load(home=ctx.settings.home, serving_shadow_mode=mode)
    return ModelHost(replace(ctx, settings=settings), capture=CaptureWriter(ctx, max_age_s=3600))


@pytest.fixture
def process_host(ctx: Context) -> Iterator[ModelHost]:
    host = _host(ctx, "process")
    yield host
    host.close()


def _shadow_records(ctx: Context, host: ModelHost, project: str) -> list[dict[str, Any]]:
    captured = CaptureService(ctx, host.capture).records(project, "web")
    return [c for c in captured if c["eventMetadata"]["shadow"]]


def _gone(pid: int) -> bool:
    """Whether process ``pid`` ended (a zombie left to a parent that does not reap counts)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_worker_captures_what_the_thread_captures(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    """The same requests to a host with the shadow in its thread and to one with it in a worker
    process give the same shadow records (inputs, outputs, pairs, variant); a DataFrame copy is
    answered in the thread."""
    thread, process = _host(ctx, "thread"), _host(ctx, "process")
    try:
        _shadowed(ctx, thread, model_dirs, 100)
        pids = _ready(process, project)
        assert len(pids) == 1 and pids[0] != os.getpid()
        rows = records(30, seed=7)
        ids: dict[str, list[str]] = {}
        for name, host in (("thread", thread), ("process", process)):
            answers = [host.invoke(project, "web", [row]) for row in rows]
            answers.append(host.invoke(project, "web", pd.DataFrame(rows[:2])))
            ids[name] = [i for a in answers for i in a["inference_ids"]]
            assert host.drain_shadow()
        assert process._shadow_workers is not None and process._shadow_workers.pids() == pids
        assert thread._shadow_workers is None
        process.capture.flush()
        by_id = {c["eventMetadata"]["eventId"]: c for c in _shadow_records(ctx, thread, project)}
        assert set(ids["thread"]) | set(ids["process"]) <= set(by_id)

        def seen(name: str) -> list[Any]:
            events = [by_id[i] for i in ids[name]]
            return [
                [e["captureData"]["endpointInput"]["data"] for e in events],
                [e["captureData"]["endpointOutput"]["data"] for e in events],
                {
                    (m["variant"], m["modelVersion"], m["shadow"], m["latencyMs"] > 0)
                    for m in (e["eventMetadata"] for e in events)
                },
            ]

        process_seen, thread_seen = seen("process"), seen("thread")
        assert process_seen[0] == thread_seen[0]  # the inputs, byte for byte
        assert process_seen[2] == thread_seen[2] == {("v2-shadow", 2, True, True)}
        # The outputs: the same predictions; probabilities to the last bits (one row alone in
        # the worker, several together in the thread: BLAS may round a product differently).
        for worker_line, thread_line in zip(process_seen[1], thread_seen[1], strict=True):
            mine, theirs = json.loads(worker_line), json.loads(thread_line)
            assert mine["prediction"] == theirs["prediction"]
            assert mine["classes"] == theirs["classes"]
            assert mine["probabilities"] == pytest.approx(theirs["probabilities"], rel=1e-12)
    finally:
        thread.close()
        process.close()


def test_a_dead_worker_is_restarted_and_live_answers_are_unaffected(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], process_host: ModelHost
) -> None:
    host = process_host
    _shadowed(ctx, host, model_dirs, 100)
    (first,) = _ready(host, project)
    os.kill(first, signal.SIGKILL)
    assert _wait_gone(first)
    lost = host.invoke(project, "web", records(1, seed=2))  # its copy meets the dead worker
    assert host.drain_shadow()
    restarting = host.invoke(project, "web", records(1, seed=3))  # dropped: not answered here
    assert host.drain_shadow()
    (second,) = _ready(host, project, seed=4)
    assert second != first
    later = [host.invoke(project, "web", records(1, seed=5 + i)) for i in range(5)]
    assert host.drain_shadow()
    assert {a["variant"] for a in [lost, restarting, *later]} == {"v1"}
    shadow = {c["eventMetadata"]["eventId"]: c for c in _shadow_records(ctx, host, project)}
    output = json.loads(shadow[lost["inference_ids"][0]]["captureData"]["endpointOutput"]["data"])
    assert output == {"error": "model_error"}
    assert restarting["inference_ids"][0] not in shadow
    for answer in later:
        data = shadow[answer["inference_ids"][0]]["captureData"]["endpointOutput"]["data"]
        assert "probabilities" in json.loads(data)
    stats = EndpointService(ctx, host).get(project, "web").stats
    assert stats is not None and stats.shadow_failure is None and stats.output_errors == 0
    assert stats.shadow_dropped >= 1


def test_a_worker_that_keeps_failing_is_marked_failed_with_its_reason(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    process_host: ModelHost,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first copies are answered in the thread while the first worker loads; once it
    failed, copies are dropped, and after MAX_FAILURES it is marked failed."""

    def broken(directory: Path, about: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", "import sys; sys.exit(5)"]
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    monkeypatch.setattr(_shadow_process, "_spawn", broken)
    host = process_host
    _shadowed(ctx, host, model_dirs, 100)
    answers = []
    with caplog.at_level(logging.ERROR, logger="civicml.serving.shadow"):
        for i in range(40):
            answers.append(host.invoke(project, "web", records(1, seed=i)))
            assert host.drain_shadow()
            stats = EndpointService(ctx, host).get(project, "web").stats
            assert stats is not None
            if stats.shadow_failure is not None:
                break
            time.sleep(0.2)  # the broken worker exits
    assert [a["variant"] for a in answers] == ["v1"] * len(answers)
    assert stats.shadow_failure == "worker ended with exit status 5 (3 failures in a row)"
    assert stats.invocations == len(answers) and stats.output_errors == 0
    assert any("marked failed after 3 failures in a row" in r.message for r in caplog.records)
    captured = _shadow_records(ctx, host, project)
    assert captured and all(
        "probabilities" in json.loads(c["captureData"]["endpointOutput"]["data"]) for c in captured
    )  # answered in the thread before the first failure; nothing since
    assert stats.shadow_dropped == len(answers) - len(captured) >= 2
    more = host.invoke(project, "web", records(1, seed=99))
    assert host.drain_shadow()
    stats = EndpointService(ctx, host).get(project, "web").stats
    assert stats is not None and stats.shadow_dropped == len(answers) + 1 - len(captured)
    assert more["variant"] == "v1"


def test_closing_the_host_stops_the_worker(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    host = _host(ctx, "process")
    _shadowed(ctx, host, model_dirs, 100)
    (pid,) = _ready(host, project)
    assert not _gone(pid)
    host.close()
    assert _gone(pid)
    assert host._shadow_workers is not None and host._shadow_workers.pids() == []


def test_closing_the_host_while_the_worker_loads_answers_the_copy_and_stops_it(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    """A short-lived host (the CLI's) answers its copy in the thread and does not wait for the
    worker, which is stopped with it."""
    host = _host(ctx, "process")
    _shadowed(ctx, host, model_dirs, 100)
    answer = host.invoke(project, "web", records(1))
    assert host.drain_shadow()
    assert host._shadow_workers is not None
    (pid,) = host._shadow_workers.pids()  # still loading
    host.close()
    assert _gone(pid)
    (record,) = _shadow_records(ctx, host, project)
    assert record["eventMetadata"]["eventId"] == answer["inference_ids"][0]
    assert "probabilities" in json.loads(record["captureData"]["endpointOutput"]["data"])


def test_a_worker_does_not_outlive_its_server(model_dirs: tuple[Path, Path]) -> None:
    """A server killed without closing (SIGKILL) leaves no worker behind."""
    server = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from civicml.serving._shadow_process import _spawn\n"
        "from civicml.serving.sandbox import _Worker\n"
        "worker = _Worker(_spawn(Path(sys.argv[1]), sys.argv[2]))\n"
        "assert worker.exchange(None, 120)['ok']\n"
        "print(worker.process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    about = json.dumps({"version_id": "mv", "model_name": MODEL, "version": 2})
    done = subprocess.run(
        [sys.executable, "-c", server, str(model_dirs[1]), about],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-500:]
    pid = int(done.stdout.decode().split()[0])
    assert _wait_gone(pid)


def _fake_route(endpoint: str, capture: bool, classes: list[Any]) -> Any:
    loaded = SimpleNamespace(model_name=MODEL, version=2, version_id="mv", classes=classes)
    return SimpleNamespace(
        project_id="p1",
        endpoint=SimpleNamespace(id=f"id-{endpoint}", name=endpoint, capture=Capture(capture)),
        shadow=SimpleNamespace(id=f"variant-{endpoint}", name="v2-shadow", loaded=loaded),
    )


@dataclass(frozen=True)
class Capture:
    enabled: bool


def test_the_worker_formats_the_lines_capture_lines_gives(
    ctx: Context, model_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """The worker's capture lines are, byte for byte, capture_lines (and the compact JSON of
    capture_records) of the events the server builds from the same answers: every outcome,
    several records per copy, a caller left to the host's principal, a time in another zone,
    a new hour (a run of lines of its own) and a route that does not capture (no lines)."""
    from civicml.serving._shadow_process import ANSWERED, INVALID_INPUT, ShadowWorkers, _spawn
    from civicml.serving._shadow_worker import _load
    from civicml.serving.capture import CaptureEvent, capture_lines, capture_records
    from civicml.serving.sandbox import _Worker
    from civicml.serving.shadow import ShadowJob

    about = {"version_id": "mv", "model_name": MODEL, "version": 2}
    loaded = _load(model_dirs[1], about)
    web, other = _fake_route("web", True, loaded.classes), _fake_route("other", False, [])
    rows = records(4, seed=9)
    plus_two = timezone(timedelta(hours=2))
    jobs = [
        ShadowJob(web, rows[:1], ["a1"], "rosa", datetime(2026, 11, 23, 10, 59, 59, 999999, UTC)),
        ShadowJob(
            web, rows[1:3], ["b1", "b2"], None, datetime(2026, 11, 23, 12, 59, 59, 1, plus_two)
        ),
        ShadowJob(other, rows[3:], ["c1"], "rosa", datetime(2026, 11, 23, 11, 0, 0, 5000, UTC)),
        ShadowJob(web, [{"age": 3}], ["d1"], "rosa", datetime(2026, 11, 23, 11, 0, 0, 5000, UTC)),
        ShadowJob(web, rows[3:], ["e1"], "ruth", datetime(2026, 11, 23, 11, 0, 1, tzinfo=UTC)),
    ]
    workers = ShadowWorkers(ctx, tmp_path)
    worker = _Worker(_spawn(model_dirs[1], json.dumps(about)))
    try:
        assert worker.exchange(None, 120)["ok"]
        workers._workers["mv"] = worker
        batch = workers.answer(jobs, json.dumps([j.rows for j in jobs]).encode())
    finally:
        workers.close()
    assert batch is not None and not batch.failure
    assert batch.outcomes == [ANSWERED, ANSWERED, ANSWERED, INVALID_INPUT, ANSWERED]
    assert batch.routes == [web, other] and batch.route_of == [0, 0, 1, 0, 0]
    assert [(i, hour) for i, hour, _ in batch.lines] == [(0, "2026112310"), (0, "2026112311")]
    got = b"".join(data for _, _, data in batch.lines).splitlines(keepends=True)
    assert len(got) == 5  # the route that does not capture has none
    for job, latency in zip(jobs, batch.latencies, strict=True):
        if job.route is other:
            continue
        mine, got = got[: len(job.rows)], got[len(job.rows) :]
        request_id = json.loads(mine[0])["eventMetadata"]["requestId"]
        answered = job.inference_ids != ["d1"]
        predictions, probabilities = (
            loaded.predict(loaded.prepare(job.rows)) if answered else ([], None)
        )
        event = CaptureEvent(
            project_id="p1",
            endpoint_id="id-web",
            endpoint="web",
            model_name=MODEL,
            model_version=2,
            model_version_id="mv",
            time=job.time,
            request_id=request_id,
            records=job.rows,
            predictions=predictions,
            probabilities=probabilities,
            classes=loaded.classes,
            inference_ids=job.inference_ids,
            caller=ctx.principal.user if job.caller is None else job.caller,
            error=None if answered else "invalid_input",
            variant="v2-shadow",
            shadow=True,
            latency_ms=latency / 1e6 if answered else None,
        )
        want = b"".join(
            json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in capture_records(event)
        )
        assert b"".join(mine) == capture_lines(event) == want
        assert (latency > 0) == answered


def test_a_malformed_answer_is_refused_whole(model_dirs: tuple[Path, Path]) -> None:
    """Lines the server cannot check (an hour that is no hour, sizes that do not add up, a line
    missing or too many) fail the whole answer: nothing of it is counted or captured."""
    from civicml.serving._shadow_process import ShadowWorkerError, _read_batch
    from civicml.serving.shadow import ShadowJob

    route = _fake_route("web", True, [False, True])
    jobs = [ShadowJob(route, [{"a": 1}], ["i1"], None, datetime.now(UTC))]

    def frame(lines: list[Any], data: bytes, outcomes: list[int] | None = None) -> bytes:
        header = {"ok": True, "outcomes": outcomes or [0], "latency": [5], "messages": []}
        head = json.dumps({**header, "lines": lines}).encode()
        return struct.pack(">I", len(head)) + head + data

    good = _read_batch(frame([[0, "2026112310", 3]], b"{}\n"), jobs, [route], [0])
    assert good.lines == [(0, "2026112310", b"{}\n")] and good.latencies == [5]
    for bad in (
        frame([[0, "../../x/..", 3]], b"{}\n"),
        frame([[0, "2026112310", 4]], b"{}\n"),
        frame([[0, "2026112310", 2]], b"{}\n"),
        frame([[1, "2026112310", 3]], b"{}\n"),
        frame([[0, "2026112310", 6]], b"{}\n{}\n"),
        frame([], b""),
        frame([[0, "2026112310", 3]], b"{}\n", outcomes=[7]),
    ):
        with pytest.raises(ShadowWorkerError, match="malformed"):
            _read_batch(bad, jobs, [route], [0])


def test_a_workers_batch_is_counted_for_the_shadow_and_its_lines_appended(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], process_host: ModelHost
) -> None:
    """The answers of a batch count for the shadow variant only (answered with its latency, 4xx,
    5xx), and the lines the worker formatted are appended to the endpoint's capture as given."""
    from civicml.serving.capture import CaptureEvent, capture_lines
    from civicml.serving.shadow import ShadowBatch, ShadowJob

    _shadowed(ctx, process_host, model_dirs, 100)
    process_host.invoke(project, "web", records(1))  # the route, loaded
    assert process_host.drain_shadow()
    route = process_host._route(project, "web")
    shadow = route.shadow
    before = process_host.variant_counters()[shadow.id][1]
    live = process_host.stats(route.endpoint.id)
    now = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    jobs = [ShadowJob(route, records(1, seed=i), [f"id-{i}"], "rosa", now) for i in range(3)]
    event = CaptureEvent(
        project_id=route.project_id,
        endpoint_id=route.endpoint.id,
        endpoint="web",
        model_name=MODEL,
        model_version=2,
        model_version_id=shadow.loaded.version_id,
        time=now,
        request_id="r",
        records=jobs[0].rows,
        predictions=[True],
        probabilities=None,
        classes=[],
        inference_ids=["id-0"],
        shadow=True,
    )
    lines = capture_lines(event)
    batch = ShadowBatch(
        routes=[route],
        route_of=[0, 0, 0],
        outcomes=[0, 1, 2],
        latencies=[5_000_000, 0, 0],
        lines=[(0, "2026112310", lines)],
    )
    process_host._record_shadow_batch(jobs, batch)
    invocations, errors_4xx, errors_5xx, _ = process_host.variant_counters()[shadow.id][1]
    assert (invocations, errors_4xx, errors_5xx) == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert process_host.stats(route.endpoint.id) == live  # it answered nobody
    captured = [
        r
        for r in _shadow_records(ctx, process_host, project)
        if r["eventMetadata"]["eventId"] == "id-0"
    ]
    assert [json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in captured] == [lines]


def test_a_non_finite_answer_is_captured_by_the_worker_as_the_server_would(
    ctx: Context, tmp_path: Path
) -> None:
    """A shadow answering NaN: the copy is the shadow's 5xx and its line says
    ``non_finite_output`` (no values, no latency), the bytes capture_lines gives."""
    from civicml.serving._shadow_process import NON_FINITE, ShadowWorkers, _spawn
    from civicml.serving.capture import CaptureEvent, capture_lines
    from civicml.serving.sandbox import _Worker
    from civicml.serving.shadow import ShadowJob
    from tests.serving.helpers import train_nan

    train_nan(tmp_path / "nan")
    about = {"version_id": "mv", "model_name": MODEL, "version": 2}
    route = _fake_route("web", True, [False, True])
    when = datetime(2026, 11, 23, 10, 15, 2, 123456, UTC)
    job = ShadowJob(route, records(2, seed=4), ["n1", "n2"], "rosa", when)
    workers = ShadowWorkers(ctx, tmp_path / "cache")
    worker = _Worker(_spawn(tmp_path / "nan", json.dumps(about)))
    try:
        assert worker.exchange(None, 120)["ok"]
        workers._workers["mv"] = worker
        batch = workers.answer([job], json.dumps([job.rows]).encode())
    finally:
        workers.close()
    assert batch is not None and batch.outcomes == [NON_FINITE] and batch.latencies == [0]
    [(_, hour, data)] = batch.lines
    request_id = json.loads(data.splitlines()[0])["eventMetadata"]["requestId"]
    event = CaptureEvent(
        project_id="p1",
        endpoint_id="id-web",
        endpoint="web",
        model_name=MODEL,
        model_version=2,
        model_version_id="mv",
        time=when,
        request_id=request_id,
        records=job.rows,
        predictions=[],
        probabilities=None,
        classes=[False, True],
        inference_ids=job.inference_ids,
        caller="rosa",
        error="non_finite_output",
        variant="v2-shadow",
        shadow=True,
    )
    assert hour == "2026112310" and data == capture_lines(event)
    assert b'\\"error\\":\\"non_finite_output\\"' in data and b'"latencyMs":null' in data


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"),
    [
        ("auto", 2, "thread"),
        ("auto", 3, "process"),
        ("auto", 16, "process"),
        ("process", 1, "process"),
        ("thread", 16, "thread"),
    ],
)
def test_auto_mode_answers_in_a_worker_only_with_a_core_to_spare(
    monkeypatch: pytest.MonkeyPatch, setting: str, cpus: int, expected: str
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert shadow_module.shadow_mode(setting) == expected


def test_the_model_host_follows_the_resolved_mode(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    small = _host(ctx, "auto")
    try:
        assert small._shadow_workers is None  # auto on 2 CPUs: the thread
    finally:
        small.close()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    large = _host(ctx, "auto")
    try:
        assert large._shadow_workers is not None  # auto on 4 CPUs: a worker process
    finally:
        large.close()
