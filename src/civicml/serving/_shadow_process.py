"""Shadow copies answered in a worker process of their own (``serving_shadow_mode = "process"``).

A shadow model predicting in a thread of the serving process takes the interpreter lock from
the event loop while it works: at concurrency 1 that alone put 1.6x on the live p99
(benchmarks/shadow.py). Here one worker process per shadow model version
(:mod:`civicml.serving._shadow_worker`) does the checking and predicting, and formats the
copies' capture lines too — with what only the server knows (the live answer's inference ids,
time and caller; the endpoint, model and variant names), sent with the copies — byte for byte
the lines the server's capture writer would have formatted. The shadow thread only writes a
batch's records to the worker in one message, waits for the answer with the lock released,
counts each copy's outcome for the shadow variant and hands the lines to the capture writer,
which appends them as they are (:class:`~civicml.serving.capture.CaptureLines`): per copy the
server does no formatting, and no object is built per copy beyond the values sent. The worker
runs the same model the thread mode runs in the server (verified files, no pickle), so the lines
it writes are trusted as that model's answers are; the server still checks their shape (one run
per route and hour, the sizes adding up, one line per captured record) and refuses the whole
answer otherwise.

Loading: the worker is started on the shadow's first copy. The server copies the version's
files out of the artifact store into a private directory, each hashed against the registry's
digest as it is copied (:func:`~civicml.evaluation.models.fetch_version_files`, what the
server's own loading does), and the worker loads them with :meth:`TabularModel.load
<civicml.training.TabularModel.load>` (skops with an allowlist of types: nothing is unpickled);
the directory is removed once the worker answered ready. Loading takes seconds (the worker
imports the libraries); meanwhile the copies are answered in the thread, so a short-lived host
(the CLI's, an SDK session) answers its copies as before and never waits for a worker. The
pipe speaks the sandbox's length-prefixed JSON (:mod:`civicml.serving.sandbox`), never pickle.

Failure: a worker that dies or does not answer within :data:`CALL_TIMEOUT_S` is killed; the
copies of that batch are counted as the shadow's 5xx and captured with ``"model_error"`` (a
batch's answers come in one message, so none is half-recorded; the server formats those lines
itself), and a fresh worker is started;
until it is ready the copies are dropped and counted (``shadow_dropped``), never answered in
the serving process — whatever killed the worker must not reach the server. After
:data:`MAX_FAILURES` failures in a row the shadow is marked failed with the reason (logged, and
in the endpoint's ``stats.shadow_failure``); its copies are then dropped until another version
becomes the shadow or the server restarts. No failure reaches a live request.
:meth:`ShadowWorkers.close` (at the model host's close) kills every worker, and a worker whose
server dies is killed by the kernel (the parent-death signal, tied to the shadow thread that
spawns every worker) or ends at the end of its input: none outlives its server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from civicml.evaluation.models import fetch_version_files
from civicml.registry.service import RegistryService
from civicml.serving.sandbox import SandboxedModel, _Died, _Timeout, _Worker
from civicml.serving.shadow import ShadowBatch, ShadowJob
from civicml.store.context import Context

__all__ = ["CALL_TIMEOUT_S", "MAX_FAILURES", "ShadowWorkers", "State"]

#: A copy's outcome, as the worker answers it (:mod:`civicml.serving._shadow_worker`).
ANSWERED, INVALID_INPUT, MODEL_ERROR, NON_FINITE = 0, 1, 2, 3

log = logging.getLogger("civicml.serving.shadow")

_WORKER = Path(__file__).with_name("_shadow_worker.py")
#: Longest one batch of copies may take in the worker; past it the worker is killed.
CALL_TIMEOUT_S = 60.0
#: Longest a worker may take to load the model.
START_TIMEOUT_S = 120.0
#: Failures in a row (deaths, timeouts, failed starts) after which the shadow is marked failed.
MAX_FAILURES = 3
#: A worker unused this long is stopped (its shadow was removed or replaced).
IDLE_S = 600.0


class ShadowWorkerError(Exception):
    """The worker could not be started or answered something it should not have."""


#: What to do with a shadow's copies now (:meth:`ShadowWorkers.state`).
State = Literal["send", "here", "drop"]


@dataclass(slots=True)
class _Starting:
    worker: _Worker
    directory: Path
    since: float


class ShadowWorkers:
    """One worker process per shadow model version, started on its first copy.

    Used by the shadow thread only (and :meth:`close`, once that thread stopped or gave up).

    Args:
        ctx: The stores the model files are read from (the server's own).
        cache_root: Where the private directory of a loading worker's files is made.
    """

    def __init__(self, ctx: Context, cache_root: Path) -> None:
        self._ctx = ctx
        self._cache_root = cache_root
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._starting: dict[str, _Starting] = {}
        self._used: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._failed: dict[str, str] = {}
        self._closed = False

    def state(self, route: Any) -> State:
        """What to do with copies for the shadow of ``route`` now, starting its worker first.

        ``"send"``: its worker is ready (:meth:`answer`). ``"here"``: answer them in the
        thread — a pickle served from the sandbox (already in a process of its own), or the
        first worker still loading (a short-lived host, such as the CLI's, never waits for
        one). ``"drop"``: the shadow is marked failed, or a worker that failed before is
        restarting (what made it fail must not reach the serving process).
        """
        loaded = route.shadow.loaded
        version_id = loaded.version_id
        if self._closed or isinstance(loaded.model, SandboxedModel):
            return "here"
        if version_id in self._failed:
            return "drop"
        if version_id in self._workers:
            return "send"
        try:
            starting = self._starting.get(version_id)
            if starting is None:
                self._start(route)
            elif self._ready(starting):
                self._starting.pop(version_id, None)
                shutil.rmtree(starting.directory, ignore_errors=True)  # loaded now
                self._workers[version_id] = starting.worker
                self._used[version_id] = time.monotonic()
                log.info(
                    "endpoint %s: shadow model %s v%d answers in worker process %d",
                    route.endpoint.name, loaded.model_name, loaded.version,
                    starting.worker.process.pid,
                )  # fmt: skip
                return "send"
        except Exception as err:  # the worker, or fetching and verifying the files
            self._fail(route, err)
        if version_id in self._failed or self._failures.get(version_id, 0):
            return "drop"
        return "here"

    def failure(self, version_id: str) -> str | None:
        """Why the shadow of model version ``version_id`` was marked failed, or None."""
        return self._failed.get(version_id)

    def pids(self) -> list[int]:
        """The process ids of the workers (ready or loading)."""
        with self._lock:
            workers = [*self._workers.values(), *(s.worker for s in self._starting.values())]
        return [w.process.pid for w in workers]

    def answer(self, jobs: list[ShadowJob], copies: bytes) -> ShadowBatch | None:
        """The shadow's answers to ``jobs`` (all for one shadow model version, whose ready
        worker :meth:`state` said ``"send"``), and their capture lines, from one message;
        ``copies`` is the JSON array of their records. ``None`` when the host is closing (the
        copies are dropped).

        A worker that dies, times out or answers something malformed is stopped; the batch
        then says why (:attr:`ShadowBatch.failure`) and has no answers: the copies are the
        shadow's ``model_error`` (nothing is half-recorded: a message is read whole or not).
        """
        route = jobs[0].route
        version_id = route.shadow.loaded.version_id
        self._stop_idle(version_id)
        try:
            worker = self._workers.get(version_id)
            if worker is None:
                raise ShadowWorkerError("no worker is running")
            routes, route_of, meta = self._capture_meta(jobs)
            request = b'{"copies":' + copies + b',"capture":' + meta + b"}"
            frame = worker.exchange_bytes(request, CALL_TIMEOUT_S)
            batch = _read_batch(frame, jobs, routes, route_of)
        except Exception as err:
            if self._closed:
                return None
            return ShadowBatch(routes=[], route_of=[], failure=self._fail(route, err))
        self._failures.pop(version_id, None)
        self._used[version_id] = time.monotonic()
        if batch.messages:
            log.error(
                "endpoint %s: shadow variant %s failed on %d of %d copies: %s",
                route.endpoint.name, route.shadow.name, batch.outcomes.count(MODEL_ERROR),
                len(jobs), batch.messages[0],
            )  # fmt: skip
        return batch

    def _capture_meta(self, jobs: list[ShadowJob]) -> tuple[list[Any], list[int], bytes]:
        """The routes of ``jobs`` (in order of first use), each job's index among them, and the
        ``capture`` part of the message: what the worker needs to format their lines that only
        the server knows."""
        first = jobs[0].route
        routes: list[Any] = [first]
        route_of: list[int] = [0] * len(jobs)
        if any(job.route is not first for job in jobs):  # a route refreshed meanwhile
            index: dict[int, int] = {id(first): 0}
            for i, job in enumerate(jobs):
                found = index.get(id(job.route))
                if found is None:
                    found = index[id(job.route)] = len(routes)
                    routes.append(job.route)
                route_of[i] = found
        user = self._ctx.principal.user
        table = [
            [
                r.endpoint.capture.enabled,
                r.endpoint.name,
                r.shadow.loaded.model_name,
                r.shadow.loaded.version,
                r.shadow.loaded.version_id,
                r.shadow.name,
                r.shadow.loaded.classes,
            ]
            for r in routes
        ]
        meta = {
            "routes": table,
            "route": route_of,
            "time": [job.time.timestamp() for job in jobs],
            "caller": [user if job.caller is None else job.caller for job in jobs],
            "ids": [job.inference_ids for job in jobs],
        }
        return routes, route_of, json.dumps(meta, separators=(",", ":"), default=_item).encode()

    def close(self) -> None:
        """Stop every worker (and start no more)."""
        self._closed = True
        with self._lock:
            workers = list(self._workers.values())
            starting = list(self._starting.values())
            self._workers.clear()
            self._starting.clear()
        for worker in [*workers, *(s.worker for s in starting)]:
            worker.kill()
        for each in starting:
            shutil.rmtree(each.directory, ignore_errors=True)

    def _start(self, route: Any) -> None:
        """Fetch the verified files and spawn the worker; it loads them while the copies are
        answered here (:meth:`state` polls it)."""
        loaded = route.shadow.loaded
        mv = RegistryService(self._ctx).get_version(
            route.endpoint.project, loaded.model_name, loaded.version
        )
        if mv.id != loaded.version_id:
            raise ShadowWorkerError(f"model {mv.name} v{mv.version} is not the version served")
        self._cache_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = Path(tempfile.mkdtemp(prefix=f"shadow-{mv.id}-", dir=self._cache_root))
        try:
            fetch_version_files(self._ctx, mv, directory)  # every byte checked
            about = json.dumps({"version_id": mv.id, "model_name": mv.name, "version": mv.version})
            worker = _Worker(_spawn(directory, about))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        with self._lock:
            self._starting[mv.id] = _Starting(worker, directory, time.monotonic())

    def _ready(self, starting: _Starting) -> bool:
        """Whether the loading worker answered ready (raises when it failed or took too long)."""
        stdout = starting.worker.process.stdout
        if stdout is None or not select.select([stdout.fileno()], [], [], 0)[0]:
            if time.monotonic() - starting.since > START_TIMEOUT_S:
                raise ShadowWorkerError(f"the model did not load within {START_TIMEOUT_S:g} s")
            return False
        ready = starting.worker.exchange(None, START_TIMEOUT_S)
        if not ready.get("ok"):
            raise ShadowWorkerError(f"the model did not load: {ready.get('error')}")
        return True

    def _fail(self, route: Any, err: BaseException) -> str:
        """Stop the worker, say why, and mark the shadow failed after too many failures."""
        loaded = route.shadow.loaded
        version_id = loaded.version_id
        with self._lock:
            worker = self._workers.pop(version_id, None)
            starting = self._starting.pop(version_id, None)
        if starting is not None:
            worker = starting.worker
            shutil.rmtree(starting.directory, ignore_errors=True)
        reason = _reason(err, worker)
        if worker is not None:
            worker.kill()
        if self._closed:
            return reason
        count = self._failures[version_id] = self._failures.get(version_id, 0) + 1
        label = f"{loaded.model_name} v{loaded.version}"
        if count >= MAX_FAILURES:
            self._failed[version_id] = f"{reason} ({count} failures in a row)"
            log.error(
                "endpoint %s: shadow model %s marked failed after %d failures in a row (%s); "
                "its copies are dropped, live answers are not affected",
                route.endpoint.name, label, count, reason,
            )  # fmt: skip
        else:
            log.error(
                "endpoint %s: shadow model %s worker failed (%s); a new one is started, "
                "copies are dropped until it is ready",
                route.endpoint.name, label, reason,
            )  # fmt: skip
        return reason

    def _stop_idle(self, keep: str) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [v for v in self._workers if v != keep and now - self._used.get(v, now) > IDLE_S]
            stopped = [self._workers.pop(v) for v in idle]
        for worker in stopped:
            worker.kill()


def _spawn(directory: Path, about: str) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "HOME": str(directory),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return subprocess.Popen(  # noqa: S603 - a fixed command, no shell
        [sys.executable, "-I", "-B", str(_WORKER), str(directory), about],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # a chatty library could fill a pipe no one reads
        env=env,
        cwd=str(directory),
        close_fds=True,
    )


def _item(value: Any) -> Any:
    """NumPy scalars (a model's class labels) as the Python values JSON carries."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _read_batch(
    frame: bytes, jobs: list[ShadowJob], routes: list[Any], route_of: list[int]
) -> ShadowBatch:
    """The worker's answer frame to ``jobs``, checked: a 4-byte header length, the JSON header,
    then the capture lines (:mod:`civicml.serving._shadow_worker`)."""
    if len(frame) < 4:
        raise ShadowWorkerError("a truncated answer")
    (size,) = struct.unpack(">I", frame[:4])
    try:
        header = json.loads(frame[4 : 4 + size])
    except ValueError:
        raise ShadowWorkerError("an answer that is not JSON") from None
    if not isinstance(header, dict) or not header.get("ok"):
        error = header.get("error", "no error") if isinstance(header, dict) else "no error"
        raise ShadowWorkerError(f"a malformed answer ({error})")
    outcomes, latencies = header.get("outcomes"), header.get("latency")
    segments, messages = header.get("lines"), header.get("messages")
    count = len(jobs)
    if (
        not isinstance(outcomes, list)
        or not isinstance(latencies, list)
        or len(outcomes) != count
        or len(latencies) != count
        or not all(type(o) is int and ANSWERED <= o <= NON_FINITE for o in outcomes)
        or not all(type(n) is int and n >= 0 for n in latencies)
        or not isinstance(messages, list)
        or not isinstance(segments, list)
    ):
        raise ShadowWorkerError("a malformed answer (outcomes)")
    data = frame[4 + size :]
    lines: list[tuple[int, str, bytes]] = []
    offset = 0
    for segment in segments:
        if not (isinstance(segment, list) and len(segment) == 3):
            raise ShadowWorkerError("a malformed answer (lines)")
        index, hour, length = segment
        if not (
            type(index) is int
            and 0 <= index < len(routes)
            and routes[index].endpoint.capture.enabled
            and isinstance(hour, str)
            and len(hour) == 10
            and hour.isascii()
            and hour.isdigit()
            and type(length) is int
            and 0 < length <= len(data) - offset
        ):
            raise ShadowWorkerError("a malformed answer (lines)")
        lines.append((index, hour, data[offset : offset + length]))
        offset += length
    captured = [r.endpoint.capture.enabled for r in routes]
    records = sum(
        len(job.inference_ids) for job, i in zip(jobs, route_of, strict=True) if captured[i]
    )
    if offset != len(data) or data.count(b"\n") != records:
        raise ShadowWorkerError("a malformed answer (not one capture line per record)")
    return ShadowBatch(
        routes=routes,
        route_of=route_of,
        outcomes=outcomes,
        latencies=latencies,
        lines=lines,
        messages=[str(m[1])[:300] for m in messages if isinstance(m, list) and len(m) == 2],
    )


def _reason(err: BaseException, worker: _Worker | None) -> str:
    """Why the worker failed, in words: its exit signal or status, or the error."""
    if isinstance(err, _Timeout):
        return f"no answer within {CALL_TIMEOUT_S:g} s; worker killed"
    if isinstance(err, _Died) and worker is not None:
        code = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = worker.process.wait(timeout=5)
        if code is not None and code < 0:
            return f"worker ended by signal {signal.Signals(-code).name}"
        return f"worker ended with exit status {code}"
    if isinstance(err, ShadowWorkerError):
        return str(err)
    text = getattr(err, "message", None) or str(err)
    return f"{type(err).__name__}: {str(text)[:300]}"
