"""The PostgreSQL fast path of database sources: ``COPY (query) TO STDOUT`` into Arrow.

Fetching rows as Python objects costs more than everything else an extraction does. On
PostgreSQL (psycopg 3) the same query — the table's ``SELECT`` or the user's, with the
watermark condition bound by psycopg — is run as ``COPY … TO STDOUT (FORMAT csv)`` and the
stream is parsed by Arrow's CSV reader in blocks, with each column's type taken from the
query's own result description (so nothing is guessed): integers ``int64``, ``real`` / ``double``
/ ``numeric`` ``double``, ``boolean``, ``date``, ``timestamp`` (``timestamptz`` in UTC) and text;
every other type (JSON, arrays, UUID, intervals, ``bytea``) as its PostgreSQL text form. The
session runs read-only, in UTC, with ISO dates. Memory stays bounded by a block.

A NULL is what ``COPY`` writes for it, an unquoted empty field; an empty text is ``""``. Nothing
else is null: not the text ``NULL`` or ``NA``, not the number ``NaN`` (Arrow's default null
markers, which turned them into nulls before).

**Why not iterate the ``Copy`` object.** The server sends ``COPY`` output one message per row,
and psycopg's ``Copy`` iterator hands them over one by one through its generic wait machinery:
about a microsecond and a half of interpreter time per row, more than the server takes to send
it (the read half of a million-row extraction was twice the ``COPY`` alone, bound by that loop).
:class:`_CopyOut` starts and ends the ``COPY`` through psycopg (binding, the cancel on an error)
and in between drains the rows with ``PGconn.get_copy_data`` straight into one ``bytearray``:
a few hundred nanoseconds a row, no object kept per row, the interpreter lock released while it
waits for the socket — so the parse, the profile and the Parquet writer keep the other core.
The bytes are the same bytes, in the same order; so are the batches parsed from them.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

__all__ = ["arrow_type", "copy_batches"]

_TYPES: dict[int, Any] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
    26: pa.int64(),
    700: pa.float64(),
    701: pa.float64(),
    1700: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
_BLOCK = 4 << 20
#: How often a read waiting for the server looks whether the consumer stopped.
_WAKE_S = 0.2


def arrow_type(oid: int) -> Any:
    """The Arrow type a column of PostgreSQL type ``oid`` is read as (text when not listed)."""
    return _TYPES.get(oid, pa.string())


class _Stopped(Exception):
    """The consumer stopped reading while a read waited for the server."""


class _CopyOut(io.RawIOBase):
    """The rows of a ``COPY … TO STDOUT`` in progress on ``pgconn`` as a readable file for
    Arrow's CSV reader: ``read(n)`` drains whole rows into a buffer until it holds ``n`` bytes
    (or the ``COPY`` ended), and keeps what is left over for the next call.

    At the end of the rows it reads the ``COPY``'s own result, so that psycopg finds the
    connection idle when its ``copy()`` block ends. Arrow reads ahead on a thread of its own:
    an error there (a ``COPY`` that failed after its first rows, a lost connection) ends the
    stream and waits in :attr:`error` for the consumer's thread (:meth:`check`) — an exception
    raised into Arrow's read-ahead can leave it behind, to deadlock Arrow's thread pools at exit;
    :meth:`close` waits for a read in progress (and stops one waiting for the server) so that
    nothing else touches the connection afterwards — psycopg's cancel, closing it.
    """

    def __init__(self, pgconn: Any, encoding: str) -> None:
        self._pgconn = pgconn
        self._encoding = encoding
        self._selector = selectors.DefaultSelector()
        self._selector.register(pgconn.socket, selectors.EVENT_READ)
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stopped = False
        self.ended = False
        self.error: Exception | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = -1 if size is None else size
        with self._lock:
            if self._stopped or self.error is not None:
                return b""
            try:
                if not self.ended and (want < 0 or len(self._buffer) < want):
                    self._fill(want)
            except _Stopped:
                return b""
            except Exception as err:  # raised on the consumer's thread by check()
                self.error = err
                return b""
            buffer = self._buffer
            if want < 0 or len(buffer) <= want:
                data = bytes(buffer)
                buffer.clear()
                return data
            with memoryview(buffer) as view:
                data = bytes(view[:want])
            del buffer[:want]
            return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def check(self) -> None:
        """Raise the error that ended the stream, if one did."""
        if self.error is not None:
            raise self.error

    def at_end(self) -> bool:
        """Whether the ``COPY`` sent no row at all (waits for the first)."""
        with self._lock:
            if not self._buffer and not self.ended:
                self._fill(1)
            return not self._buffer

    def close(self) -> None:
        self._stopped = True
        with self._lock:
            self._selector.close()
        super().close()

    def _fill(self, want: int) -> None:
        """Append rows to the buffer until it holds ``want`` bytes (all, when negative)."""
        get, buffer, pgconn = self._pgconn.get_copy_data, self._buffer, self._pgconn
        while want < 0 or len(buffer) < want:
            nbytes, row = get(1)
            while nbytes > 0:  # every row libpq holds (its buffer is bounded), unchecked
                buffer += row
                nbytes, row = get(1)
            if nbytes == 0:  # no whole row received yet: wait for the socket
                self._wait()
                pgconn.consume_input()
            else:  # -1: the rows ended (-2 is raised by psycopg)
                self._finish()
                return

    def _wait(self) -> None:
        while not self._selector.select(_WAKE_S):
            if self._stopped:
                raise _Stopped

    def _finish(self) -> None:
        """Read the ``COPY``'s result; raise psycopg's error for it when it failed."""
        from psycopg import errors, pq

        self.ended = True
        pgconn = self._pgconn
        results = []
        while True:
            pgconn.consume_input()
            while pgconn.is_busy():
                self._wait()
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            results.append(result)
        for result in results:
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise errors.error_from_result(result, encoding=self._encoding)


def copy_batches(
    raw: Any, sql: str, params: Any, watermark: str | None
) -> tuple[Any, Iterator[Any], list[Any]]:
    """Start ``COPY (sql) TO STDOUT`` on the psycopg connection ``raw``.

    Returns:
        The Arrow schema, the record batches (read once), and a one-item list that holds the
        largest ``watermark`` value read so far (None before any row).
    """
    cur = raw.cursor()
    cur.execute("SET TIME ZONE 'UTC'")
    cur.execute("SET DateStyle = 'ISO, YMD'")
    cur.execute(f"SELECT * FROM ({sql}) AS civicml_probe LIMIT 0", params)
    names = [d.name for d in cur.description]
    schema = pa.schema([pa.field(d.name, arrow_type(d.type_code)) for d in cur.description])
    high: list[Any] = [None]

    def batches() -> Iterator[Any]:
        with (
            cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params),
            contextlib.closing(_CopyOut(raw.pgconn, raw.info.encoding)) as stream,
        ):
            if stream.at_end():
                return
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, block_size=_BLOCK),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={f.name: f.type for f in schema},
                    true_values=["t"],
                    false_values=["f"],
                    null_values=[""],  # PostgreSQL's NULL; not Arrow's "NA", "NULL", "nan", …
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            try:
                for batch in reader:
                    if watermark is not None and batch.num_rows:
                        value = pc.max(batch.column(names.index(watermark))).as_py()
                        if value is not None and (high[0] is None or value > high[0]):
                            high[0] = value
                    yield batch
            except Exception:
                stream.check()  # the stream's own error is the cause
                raise
            finally:
                if not stream.ended:  # stopped early: end the stream, then the read-ahead
                    stream.close()
                    _drain(reader)
            stream.check()

    return schema, batches(), high


def _drain(reader: Any) -> None:
    """Read a CSV reader whose stream was closed to its end: its read-ahead, on Arrow's threads,
    ends here instead of lingering (one left behind deadlocks Arrow's thread pools at exit)."""
    with contextlib.suppress(Exception):  # a cut last row; the error that stopped the read
        for _ in reader:
            pass
