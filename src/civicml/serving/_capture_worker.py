"""The capture spool process: run by path (``python -I -B .../_capture_worker.py``), never imported.

A server's capture writer (:class:`~civicml.serving.capture.CaptureWriter`, with
``serving_capture_format`` "process") hands the events of each moment to this process, which
formats their capture lines with :func:`~civicml.serving.capture.capture_lines` — the same
function the writer's thread would run, so the lines are the same, byte for byte — and appends
them to spool files of its own, sealed when encryption at rest is on. Formatting and writing
are what capture costs; in the server they took the interpreter lock from the event loop
answering live requests. Here they take none, and the writer sends a batch and waits for
nothing.

Arguments: the spool directory, the size (bytes) and age (seconds) at which a spool file is
closed, and ``sealed`` or ``plain``. A spool file is named
``<pid>-<project id>-<endpoint id>-<yyyymmddhh>-<random>.jsonl`` (this process's pid: when it
dies, its files are a dead process's, which the writer stores) and closed when it reaches the
size, the age, or its records' hour changes; each batch's lines of one file are one write (one
sealed frame), so a crash tears at most the last, which readers drop (sealed) and which a
failed write takes back (plain).

The protocol. On stdin, frames of a 4-byte big-endian length and a ``marshal`` payload, written
by the server that started this process and read by nothing else:

- ``("b", items)``: a batch; each item the fields of one event
  (:func:`~civicml.serving._capture_format.event_fields`) or a 4-tuple
  ``(project id, endpoint id, hour, lines)`` formatted elsewhere (the shadow's worker), appended
  as it is;
- ``("k", header, data_key, file_id)``: the key of one sealed file to come (the server wraps
  each file's data key; this process never holds a key-encryption key). A sealed file takes one
  when it opens; the server sends another for each ``opened`` it reads, a few ahead;
- ``("f", token)``: close every spool file now, then say ``flushed``.

On stdout, one ASCII line per message: ``ready`` once it imported what it needs; ``opened
<name>`` and ``closed <name>`` for each spool file (a closed one is the server's to store);
``flushed <token>``; ``failed <count>`` for events it could not format or write (logged by the
server; the rest of the batch is written). Nothing this process sends is unmarshalled,
unpickled or evaluated. End of input closes the open files (saying so) and ends it; the server's
death (the parent-death signal) ends it too, leaving its files to the next writer's recovery.
SIGINT and SIGTERM are ignored: they are the server's to act on.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import marshal
import os
import select
import signal
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_HEAD = struct.Struct(">I")
#: Longest a sealed file waits for its key from the server before its lines are given up.
KEY_WAIT_S = 10.0


def _load(name: str, path: Path) -> Any:
    """A module of civicml's, loaded from its file: importing it by name would run its
    package's ``__init__`` (services, pandas, pyarrow: seconds of start-up on a busy server's
    other core) for modules that need the standard library (and ``cryptography``) only."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - the files are ours
            raise ImportError(f"civicml's module {path.name} is missing")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


class _Inbox:
    """Frames from stdin, with a wait (for the age of spool files) and a place for frames put
    aside while a sealed file waits for its key."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self.deferred: collections.deque[Any] = collections.deque()

    def next(self, timeout: float, *, fresh: bool = False) -> Any:
        """The next message (one put aside first, unless ``fresh``: from the input only), or
        None when none came within ``timeout`` seconds; EOFError at the end of input."""
        if self.deferred and not fresh:
            return self.deferred.popleft()
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buffer) >= 4:
                (size,) = _HEAD.unpack_from(self._buffer)
                if len(self._buffer) >= 4 + size:
                    payload = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    return marshal.loads(payload)  # noqa: S302 - written by the parent only
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:
                raise EOFError
            self._buffer += chunk


class _Spool:
    __slots__ = ("buffer", "count", "fd", "name", "opened", "sealer", "size")

    def __init__(self, name: str, fd: int, sealer: Any) -> None:
        self.name = name
        self.fd = fd
        self.sealer = sealer
        self.opened = time.monotonic()
        self.size = 0
        self.buffer: list[bytes] = []
        self.count = 0  # events in the buffer


class _Spools:
    def __init__(self, directory: Path, max_bytes: int, max_age_s: float, seal: Any, say: Any):
        self._dir = directory
        self._max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._seal = seal  # the spool_seal module, or None: plain files
        self._say = say
        self._open: dict[tuple[str, str], tuple[str, _Spool]] = {}  # (project, endpoint) -> hour
        self.keys: collections.deque[tuple[bytes, bytes, bytes]] = collections.deque()
        self.failed = 0

    def add(self, inbox: _Inbox, project_id: str, endpoint_id: str, hour: str, lines: bytes,
            events: int) -> None:  # fmt: skip
        key = (project_id, endpoint_id)
        found = self._open.get(key)
        if found is not None and found[0] != hour:
            self.close(key)
            found = None
        if found is None:
            spool = self._create(inbox, project_id, endpoint_id, hour)
            if spool is None:
                self.failed += events
                return
            self._open[key] = (hour, spool)
        else:
            spool = found[1]
        spool.buffer.append(lines)
        spool.count += events
        spool.size += len(lines)
        if spool.size >= self._max_bytes:
            self.close(key)

    def _create(self, inbox: _Inbox, project_id: str, endpoint_id: str, hour: str) -> _Spool | None:
        sealer = None
        header = b""
        if self._seal is not None:
            deadline = time.monotonic() + KEY_WAIT_S
            while not self.keys:  # the server sends one for each file opened: it is on its way
                message = inbox.next(max(0.0, deadline - time.monotonic()), fresh=True)
                if message is None:
                    return None
                if message[0] == "k":
                    self.keys.append(message[1:])
                else:
                    inbox.deferred.append(message)
            header, data_key, file_id = self.keys.popleft()
            sealer = self._seal.FrameSealer(data_key, file_id)
        name = f"{os.getpid()}-{project_id}-{endpoint_id}-{hour}-{uuid.uuid4().hex}.jsonl"
        try:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:  # a full disk, a directory gone: these lines are counted as failed
            return None
        if header and not _write(fd, header):
            os.close(fd)
            os.unlink(self._dir / name)
            return None
        self._say(f"opened {name}")
        return _Spool(name, fd, sealer)

    def write_out(self) -> None:
        """Each open file's buffered lines in one write (one sealed frame); a write that fails
        (a full disk) is taken back, so the file holds whole records (and frames) only, and
        the file is closed: the next lines go to a new one."""
        for key, (_, spool) in list(self._open.items()):
            if not self._write_out(spool):
                self.close(key)

    def _write_out(self, spool: _Spool) -> bool:
        if not spool.buffer:
            return True
        data = b"".join(spool.buffer)
        if spool.sealer is not None:
            data = spool.sealer.seal(data)
        written = _write(spool.fd, data)
        if not written:
            self.failed += spool.count
        spool.buffer.clear()
        spool.count = 0
        return written

    def close(self, key: tuple[str, str]) -> None:
        _, spool = self._open.pop(key)
        self._write_out(spool)
        os.close(spool.fd)
        self._say(f"closed {spool.name}")

    def close_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, s) in self._open.items() if now - s.opened >= self.max_age_s]:
            self.close(key)

    def close_all(self) -> None:
        for key in list(self._open):
            self.close(key)


def _write(fd: int, data: bytes) -> bool:
    """Append ``data`` whole, or not at all (what a failed write left is cut off again)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        return False
    return True


def _batch(fmt: Any, spools: _Spools, inbox: _Inbox, items: list[Any]) -> None:
    for item in items:
        if len(item) == 4:  # lines formatted elsewhere
            project_id, endpoint_id, hour, lines = item
            spools.add(inbox, project_id, endpoint_id, hour, lines, lines.count(b"\n"))
            continue
        try:
            if not fmt.formattable(item):
                raise ValueError("records neither sent nor cut from their text")
            event = fmt.event_from_fields(item)
            lines = fmt.capture_lines(event)
            hour = fmt._second(event.time)[1]
        except Exception:  # the server logs the count; the batch goes on
            spools.failed += 1
            continue
        spools.add(inbox, event.project_id, event.endpoint_id, hour, lines, 1)
    spools.write_out()


def main() -> int:
    if sys.platform == "linux":  # die with the server
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Ctrl-C, and a SIGTERM sent to the server's whole process group (a service manager's
    # stop), are the server's to handle: it closes this process's input once the last batch
    # went out, and the files are closed and stored then; dying first would leave them to the
    # next start's recovery
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    directory, max_bytes, max_age_s, mode = sys.argv[1:5]
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed can corrupt the protocol
    here = Path(__file__).parent
    fmt = _load("civicml_capture_format", here / "_capture_format.py")
    seal = None
    if mode == "sealed":
        seal = _load("civicml_spool_seal", here.parent / "store" / "spool_seal.py")

    def say(line: str) -> None:
        out.write(line.encode("ascii") + b"\n")
        out.flush()

    spools = _Spools(Path(directory), int(max_bytes), float(max_age_s), seal, say)
    inbox = _Inbox(sys.stdin.fileno())
    tick = max(0.05, min(1.0, spools.max_age_s / 2))
    say("ready")
    while True:
        try:
            message = inbox.next(tick)
        except EOFError:
            spools.close_all()
            return 0
        if message is not None:
            kind = message[0]
            if kind == "b":
                try:
                    _batch(fmt, spools, inbox, message[1])
                except EOFError:  # the input ended while a sealed file waited for its key
                    spools.close_all()
                    return 0
            elif kind == "k":
                spools.keys.append(message[1:])
            elif kind == "f":
                spools.close_all()
                say(f"flushed {int(message[1])}")
        if spools.failed:
            say(f"failed {spools.failed}")
            spools.failed = 0
        spools.close_old()


if __name__ == "__main__":
    sys.exit(main())
