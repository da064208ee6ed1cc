"""The shadow worker: run by path (``python -I -B .../_shadow_worker.py``), never imported.

It answers an endpoint's shadow copies in a process of its own, so the shadow model's work
never takes the serving process's interpreter lock from a live request
(:mod:`civicml.serving.shadow`). It loads the shadow's files the way the server does — a
directory the server filled with the version's verified files (each hashed against the
registry as it was copied), read by :meth:`TabularModel.load
<civicml.training.TabularModel.load>`: a skops file with an allowlist of types, never a
pickle — and predicts with the same code as the server (:class:`~civicml.serving.runtime
.LoadedModel`: its fast path, or the pipeline).

The protocol is the sandbox worker's (:mod:`civicml.serving._sandbox_worker`): on stdin/stdout
each message is a 4-byte big-endian length and UTF-8 JSON. The worker first answers
``{"ok": true}`` (or ``{"ok": false, "error": ...}``), then reads ``{"copies": [rows, ...]}``
(each copy the records of one live request) and answers ``{"ok": true, "answers": [...]}``,
one per copy in order: ``{"predictions": [...], "probabilities": [[...]] | null,
"latency_ns": n}`` (the copy's own check and prediction time), ``{"error": "invalid_input"}``
or ``{"error": "model_error", "message": ...}``. End of input ends it; so does the server's
death (the parent-death signal), so a worker never outlives its server.

Arguments: the model directory and ``{"version_id", "model_name", "version"}`` as JSON.
"""

from __future__ import annotations

import ctypes
import json
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def _read(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return json.loads(stream.read(size))


def _plain(value: Any) -> Any:
    """NumPy scalars (a model's class labels) as the Python values JSON carries."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write(stream: Any, message: dict[str, Any]) -> None:
    data = json.dumps(message, default=_plain).encode("utf-8")
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _failure(err: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(err).__name__}: {str(err)[:300]}"}


def _load(directory: Path, about: dict[str, Any]) -> Any:
    from civicml.serving.runtime import LoadedModel
    from civicml.training import TabularModel
    from civicml.training.model import MANIFEST_FILE

    found = sorted(p.parent for p in directory.rglob(MANIFEST_FILE))
    if len(found) != 1:
        raise ValueError(f"expected one {MANIFEST_FILE} among the model files, found {len(found)}")
    model = TabularModel.load(found[0])
    classification = model.task == "classification"
    return LoadedModel(
        version_id=str(about["version_id"]),
        model_name=str(about["model_name"]),
        version=int(about["version"]),
        model=model,
        classes=list(model.classes_) if classification else [],
        classification=classification,
    )


def _answer(loaded: Any, rows: Any) -> dict[str, Any]:
    from civicml.core.errors import InvalidInputError
    from civicml.serving._checks import check_keys

    started = time.perf_counter_ns()
    try:
        if isinstance(rows, list):
            check_keys(rows, loaded.model.signature)
        predictions, probabilities = loaded.predict(loaded.prepare(rows))
    except InvalidInputError:
        return {"error": "invalid_input"}
    except Exception as err:
        return {"error": "model_error", "message": f"{type(err).__name__}: {str(err)[:300]}"}
    latency = time.perf_counter_ns() - started
    return {"predictions": predictions, "probabilities": probabilities, "latency_ns": latency}


def main() -> int:
    if sys.platform == "linux":  # die with the server, even while predicting
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    directory, about = Path(sys.argv[1]), json.loads(sys.argv[2])
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a library that prints cannot corrupt the protocol
    try:
        loaded = _load(directory, about)
    except BaseException as err:  # every failure is reported to the parent
        _write(out, _failure(err))
        return 4
    _write(out, {"ok": True})
    while (request := _read(inp)) is not None:
        try:
            answers = [_answer(loaded, rows) for rows in request["copies"]]
            _write(out, {"ok": True, "answers": answers})
        except (KeyError, TypeError, ValueError) as err:
            _write(out, _failure(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
