"""Group commit for metrics (and a run's parameters and end): many calls, one transaction.

Callers hand values to a :class:`MetricWriter` and go on; a background thread gathers everything
queued and writes it in one transaction (one fsync) per round. A ``synchronous`` submit waits until
its values are durable; concurrent synchronous callers share one commit. A buffered value waits at
most ``interval`` seconds; a process killed with SIGKILL loses at most that window and never leaves
a partial batch (each round is one transaction). Errors of buffered batches are raised by the next
call for the same run (``submit``/``flush``), never dropped silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from civicml.core.errors import CivicMLError
from civicml.tracking.schemas import MetricBatchResult, MetricValue
from civicml.tracking.service import MetricBatch, NewRun

__all__ = ["MetricSink", "MetricWriter"]

#: Writes batches in one transaction and answers, per batch, a result or the error it hit.
MetricSink = Callable[[Sequence[MetricBatch]], Sequence[MetricBatchResult | CivicMLError]]

_MAX_PENDING = 50_000


@dataclass(slots=True)
class _Pending:
    batch: MetricBatch | None  # None: a flush barrier
    done: threading.Event | None = None
    error: BaseException | None = None
    results: list[MetricBatchResult] = field(default_factory=list)


class MetricWriter:
    """Buffers metric values and writes them in group commits.

    Args:
        sink: Writes a list of batches in one transaction (embedded: the service; remote: HTTP).
        interval: Longest wait of a buffered value before its commit, in seconds.
    """

    def __init__(self, sink: MetricSink, *, interval: float = 0.2) -> None:
        self._sink = sink
        self._interval = interval
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._pending_values = 0
        self._urgent = False
        self._writing = False  # a round is being written (by a leader or the thread)
        # The thread waits for a deadline that comes within ``interval`` of now: a value queued
        # meanwhile is written by then without waking it (each wake-up is a thread switch).
        self._armed = False
        self._active = False  # something was queued since the thread last found nothing
        self._first_at = 0.0  # when the oldest value queued now was queued (monotonic)
        self._closed = False
        self._errors: dict[str, BaseException] = {}
        self._thread: threading.Thread | None = None

    def submit(
        self,
        run_id: str,
        values: Sequence[MetricValue],
        *,
        synchronous: bool = False,
        batch_id: str | None = None,
        params: Mapping[str, str] | None = None,
        end: str | None = None,
        create: NewRun | None = None,
    ) -> MetricBatchResult | None:
        """Queue values for a run; with ``synchronous`` return only once they are durable
        (and answer what was stored). ``batch_id`` makes a retried batch count once.

        ``params`` (parameters to record) and ``end`` (the status that ends the run) go in the
        same group commit as everything queued before them, and ``create`` (a checked new run,
        written before anything else of the round) with the next one, so a run's creation,
        parameters, metrics and end can be written by one transaction. Such a batch is never
        merged with another."""
        if self._errors:
            self._raise_pending(run_id)
        with self._cond:
            if self._closed:
                raise RuntimeError("the metric writer is closed")
            # Back-pressure: past _MAX_PENDING queued values a caller waits for a commit, so a
            # producer faster than the disk cannot grow the buffer without bound.
            wait = synchronous or self._pending_values >= _MAX_PENDING
            queue = self._queue
            self._pending_values += len(values)
            plain = params is None and end is None and create is None
            if not wait and batch_id is None and plain and queue:
                last = queue[-1]
                if (
                    last.done is None
                    and last.batch is not None
                    and last.batch.run_id == run_id
                    and last.batch.batch_id is None
                    and last.batch.params is None
                    and last.batch.end is None
                    and last.batch.create is None
                ):
                    last.batch.values.extend(values)  # type: ignore[attr-defined]
                    return None  # coalesced into the batch already queued for this run
            item = _Pending(
                MetricBatch(run_id, list(values), batch_id, params, end, create),
                threading.Event() if wait else None,
            )
            queue.append(item)
            if not wait:
                if len(queue) == 1:  # the thread may be idle: wake it for the deadline
                    self._first_at = time.monotonic()
                    self._active = True
                    if self._ensure_thread() or not self._armed:
                        self._cond.notify_all()
                return None
        self._lead_or_wait(item)
        if item.error is not None:
            raise item.error
        return item.results[0] if item.results else None

    def flush(self, run_id: str | None = None) -> None:
        """Make everything queued so far durable; raise a stored error for ``run_id``."""
        barrier = _Pending(None, threading.Event())
        with self._cond:
            idle = not self._queue and not self._writing
            if not idle:
                self._queue.append(barrier)
        if not idle:
            self._lead_or_wait(barrier)
        if run_id is not None:
            self._raise_pending(run_id)

    def pop_error(self, run_id: str) -> BaseException | None:
        """Take the stored error of a buffered batch of ``run_id`` (None when there is none)."""
        with self._cond:
            return self._errors.pop(run_id, None)

    def close(self) -> None:
        """Flush and stop the background thread."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # Internals ------------------------------------------------------------------------------
    def _lead_or_wait(self, item: _Pending) -> None:
        """Leader/follower group commit: when no round is being written, this caller writes
        everything queued (its own item included) at once; otherwise it waits for the round in
        progress to end and for the background thread to take it in the next one."""
        with self._cond:
            if self._writing:
                self._urgent = True
                self._ensure_thread()
                self._cond.notify_all()
                items = None
            else:
                items = self._take()
        if items is not None:
            self._write_round(items)
        item.done.wait()  # type: ignore[union-attr]

    def _take(self) -> list[_Pending]:
        items, self._queue = self._queue, []
        self._pending_values = 0
        self._urgent = False
        self._writing = True
        return items

    def _write_round(self, items: list[_Pending]) -> None:
        try:
            self._write(items)
        finally:
            with self._cond:
                self._writing = False
                # The thread needs waking only for what was queued during the round (or a
                # close); otherwise it sleeps until the next value is queued.
                if self._queue or self._urgent or self._closed:
                    self._cond.notify_all()

    def _raise_pending(self, run_id: str) -> None:
        with self._cond:
            error = self._errors.pop(run_id, None)
        if error is not None:
            raise error

    def _ensure_thread(self) -> bool:
        """Start the background thread when it is not running (answers whether it did)."""
        if self._thread is None or not self._thread.is_alive():
            self._armed = False
            self._thread = threading.Thread(target=self._loop, name="civicml-metrics", daemon=True)
            self._thread.start()
            return True
        return False

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    # A timed wait (armed) ends within ``interval``: a value queued meanwhile
                    # needs no wake-up. Only an idle thread, after an interval with nothing
                    # queued, sleeps until a submit wakes it.
                    if self._writing:
                        timeout = self._interval
                    elif self._urgent or self._closed:
                        break
                    elif self._queue:
                        timeout = self._first_at + self._interval - time.monotonic()
                        if timeout <= 0:
                            break
                    elif self._active:
                        self._active = False
                        timeout = self._interval
                    else:
                        self._cond.wait()
                        continue
                    self._armed = True
                    try:
                        self._cond.wait(timeout)
                    finally:
                        self._armed = False
                if self._closed and not self._queue:
                    return
                items = self._take()
            self._write_round(items)

    def _write(self, items: list[_Pending]) -> None:
        real = [i for i in items if i.batch is not None]
        if not real:  # only flush barriers: nothing to write
            for item in items:
                item.done.set()  # type: ignore[union-attr]
            return
        try:
            results = list(self._sink([i.batch for i in real if i.batch is not None]))
        except BaseException as err:  # the whole round failed: every batch gets the error
            results = [err] * len(real)  # type: ignore[list-item]
        for item, result in zip(real, results, strict=True):
            if isinstance(result, BaseException):
                item.error = result
                if item.done is None and item.batch is not None:
                    with self._cond:
                        self._errors.setdefault(item.batch.run_id, result)
            else:
                item.results.append(result)
        for item in items:
            if item.done is not None:
                item.done.set()
