"""Shadow traffic: a sampled copy of live requests, answered by the shadow off the request path.

The live request decides whether to copy itself (one random draw against the shadow's
``shadow_percent``) only after its own answer is ready, and then only puts a small job on a
bounded queue (``put_nowait``): the caller never waits for the shadow model. One background
thread per model host takes the jobs — waking once per :data:`COALESCE_S` on a busy endpoint
and taking every copy queued by then — and has the shadow answer each, timed on its own; when
the queue is full the copy is dropped and counted (``stats.shadow_dropped``), so a slow shadow
sheds load instead of holding memory or slowing anything live. The shadow's answers are
captured (marked ``"shadow": true``, with the live answer's inference ids, so each pair joins)
and never returned.

Where the shadow model predicts is the setting ``serving_shadow_mode``. ``"process"`` (the
default): in a worker process of its own (:mod:`civicml.serving._shadow_process`), so its work
never takes the interpreter lock from a live request; the thread only sends a batch's records
and records the answers. ``"thread"``: in this thread, one copy at a time, handing the lock back
between copies — no extra process, but the shadow's work competes with the live requests for
the lock (benchmarks/shadow.py). In process mode, the copies are answered in the thread while
the first worker loads (seconds), and so are a copy whose records are not plain JSON (a
DataFrame handed to the SDK) and a pickled shadow's (already in the sandbox's worker).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

__all__ = ["COALESCE_S", "DEFAULT_SHADOW_QUEUE", "ShadowAnswer", "ShadowJob", "ShadowRunner"]

log = logging.getLogger("civicml.serving.shadow")

#: Copies waiting for the shadow model, per model host.
DEFAULT_SHADOW_QUEUE = 1000
#: After a copy arrives, the thread waits this long for more and then answers all it finds
#: (at most ``_BATCH``): a thread woken per request took the interpreter lock from the event
#: loop at every request and, on a busy endpoint, cost the live answers more than the shadow's
#: own work (benchmarks/shadow.py).
COALESCE_S = 0.01
_BATCH = 256


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


class Workers(Protocol):
    """Where copies are answered out of process (:class:`~civicml.serving._shadow_process
    .ShadowWorkers`)."""

    def state(self, route: Any) -> Literal["send", "here", "drop"]:
        """Whether the copies for ``route``'s shadow are sent, answered here, or dropped."""

    def answer(self, route: Any, copies: list[bytes]) -> list[ShadowAnswer] | None:
        """One answer per copy, in order; None when they are dropped."""


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
    """

    def __init__(
        self,
        answer: Callable[[ShadowJob], ShadowAnswer],
        record: Callable[[ShadowJob, ShadowAnswer | None], None],
        queue_size: int,
        workers: Workers | None = None,
    ) -> None:
        self._answer = answer
        self._record = record
        self._workers = workers
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._idle = threading.Condition()
        self._pending = 0

    def offer(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False when the queue is full (the job is dropped)."""
        if self._closed:
            return False
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._loop, name="civicml-shadow", daemon=True)
                    thread.start()
                    self._thread = thread
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            return False
        return True

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued job has run; True when none is left."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (jobs still queued are dropped)."""
        self._closed = True
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
        """Have the workers answer what they take, one message per shadow model, and record
        their answers; returns the jobs left for this thread."""
        if self._workers is None:
            return jobs
        here: list[ShadowJob] = []
        groups: dict[str, list[tuple[ShadowJob, bytes]]] = {}
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
            data = _plain_json(job.rows) if state == "send" else None
            if state == "drop":
                self._guarded(job, None, here=False)
            elif data is None:
                here.append(job)
            else:
                groups.setdefault(key, []).append((job, data))
        for group in groups.values():
            answers: list[ShadowAnswer] | list[None] | None
            try:
                answers = self._workers.answer(group[0][0].route, [data for _, data in group])
            except Exception:
                log.exception("the shadow's worker failed; the live answers were not affected")
                answers = [ShadowAnswer(error="model_error")] * len(group)
            if answers is None:  # the shadow is marked failed: dropped
                answers = [None] * len(group)
            for (job, _), answer in zip(group, answers, strict=True):
                self._guarded(job, answer, here=False)
                time.sleep(0)  # hand the interpreter lock to a live request waiting for it
        return here

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
