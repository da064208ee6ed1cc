"""Recording on a background thread while the next piece of work runs.

A tuning trial spends most of its own time fitting, and after the fit it only records: metrics,
parameters, lineage, maybe model files, tags and the end of its run — database and artifact
writes that wait on ``fsync`` far more than they compute. :class:`Recorder` runs those writes on
one background thread, in the order they were handed over, while the next trial already trains
(LightGBM releases the GIL while it boosts), so a tuning job's wall time is close to its
training time.

What it keeps:

- **Order and completeness**: jobs run one at a time, first in first out (a trial's run is
  created by one, :meth:`Recorder.call`, while the trial trains); :meth:`Recorder.close`
  returns only when every job has run, so a tuning job's parent run is ended, and its result
  returned, only after every trial run has been recorded and ended.
- **Errors are not lost**: a job that raises does not stop the jobs after it (each records
  another trial's run); the first error is raised by :meth:`Recorder.check` — which a trial
  calls before it starts, so a failing store stops the search — and by :meth:`Recorder.close`.
- **Bounded memory**: at most ``max_pending`` jobs wait; :meth:`Recorder.submit` blocks past
  that, so recording slower than training cannot pile up fitted models.
- **Crash safety is the store's**: a process killed with jobs waiting leaves those trial runs
  ``running``, as a kill during a trial always did; civicml marks them ``killed`` (their
  process is gone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Recorder"]

T = TypeVar("T")


class Recorder:
    """Runs recording jobs in order on one background thread (see the module docstring)."""

    def __init__(self, *, max_pending: int = 2, name: str = "civicml-record") -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._closed = False

    def submit(self, job: Callable[..., Any], /, *args: Any) -> None:
        """Queue ``job(*args)``; blocks while ``max_pending`` jobs are waiting.

        Raises:
            RuntimeError: The recorder is closed.
        """
        if self._closed:
            raise RuntimeError("the recorder is closed")
        self._slots.acquire()
        try:
            self._pool.submit(self._run, job, args)
        except BaseException:
            self._slots.release()
            raise

    def call(self, job: Callable[..., T], /, *args: Any) -> Future[T]:
        """Queue ``job(*args)`` (after the jobs queued before it) and return its future: its
        result, or its error, goes to the caller who waits for it, not to :meth:`check`."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        return self._pool.submit(job, *args)

    def check(self) -> None:
        """Raise the first error a job raised so far (nothing when none did)."""
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def close(self, *, raise_error: bool = True) -> None:
        """Wait for every queued job; then raise the first error (unless ``raise_error`` is
        false: the caller is already failing)."""
        self._closed = True
        self._pool.shutdown(wait=True)
        if raise_error:
            self.check()

    def _run(self, job: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            job(*args)
        except BaseException as err:
            with self._lock:
                if self._error is None:
                    self._error = err
        finally:
            self._slots.release()
