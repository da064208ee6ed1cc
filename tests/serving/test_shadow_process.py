"""Shadow copies answered in a worker process (serving_shadow_mode = "process"): the same capture
records as the thread, a worker that dies is restarted or marked failed, none outlives its host."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
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

        assert seen("process") == seen("thread")
        assert seen("process")[2] == {("v2-shadow", 2, True, True)}
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
