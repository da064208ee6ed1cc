"""The capture writer's spool process, seen from the server (:mod:`._capture_worker` is the
process itself; its docstring has the protocol).

The writer's thread hands each batch of events over with one pipe write and waits for nothing:
the process formats the lines, seals and writes the spool files, and says when it closed one;
a reader thread of the server's takes that word and stores the file (the writer's
:meth:`~civicml.serving.capture.CaptureWriter._store`), and answers each ``opened`` of a sealed
file with the key for a file to come (the process never holds a key-encryption key).

Started on the first batch; until it says ``ready`` (about half a second: it imports the format
module only), and after it failed, :meth:`SpoolProcess.hand_over` hands nothing over and the
writer's thread formats and writes the batch itself, so no event waits for it. A process that
does not take a batch within :data:`HAND_OVER_TIMEOUT_S` (hung), or ends, is killed; the files
it wrote are stored as a dead process's (the writer's recovery), the batch it did not take is
written by the thread, and the next batch starts a new process. What a process took but had not
written when it died (at most the batch or two of its last moments) is lost, as capture in a
server killed at that moment is; nothing is captured twice. After :data:`MAX_FAILURES` failures
in a row the thread writes everything (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import math
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from civicml.serving._capture_format import CaptureEvent, CaptureLines, event_fields
from civicml.store.crypto import KeyProvider, new_spool_key

log = logging.getLogger("civicml.serving.capture")

#: Longest the process may take to start (import) and to take one batch or flush its files.
START_TIMEOUT_S = 60.0
HAND_OVER_TIMEOUT_S = 10.0
#: Failures of the process in a row after which the writer's thread writes every event.
MAX_FAILURES = 3
#: Keys for sealed files the process holds ahead (one more is sent for each file it opens).
KEYS_AHEAD = 4
_WORKER = Path(__file__).with_name("_capture_worker.py")
#: What the process may name a spool file (the writer's recovery parses these names too).
_NAME = re.compile(r"^[0-9]+-[0-9A-Za-z_]+-[0-9A-Za-z_]+-[0-9]{10}-[0-9a-f]{32}\.jsonl$")
_MAX_LINE = 4096


class _Child:
    """One spool process, its pipes and its reader thread."""

    def __init__(self, owner: SpoolProcess, process: subprocess.Popen[bytes]) -> None:
        self.owner = owner
        self.process = process
        self.ready = threading.Event()
        self.started = time.monotonic()
        self.closing = False
        self.ended = threading.Event()
        assert process.stdin is not None  # noqa: S101 - made with pipes
        self.stdin = process.stdin.fileno()
        os.set_blocking(self.stdin, False)
        self.send_lock = threading.Lock()
        #: The rest of a message the event loop is sending (:meth:`send_nowait`); while there
        #: is one, it holds ``send_lock``.
        self.unsent: memoryview | None = None
        self.unsent_loop: asyncio.AbstractEventLoop | None = None
        #: Set (holding ``send_lock``) once the process ended and its stdin was closed: nothing
        #: is written to that descriptor's number again.
        self.gone = False
        self.flushed: dict[int, threading.Event] = {}
        self.reader = threading.Thread(target=self._read, name="civicml-capture-spool", daemon=True)
        self.reader.start()

    def send(self, message: Any, timeout: float) -> None:
        """One message (marshalled here) whole; OSError (and the process killed) when it is
        not taken within ``timeout`` seconds or the process is gone."""
        self.send_bytes(marshal.dumps(message), timeout)

    def send_bytes(self, payload: bytes, timeout: float) -> None:
        """:meth:`send`, the message marshalled already."""
        deadline = time.monotonic() + timeout
        if not self.send_lock.acquire(timeout=timeout):  # the loop's batch still going out
            self.kill()
            raise TimeoutError(f"no batch taken within {timeout:g} s")
        try:
            if self.gone:
                raise BrokenPipeError("the process ended")
            self._write_all(memoryview(struct.pack(">I", len(payload)) + payload), deadline)
        finally:
            self.send_lock.release()

    def _write_all(self, view: memoryview, deadline: float) -> None:
        poll: select.poll | None = None  # not select(): a busy server's descriptors pass 1024
        while view:
            try:
                view = view[os.write(self.stdin, view) :]
                continue
            except BlockingIOError:
                pass
            if poll is None:
                poll = select.poll()
                poll.register(self.stdin, select.POLLOUT)
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(math.ceil(left * 1000)):
                self.kill()
                raise TimeoutError("the process took no batch within its time")

    def send_nowait(self, payload: bytes, loop: asyncio.AbstractEventLoop) -> bool:
        """On the event loop: send one marshalled message without waiting; False when it
        cannot start now (another thread is sending, the pipe is full): nothing was sent.
        What the pipe does not take at once goes out from the loop as the process reads
        (:meth:`_continue`); meanwhile other senders wait for it."""
        if not self.send_lock.acquire(blocking=False):
            return False
        if self.gone:
            self.send_lock.release()
            return False
        frame = struct.pack(">I", len(payload)) + payload
        try:
            sent = os.write(self.stdin, frame)
        except BlockingIOError:
            self.send_lock.release()
            return False
        except OSError:
            self.send_lock.release()
            raise
        if sent == len(frame):
            self.send_lock.release()
            return True
        self.unsent = memoryview(frame)[sent:]
        self.unsent_loop = loop
        loop.add_writer(self.stdin, self._continue)
        return True

    def _continue(self) -> None:
        """(The event loop, the pipe writable.) More of the message :meth:`send_nowait` began;
        a process gone takes nothing more (its reader replaces it)."""
        unsent = self.unsent
        if unsent is None:  # pragma: no cover - removed with the message
            return
        try:
            unsent = unsent[os.write(self.stdin, unsent) :]
        except BlockingIOError:
            return
        except OSError:
            unsent = unsent[:0]
        self.unsent = unsent
        if not unsent:
            self._sent()

    def _sent(self) -> None:
        loop, self.unsent, self.unsent_loop = self.unsent_loop, None, None
        if loop is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):  # a closed loop
                loop.remove_writer(self.stdin)
        self.send_lock.release()

    def settle(self, timeout: float) -> None:
        """Write out what :meth:`send_nowait` left, waiting here (on the loop's thread, or once
        the loop stopped): before the writer closes."""
        unsent = self.unsent
        if unsent is None:
            return
        try:
            self._write_all(unsent, time.monotonic() + timeout)
        except OSError:
            pass  # the process is gone, or was killed: its reader stores what it wrote
        finally:
            self._sent()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def _read(self) -> None:
        stdout: IO[bytes] | None = self.process.stdout
        try:
            while stdout is not None:
                line = stdout.readline(_MAX_LINE)
                if not line:
                    break
                self._on(line.decode("ascii", "replace").strip())
        except (OSError, ValueError):
            pass
        finally:
            self._ended()

    def _on(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        owner = self.owner
        if word == "ready":
            if owner.keys is not None:
                for _ in range(KEYS_AHEAD):
                    self._send_key()
            self.ready.set()
        elif word == "opened":
            if owner.keys is not None:
                self._send_key()
        elif word == "closed" and _NAME.match(rest):
            owner.on_closed(owner.directory / rest)
        elif word == "flushed" and rest.isdigit():
            done = self.flushed.pop(int(rest), None)
            if done is not None:
                done.set()
        elif word == "failed" and rest.isdigit():
            owner.failed += int(rest)
            log.warning("the capture spool process could not format or write %s event(s)", rest)
        else:
            log.warning("the capture spool process said something unexpected; it is replaced")
            self.kill()

    def _send_key(self) -> None:
        keys = self.owner.keys
        assert keys is not None  # noqa: S101 - asked for sealed files only
        if self.closing:
            return  # its input is closed: it opens no more files
        try:
            key = new_spool_key(keys)
            self.send(("k", key.header, key.data_key, key.file_id), HAND_OVER_TIMEOUT_S)
        except Exception:
            log.exception("no key for the capture spool process's next file; it is replaced")
            self.kill()

    def _ended(self) -> None:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.wait()
        # the loop's message, if one was going out, ended with the process (EPIPE)
        locked = self.send_lock.acquire(timeout=HAND_OVER_TIMEOUT_S)
        self.gone = True
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        if locked:
            self.send_lock.release()
        for done in list(self.flushed.values()):
            done.set()  # no file of it is open any more: nothing to wait for
        self.ended.set()
        self.owner.on_ended(self, code)


class SpoolProcess:
    """The spool process of one capture writer, replaced when it fails.

    Args:
        directory: The spool directory.
        max_bytes: Size at which the process closes a spool file.
        max_age_s: Age (seconds) at which it closes one.
        keys: The key provider when spool files are sealed; None: plain.
        on_closed: Stores one closed spool file (called in the reader thread).
        recover: Stores the files of processes that died (called in the reader thread once
            a process ended).
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        keys: KeyProvider | None,
        on_closed: Callable[[Path], None],
        recover: Callable[[], None],
    ) -> None:
        self.directory = directory
        self.keys = keys
        self.on_closed = on_closed
        self._recover = recover
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._child: _Child | None = None
        self._token = 0
        self.failures = 0
        self.disabled = False
        #: Events handed over to a process (the others: written by the writer's thread).
        self.handed = 0
        #: Events a process reported it could not format or write.
        self.failed = 0

    def ready(self) -> bool:
        """Whether a process is up to take batches (without starting one)."""
        child = self._child
        return child is not None and child.ready.is_set()

    def hand_over(
        self, events: list[CaptureEvent | CaptureLines]
    ) -> list[CaptureEvent | CaptureLines]:
        """Send ``events`` to the process; those it did not take, for the writer's thread (all
        of them while it starts, after it failed, or when disabled)."""
        child = self._usable()
        if child is None:
            return events
        payload, count, left = _batch(events)
        if payload is None:
            return events
        try:
            child.send_bytes(payload, HAND_OVER_TIMEOUT_S)
        except OSError as err:
            self._fail(child, str(err) or type(err).__name__)
            return events
        self.handed += count
        self.failures = 0
        return left

    def hand_over_nowait(
        self, events: list[CaptureEvent | CaptureLines], loop: asyncio.AbstractEventLoop
    ) -> list[CaptureEvent | CaptureLines]:
        """:meth:`hand_over` on the event loop, never waiting: the events are sent at once or
        returned (for the writer's thread) — while the process starts, when another thread is
        sending to it, or when its pipe is full."""
        child = self._child
        if child is None or not child.ready.is_set():
            return events
        payload, count, left = _batch(events)
        if payload is None:
            return events
        try:
            if not child.send_nowait(payload, loop):
                return events
        except OSError as err:
            self._fail(child, str(err) or type(err).__name__)
            return events
        self.handed += count
        self.failures = 0
        return left

    def settle(self, timeout: float = HAND_OVER_TIMEOUT_S) -> None:
        """Finish sending the event loop's last batch (:meth:`hand_over_nowait`), waiting here;
        call it on the loop's thread, or once the loop stopped."""
        child = self._child
        if child is not None:
            child.settle(timeout)

    def flush(self, timeout: float = HAND_OVER_TIMEOUT_S) -> bool:
        """Have the process close its spool files and wait until they are stored; True when
        done (or there is no process)."""
        child = self._child
        if child is None or not child.ready.is_set():
            return True
        self._token += 1
        done = threading.Event()
        child.flushed[self._token] = done
        try:
            child.send(("f", self._token), timeout)
        except OSError as err:
            self._fail(child, str(err) or type(err).__name__)
            child.ended.wait(timeout)  # its files stored (recovered)
            return False
        if done.wait(timeout):
            return True
        self._fail(child, f"its files not closed within {timeout:g} s")
        return False

    def close(self, timeout: float = 10.0) -> None:
        """End the process: flushed first (what it was sent written, the keys its files wait
        for still sent), then the end of its input ends it; killed if it does not end within
        ``timeout`` seconds."""
        self.flush(timeout)
        child, self._child = self._child, None
        if child is None:
            return
        child.closing = True
        sending = child.send_lock.acquire(timeout=timeout)  # the loop's last batch written
        child.gone = True
        with contextlib.suppress(OSError):
            if child.process.stdin is not None:
                child.process.stdin.close()
        if sending:
            child.send_lock.release()
        if not child.ended.wait(timeout):
            child.kill()
        child.reader.join(timeout)

    def on_ended(self, child: _Child, code: int | None) -> None:
        """A process ended (reader thread): its files are a dead process's now: stored."""
        if not child.closing:
            if self._child is child:
                self._fail(child, f"it ended (exit status {code})")
            log.warning(
                "the capture spool process ended; events it had taken but not yet written "
                "are lost, the files it wrote are stored"
            )
        try:
            self._recover()
        except Exception:
            log.exception("storing the capture spool files of an ended process failed")

    def _usable(self) -> _Child | None:
        if self.disabled:
            return None
        child = self._child
        if child is None:
            try:
                self._child = _Child(self, self._spawn())
            except OSError as err:  # no process to be had (limits, memory)
                self._fail(None, f"it could not be started: {err.strerror or err}")
            return None
        if child.ready.is_set():
            return child
        if time.monotonic() - child.started > START_TIMEOUT_S:
            self._fail(child, f"it did not start within {START_TIMEOUT_S:g} s")
        return None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {"PATH": os.defpath, "LANG": "C.UTF-8"}
        mode = "plain" if self.keys is None else "sealed"
        command = [sys.executable, "-I", "-B", str(_WORKER), str(self.directory)]
        command += [str(self._max_bytes), repr(self._max_age_s), mode]
        return subprocess.Popen(  # noqa: S603 - a fixed command, no shell
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )

    def _fail(self, child: _Child | None, reason: str) -> None:
        if child is not None:
            child.kill()  # hung or wrong: no grace; its reader stores what it wrote
            if self._child is not child:
                return  # counted already
            self._child = None
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.disabled = True
            log.error(
                "the capture spool process failed %d times in a row (%s); the capture "
                "writer's thread writes every event from now on",
                self.failures, reason,
            )  # fmt: skip
        else:
            log.warning(
                "the capture spool process failed (%s); the writer's thread writes this "
                "batch and a new process starts", reason,
            )  # fmt: skip


def _batch(
    events: list[CaptureEvent | CaptureLines],
) -> tuple[bytes | None, int, list[CaptureEvent | CaptureLines]]:
    """The batch message of ``events`` (None: none of them goes), how many go, and those the
    writer's thread writes itself: records in a DataFrame, and values other than JSON's own
    (a NumPy scalar, which ``marshal`` would write as its bytes)."""
    items: list[Any] = []
    left: list[CaptureEvent | CaptureLines] = []
    for event in events:
        if isinstance(event, CaptureLines):
            items.append((event.project_id, event.endpoint_id, event.hour, event.data))
            continue
        fields = event_fields(event)
        if fields is None or not _plain_fields(fields):
            left.append(event)
        else:
            items.append(fields)
    if not items:
        return None, 0, events
    return marshal.dumps(("b", items)), len(items), left


_SCALARS = frozenset({str, int, float, bool, type(None)})
_LATENCY = frozenset({float, type(None)})


def _plain_fields(fields: tuple[Any, ...]) -> bool:
    """:func:`_plain` for the fields of an event that may hold other values: the records (when
    they go themselves), predictions, probabilities, classes, inference ids and latency —
    straight-line checks of the usual flat lists, on the event loop for every captured request
    (a model's classes, the same list for all its events, are checked once)."""
    records, predictions, probabilities, classes, ids = fields[8:13]
    if type(fields[17]) not in _LATENCY:
        return False
    if type(records) is not int and not _plain(records):
        return False
    if classes is not _CHECKED_CLASSES[0]:
        if not _plain(classes):
            return False
        _CHECKED_CLASSES[0] = classes  # held here, so its id is not another list's
    if type(predictions) is not list or type(ids) is not list:
        return False
    for value in predictions:
        if type(value) not in _SCALARS:
            return False
    for value in ids:
        if type(value) is not str:
            return False
    if probabilities is not None:
        if type(probabilities) is not list:
            return False
        for row in probabilities:
            if type(row) is not list:
                return False
            for value in row:
                if type(value) not in _SCALARS:
                    return False
    return True


_CHECKED_CLASSES: list[Any] = [None]


def _plain(value: Any) -> bool:
    """Whether ``value`` holds JSON's values only (Python's own types, not subclasses):
    what ``marshal`` writes and reads back as it was."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False
