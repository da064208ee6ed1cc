"""Shadow traffic: a sampled copy of live requests, answered by the shadow off the request path.

The live request decides whether to copy itself (one random draw against the shadow's
``shadow_percent``) only after its own answer is ready, and then only puts a small job on a
bounded queue (``put_nowait``): the caller never waits for the shadow model. One background
thread per model host takes the jobs — waking once per :data:`COALESCE_S` on a busy endpoint
and answering every copy queued by then, each timed on its own — and predicts with the shadow;
when the queue is full the
copy is dropped and counted (``stats.shadow_dropped``), so a slow shadow sheds load instead of
holding memory or slowing anything live. The shadow's answers are captured (marked
``"shadow": true``, with the live answer's inference ids, so each pair joins) and never returned.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["COALESCE_S", "DEFAULT_SHADOW_QUEUE", "ShadowJob", "ShadowRunner"]

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


class ShadowRunner:
    """A bounded queue of :class:`ShadowJob` and the thread that runs them.

    Args:
        run: Answers one job (predict with the shadow, count, capture); its exceptions are
            logged and never stop the thread.
        queue_size: Jobs waiting at most; more are dropped.
    """

    def __init__(self, run: Callable[[ShadowJob], None], queue_size: int) -> None:
        self._run = run
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
            for each in jobs:  # one by one: each copy's own latency is what is recorded
                try:
                    self._run(each)
                except Exception:
                    log.exception("a shadow request failed; the live answer was not affected")
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()
                time.sleep(0)  # hand the interpreter lock to a live request waiting for it
            if stop:
                return
