"""The stages of an ingest overlapped on threads, with bounded memory between them.

Reading and parsing a file (:class:`Prefetch`), profiling and cutting row groups (the caller's
thread), writing Parquet (:class:`BackgroundWriter`) and storing its bytes as they are written
(:class:`BackgroundPut`) run at the same time: pyarrow's CSV, JSON
and Parquet readers and its Parquet writer release the GIL, so on two cores the slowest stage sets
the pace instead of the sum of the three. Nothing about the data changes: the batches reach the
caller in the order and with the boundaries the reader gave them, and the tables reach the
writer in the order they were submitted, so the Parquet bytes are those of the sequential ingest.

Memory stays bounded: the reader runs at most ``budget`` bytes of batches ahead of the caller,
and the writer holds one table queued besides the one it writes. An error on either thread is
raised on the caller's thread where the sequential ingest would have raised it (after the batches
read before it; at the next table submitted, or when the writer finishes).
"""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BackgroundPut", "BackgroundWriter", "Prefetch"]

_DONE = object()


class Prefetch:
    """Iterate ``source`` on a thread, up to ``budget`` bytes of items ahead of the consumer.

    Use as a context manager; leaving it (normally or by an error) stops the thread and closes
    ``source`` there, so a generator's ``finally`` blocks run before the caller closes the file
    the generator reads.

    Args:
        source: An iterator of record batches (or anything with ``nbytes``).
        budget: Bytes of items held for the consumer; one item larger than this still passes.
        name: The thread's name.
    """

    def __init__(self, source: Iterator[Any], budget: int, name: str = "civicml-read") -> None:
        self._source = source
        self._budget = max(1, budget)
        self._items: deque[tuple[Any, int]] = deque()
        self._held = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Prefetch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stopped = True
            self._items.clear()
            self._held = 0
            self._cond.notify_all()
        self._thread.join()

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._items and not self._done:
                self._cond.wait()
            if self._items:
                item, size = self._items.popleft()
                self._held -= size
                self._cond.notify_all()
                return item
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration

    def _run(self) -> None:
        try:
            for item in self._source:
                size = int(getattr(item, "nbytes", 0))
                with self._cond:
                    while self._held and self._held + size > self._budget and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        break
                    self._items.append((item, size))
                    self._held += size
                    self._cond.notify_all()
        except BaseException as err:  # handed to the consumer, raised on its thread
            with self._cond:
                self._error = err
        finally:
            close = getattr(self._source, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                with self._cond:
                    self._done = True
                    self._cond.notify_all()


class BackgroundWriter:
    """Call ``write(table)`` on a thread for each submitted table, in order, one queued at most.

    Use as a context manager and call :meth:`finish` at the end of the data: it waits for the
    writes and raises the first error one of them raised. After an error the remaining tables
    are dropped and the next :meth:`submit` raises it.

    Args:
        write: What writes one table (e.g. ``ParquetWriter.write_table`` with its row group size).
        name: The thread's name.
    """

    def __init__(self, write: Callable[[Any], None], name: str = "civicml-write") -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def submit(self, table: Any) -> None:
        """Queue ``table`` for writing (waits while the writer is one table behind)."""
        self._raise()
        self._queue.put(table)

    def finish(self) -> None:
        """Wait until every submitted table is written; raise the first write error."""
        self._close()
        self._raise()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_DONE)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while (table := self._queue.get()) is not _DONE:
            if self._error is None:  # after an error, drain so that submit never blocks
                try:
                    self._write(table)
                except BaseException as err:  # raised on the caller's thread
                    self._error = err
            del table


class _Aborted(Exception):
    """The writing side gave up: the reader's consumer must not keep what it read."""


class BackgroundPut:
    """Run ``put(stream)`` on a thread while the caller writes the stream's bytes (the artifact
    store storing a Parquet file as it is written), at most ``budget`` bytes in between.

    Use as a context manager; call :meth:`finish` after the last :meth:`write` for ``put``'s
    result. Leaving without :meth:`finish` (an error) makes the stream fail on ``put``'s thread,
    so ``put`` keeps nothing, and waits for it. An error of ``put`` is raised by the next
    :meth:`write` or by :meth:`finish`.

    Args:
        put: What reads the stream to its end (``ArtifactStore.put_stream``).
        budget: Bytes written and not yet read; :meth:`write` waits beyond it.
        name: The thread's name.
    """

    def __init__(
        self, put: Callable[[Any], Any], budget: int = 16 << 20, name: str = "civicml-store"
    ) -> None:
        self._put = put
        self._budget = max(1, budget)
        self._chunks: deque[Any] = deque()
        self._held = 0
        self._cond = threading.Condition()
        self._eof = False
        self._aborted = False
        self._done = False
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> BackgroundPut:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._thread.is_alive():
            return
        with self._cond:
            self._aborted = True
            self._chunks.clear()
            self._held = 0
            self._cond.notify_all()
        self._thread.join()

    def write(self, data: Any) -> None:
        """Hand ``data`` (bytes or a buffer, kept as it is: not to be changed after) to ``put``."""
        size = memoryview(data).nbytes
        with self._cond:
            while self._held and self._held + size > self._budget and not self._done:
                self._cond.wait()
            if self._done:  # put returned or failed before the end of the data
                self._raise()
                raise RuntimeError("the store stopped reading before the end of the data")
            self._chunks.append(data)
            self._held += size
            self._cond.notify_all()

    def finish(self) -> Any:
        """Mark the end of the data, wait for ``put`` and return what it returned."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        self._thread.join()
        self._raise()
        return self._result

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            self._result = self._put(_PipeReader(self))
        except BaseException as err:  # raised on the writer's thread
            self._error = err
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the data); waits for the writer."""
        parts: list[Any] = []
        wanted = size
        with self._cond:
            while wanted > 0:
                while not self._chunks and not self._eof and not self._aborted:
                    self._cond.wait()
                if self._aborted:
                    raise _Aborted("the data being stored was abandoned")
                if not self._chunks:  # the end of the data
                    break
                chunk = memoryview(self._chunks[0]).cast("B")
                if len(chunk) <= wanted:
                    self._chunks.popleft()
                    parts.append(chunk)
                    taken = len(chunk)
                else:
                    parts.append(chunk[:wanted])
                    self._chunks[0] = chunk[wanted:]
                    taken = wanted
                wanted -= taken
                self._held -= taken
                self._cond.notify_all()
        return b"".join(parts)


class _PipeReader(io.RawIOBase):
    """The reading end of a :class:`BackgroundPut`'s stream."""

    def __init__(self, pipe: BackgroundPut) -> None:
        super().__init__()
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self._pipe._read(1 << 20), b""))
        return self._pipe._read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._pipe._read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)
