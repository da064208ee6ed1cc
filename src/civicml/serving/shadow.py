"""Shadow traffic: a sampled copy of live requests, answered by the shadow off the request path.

The live request decides whether to copy itself (one random draw against the shadow's
``shadow_percent``) only after its own answer is ready, and then only puts a small job on a
bounded queue (``put_nowait``): the caller never waits for the shadow model. In a server, copies
the shadow answers in microseconds (an inline fast path) are answered on the event loop, one per
turn of the loop (:meth:`ShadowRunner.answer_on_loop`). Otherwise one background thread per
model host takes the jobs — waking once per :data:`COALESCE_S` on a busy endpoint
and taking every copy queued by then — and has the shadow answer each, timed on its own; when
the queue is full the copy is dropped and counted (``stats.shadow_dropped``), so a slow shadow
sheds load instead of holding memory or slowing anything live. The shadow's answers are
captured (marked ``"shadow": true``, with the live answer's inference ids, so each pair joins)
and never returned.

Where the shadow model predicts is the setting ``serving_shadow_mode`` (:func:`shadow_mode`).
``"process"``: in a worker process of its own (:mod:`civicml.serving._shadow_process`), so its work
never takes the interpreter lock from a live request; the thread only sends a batch's records
(one message, one ``json.dumps`` for all), counts the outcomes and hands the capture lines the
worker formatted to the capture writer. ``"thread"``: in this thread, one copy at a time,
handing the lock back between copies — no extra process, but the shadow's work competes with
the live requests for the lock (benchmarks/shadow.py). In process mode, the copies are
answered in the thread while the first worker loads (seconds), and so are a copy whose records
are not plain JSON (a DataFrame handed to the SDK) and a pickled shadow's (already in the
sandbox's worker). ``"auto"`` (the default) is ``"process"`` where this process may run on at
least :data:`AUTO_PROCESS_MIN_CPUS` CPUs, else ``"thread"``: the worker only pays where it has
a core of its own. On two cores shared with the live requests a 100 % shadow measured more
total CPU per copy in a worker (the message, the second interpreter) than in the thread, and a
higher live p99 at concurrency 16 (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from civicml.core.process import usable_cpus

__all__ = [
    "AUTO_PROCESS_MIN_CPUS",
    "COALESCE_S",
    "DEFAULT_SHADOW_QUEUE",
    "ShadowAnswer",
    "ShadowBatch",
    "ShadowJob",
    "ShadowRunner",
    "shadow_mode",
]

log = logging.getLogger("civicml.serving.shadow")

#: Copies waiting for the shadow model, per model host.
DEFAULT_SHADOW_QUEUE = 1000
#: After a copy arrives, the thread waits this long for more and then answers all it finds
#: (at most ``_BATCH``): a thread woken per request took the interpreter lock from the event
#: loop at every request and, on a busy endpoint, cost the live answers more than the shadow's
#: own work (benchmarks/shadow.py).
COALESCE_S = 0.01
_BATCH = 256
#: ``serving_shadow_mode = "auto"`` answers in a worker process from this many CPUs on.
AUTO_PROCESS_MIN_CPUS = 3


def shadow_mode(setting: str) -> Literal["process", "thread"]:
    """Where shadow copies are answered for the setting ``serving_shadow_mode``: ``"auto"``
    is ``"process"`` when this process may run on at least :data:`AUTO_PROCESS_MIN_CPUS`
    CPUs (its affinity, where the platform has one), else ``"thread"``.

    Example:
        >>> shadow_mode("thread")
        'thread'
    """
    if setting == "process":
        return "process"
    if setting == "thread":
        return "thread"
    return "process" if usable_cpus() >= AUTO_PROCESS_MIN_CPUS else "thread"


#: Copies are sent in messages of about this size at most.
_CHUNK_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One copied request: the route it was answered on and what the live variant answered."""

    route: Any  # runtime._Route (the endpoint as it was when the live answer was given)
    rows: Any
    inference_ids: list[str]
    caller: str | None
    time: datetime


@dataclass(frozen=True, slots=True)
class ShadowAnswer:
    """What the shadow made of one copy: predictions (with the time its check and prediction
    took), or the kind of failure."""

    predictions: list[Any] | None = None
    probabilities: list[list[float]] | None = None
    latency_ns: int = 0
    error: Literal["invalid_input", "model_error"] | None = None
    #: What went wrong, for the log (never captured).
    message: str = ""


@dataclass(slots=True)
class ShadowBatch:
    """What a worker process made of one message of copies (:meth:`Workers.answer`): per copy
    its outcome and latency, and the capture lines it formatted, ready to append."""

    #: The routes of the copies, in order of first use.
    routes: list[Any]
    #: Per copy, the index of its route in :attr:`routes`.
    route_of: list[int]
    #: Per copy: 0 answered, 1 invalid input (4xx), 2 model error, 3 non-finite output (5xx).
    outcomes: list[int] = field(default_factory=list)
    #: Per copy, the time its check and prediction took (ns; 0 unless answered).
    latencies: list[int] = field(default_factory=list)
    #: (route index, hour ``yyyymmddhh``, capture lines) in runs of copies.
    lines: list[tuple[int, str, bytes]] = field(default_factory=list)
    #: What went wrong with the copies that failed (for the log).
    messages: list[str] = field(default_factory=list)
    #: Why the worker gave no answers (it died, timed out or answered something malformed):
    #: the copies are the shadow's ``model_error``; empty when it answered.
    failure: str = ""


class Workers(Protocol):
    """Where copies are answered out of process (:class:`~civicml.serving._shadow_process
    .ShadowWorkers`)."""

    def state(self, route: Any) -> Literal["send", "here", "drop"]:
        """Whether the copies for ``route``'s shadow are sent, answered here, or dropped."""

    def answer(self, jobs: list[ShadowJob], copies: bytes) -> ShadowBatch | None:
        """The answers to ``jobs`` (``copies``: the JSON array of their records); None when
        they are dropped."""


class ShadowRunner:
    """A bounded queue of :class:`ShadowJob` and the thread that has them answered.

    Args:
        answer: Answers one job in this thread (predict with the shadow).
        record: Counts and captures one job's answer; ``None`` means the shadow is marked
            failed and the copy was dropped. Its exceptions (and ``answer``'s) are logged and
            never stop the thread.
        queue_size: Jobs waiting at most; more are dropped.
        workers: Answers copies in worker processes (and says which it takes now); None
            answers all in this thread.
        record_batch: Counts the answers of a worker's :class:`ShadowBatch` to the jobs and
            hands over its capture lines (required with ``workers``; a batch that
            :attr:`~ShadowBatch.failure` is recorded job by job with ``record``).
    """

    def __init__(
        self,
        answer: Callable[[ShadowJob], ShadowAnswer],
        record: Callable[[ShadowJob, ShadowAnswer | None], None],
        queue_size: int,
        workers: Workers | None = None,
        record_batch: Callable[[list[ShadowJob], ShadowBatch], None] | None = None,
    ) -> None:
        self._answer = answer
        self._record = record
        self._record_batch = record_batch
        self._workers = workers
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._idle = threading.Condition()
        self._pending = 0
        # On an event loop (answer_on_loop): the copies it answers, and whether a turn is due.
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._inline: Callable[[ShadowJob], bool] | None = None
        self._loop_queue: queue.Queue[ShadowJob] = queue.Queue(max(1, queue_size))
        self._turn_lock = threading.Lock()
        self._turn_due = False

    def answer_on_loop(
        self, loop: asyncio.AbstractEventLoop, inline: Callable[[ShadowJob], bool]
    ) -> None:
        """Answer the copies ``inline`` accepts on ``loop`` — a server's event loop, which
        answers small requests to fast-path models itself — one per turn of the loop, between
        its other callbacks, instead of in the shadow thread: no thread wakes up and the
        interpreter lock changes hands for none of them (on two cores that hand-over cost more
        than the shadow's own prediction). Copies ``inline`` refuses (a model without an
        inline fast path, many records) still go to the thread; with ``workers`` (process
        mode) nothing changes. Call it on the loop's thread."""
        if self._workers is not None:
            return
        self._inline = inline
        self._loop_thread = threading.get_ident()
        self._event_loop = loop

    def offer(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False when the queue is full (the job is dropped)."""
        if self._closed:
            return False
        loop, inline = self._event_loop, self._inline
        if loop is not None and inline is not None and inline(job):
            return self._offer_to_loop(loop, job)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._loop, name="civicml-shadow", daemon=True)
                    thread.start()
                    self._thread = thread
        return self._enqueue(self._queue, job)

    def _enqueue(self, waiting: queue.Queue[Any], job: ShadowJob) -> bool:
        """Put ``job`` on ``waiting``, counted as pending; False when it is full (dropped)."""
        with self._idle:
            self._pending += 1
        try:
            waiting.put_nowait(job)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            return False
        return True

    def _offer_to_loop(self, loop: asyncio.AbstractEventLoop, job: ShadowJob) -> bool:
        if not self._enqueue(self._loop_queue, job):
            return False
        with self._turn_lock:  # after the put: a turn ending now sees the job, or we see it end
            if self._turn_due:
                return True
            self._turn_due = True
        try:
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._turn)
            else:
                loop.call_soon_threadsafe(self._turn)
        except RuntimeError:  # the loop is closed: the server is stopping
            with self._turn_lock:
                self._turn_due = False
            self._drop_loop_jobs()
        return True

    def _turn(self) -> None:
        """One turn of the event loop: answer one copy, and come back on the next turn while
        copies are waiting."""
        if self._closed:
            self._drop_loop_jobs()
            return
        with contextlib.suppress(queue.Empty):
            self._guarded(self._loop_queue.get_nowait(), None, here=True)
        with self._turn_lock:
            if self._loop_queue.empty():
                self._turn_due = False
                return
        asyncio.get_running_loop().call_soon(self._turn)  # a turn runs on the running loop

    def _waiting_on_loop(self) -> Iterator[ShadowJob]:
        """Take the copies waiting for the loop, one by one, until none is left."""
        while True:
            try:
                yield self._loop_queue.get_nowait()
            except queue.Empty:
                return

    def _drop_loop_jobs(self) -> None:
        """Drop the copies waiting for the loop (it is gone): counted as done, never answered."""
        dropped = sum(1 for _ in self._waiting_on_loop())
        if dropped:
            with self._idle:
                self._pending -= dropped
                self._idle.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued job has run; True when none is left. On the event loop's own
        thread, the copies waiting for it are answered first, there."""
        if self._event_loop is not None and threading.get_ident() == self._loop_thread:
            for job in self._waiting_on_loop():
                self._guarded(job, None, here=True)
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (jobs still queued are dropped) and stop answering on the loop."""
        self._closed = True
        self._drop_loop_jobs()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            if self._queue.qsize() < _BATCH:
                # Let a busy endpoint's next copies arrive: the thread wakes (and takes the
                # interpreter lock from the event loop) once per interval, not once per request.
                time.sleep(COALESCE_S)
            stop = False
            while len(jobs) < _BATCH:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    stop = True
                    break
                jobs.append(following)
            here = self._send(jobs)
            for each in here:  # one by one: each copy's own latency is what is recorded
                self._guarded(each, None, here=True)
                time.sleep(0)  # hand the interpreter lock to a live request waiting for it
            if stop:
                return

    def _send(self, jobs: list[ShadowJob]) -> list[ShadowJob]:
        """Have the workers answer what they take, one message per shadow model (and about
        :data:`_CHUNK_BYTES`), and record their answers; returns the jobs left for this thread."""
        if self._workers is None:
            return jobs
        here: list[ShadowJob] = []
        groups: dict[str, list[ShadowJob]] = {}
        states: dict[str, str] = {}
        for job in jobs:
            route = job.route
            key = route.shadow.loaded.version_id
            state = states.get(key)
            if state is None:
                try:
                    state = states[key] = self._workers.state(route)
                except Exception:
                    log.exception("the shadow's worker could not be started")
                    state = states[key] = "drop"
            if state == "drop":
                self._guarded(job, None, here=False)
            elif state == "send":
                groups.setdefault(key, []).append(job)
            else:
                here.append(job)
        for group in groups.values():
            messages, plain_not = _messages(group)
            here += plain_not
            failure = ""
            for number, (sent, data) in enumerate(messages):
                batch: ShadowBatch | None
                if failure:  # the worker failed on an earlier message: these are lost too
                    batch = ShadowBatch(routes=[], route_of=[], failure=failure)
                else:
                    try:
                        batch = self._workers.answer(sent, data)
                    except Exception:
                        log.exception(
                            "the shadow's worker failed; the live answers were not affected"
                        )
                        batch = ShadowBatch(routes=[], route_of=[], failure="the worker failed")
                    failure = "" if batch is None else batch.failure
                self._recorded(sent, batch)
                if number + 1 < len(messages):
                    time.sleep(0)  # hand the interpreter lock to a live request waiting for it
        return here

    def _recorded(self, jobs: list[ShadowJob], batch: ShadowBatch | None) -> None:
        """Record a worker's answers to ``jobs``: none (``batch`` None: dropped), all failed
        (its ``failure``: each the shadow's ``model_error``), or the batch's."""
        if batch is None or batch.failure or self._record_batch is None:
            lost = (
                None if batch is None else ShadowAnswer(error="model_error", message=batch.failure)
            )
            for job in jobs:
                self._guarded(job, lost, here=False)
            return
        try:
            self._record_batch(jobs, batch)
        except Exception:
            log.exception(
                "recording the shadow's answers failed; the live answers were not affected"
            )
        finally:
            with self._idle:
                self._pending -= len(jobs)
                self._idle.notify_all()

    def _guarded(self, job: ShadowJob, answer: ShadowAnswer | None, *, here: bool) -> None:
        """Record ``answer``, or with ``here`` the answer given in this thread."""
        try:
            self._record(job, self._answer(job) if here else answer)
        except Exception:
            log.exception("a shadow request failed; the live answer was not affected")
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()


def _plain_json(rows: Any) -> bytes | None:
    """``rows`` as JSON for a worker, or None when they are not plain JSON records."""
    if type(rows) is not list:
        return None
    try:
        return json.dumps(rows, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return None


def _messages(jobs: list[ShadowJob]) -> tuple[list[tuple[list[ShadowJob], bytes]], list[ShadowJob]]:
    """``jobs`` as messages for a worker — (the jobs, the JSON array of their records), one
    ``json.dumps`` for all when they are plain JSON and small enough, else copy by copy in
    messages of at most about :data:`_CHUNK_BYTES` — and the jobs whose records are not plain
    JSON (a DataFrame, NumPy values, a non-finite number: answered in the thread)."""
    rows = [job.rows for job in jobs]
    if all(type(each) is list for each in rows):
        try:
            data = json.dumps(rows, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            pass
        else:
            if len(data) <= _CHUNK_BYTES:
                return [(jobs, data)], []
    messages: list[tuple[list[ShadowJob], bytes]] = []
    here: list[ShadowJob] = []
    sent: list[ShadowJob] = []
    parts: list[bytes] = []
    size = 0
    for job in jobs:
        part = _plain_json(job.rows)
        if part is None:
            here.append(job)
            continue
        if parts and size + len(part) > _CHUNK_BYTES:
            messages.append((sent, b"[" + b",".join(parts) + b"]"))
            sent, parts, size = [], [], 0
        sent.append(job)
        parts.append(part)
        size += len(part) + 1
    if parts:
        messages.append((sent, b"[" + b",".join(parts) + b"]"))
    return messages, here
