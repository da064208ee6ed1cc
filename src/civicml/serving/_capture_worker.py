"""The capture formatter: run by path (``python -I -B .../_capture_worker.py``), never imported.

A server's capture writer (:class:`~civicml.serving.capture.CaptureWriter`, with
``serving_capture_format`` "process") hands the events of a busy moment to this process, which
formats their capture lines with :func:`~civicml.serving.capture.capture_lines` — the same
function the writer would have run, so the lines are the same, byte for byte — and sends them
back; the writer only appends them. Formatting is most of what capture costs, and in the server
it is done in bursts by a thread that takes the interpreter lock from the event loop answering
live requests; here it takes none.

The protocol is the sandbox worker's framing (:mod:`civicml.serving.sandbox`): on stdin and
stdout each message is a 4-byte big-endian length and that many bytes. The worker first sends
``ready`` once it has imported what it needs. Each request is a ``marshal`` list of the events'
fields (:func:`~civicml.serving.capture.event_fields`, or None for an event the writer formats
itself), written by the server that started this process and read by nothing else; the answer
is the count of events (4 bytes), each event's size in bytes (4 bytes each; ``0xFFFFFFFF``:
not formatted here) and then the lines of every formatted event, back to back. The server
checks the answer (sizes adding up, one line per record) and formats a batch itself when it is
not right. Nothing this process sends is unmarshalled, unpickled or evaluated. End of input
ends it; so does the server's death (the parent-death signal).
"""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import struct
import sys
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def _send(stream: Any, data: bytes) -> None:
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _format_module() -> Any:
    """:mod:`civicml.serving._capture_format`, loaded from its file: importing it by name would
    run the serving package's ``__init__`` (its services, pandas, pyarrow: seconds of start-up
    on a busy server's other core) for a module that needs the standard library only."""
    name = "civicml_capture_format"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("_capture_format.py")
        )
        if spec is None or spec.loader is None:  # pragma: no cover - the file is ours
            raise ImportError("civicml's capture format module is missing")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def main() -> int:
    if sys.platform == "linux":  # die with the server
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed can corrupt the protocol
    module = _format_module()  # loaded before saying ready
    _send(out, b"ready")
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return 0
        (size,) = struct.unpack(">I", head)
        payload = inp.read(size)
        if len(payload) < size:
            return 0
        _send(out, module.format_answer(payload))


if __name__ == "__main__":
    sys.exit(main())
