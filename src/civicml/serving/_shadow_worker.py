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
``{"ok": true}`` (or ``{"ok": false, "error": ...}``), then reads ``{"copies": [rows, ...],
"capture": {...}}`` (each copy the records of one live request; ``capture`` what the capture
lines need that only the server knows, :func:`_capture_meta`) and answers each such message
with a frame that holds a 4-byte big-endian length, a JSON header of that length and then the
copies' capture lines as they go into the spool file. The header is ``{"ok": true, "outcomes":
[...], "latency": [...], "messages": [[i, text], ...], "lines": [[route, hour, size], ...]}``:
per copy in order its outcome (:data:`ANSWERED`, :data:`INVALID_INPUT`, :data:`MODEL_ERROR`,
:data:`NON_FINITE`) and the time its check and prediction took (ns, 0 unless answered); what
went wrong with a copy that failed (for the log, never captured); and the lines, in runs of
copies of one route and one hour (``yyyymmddhh``), each ``size`` bytes of what follows the
header. The lines are :func:`~civicml.serving.capture.capture_lines` of the events the server
would have built from the answers, byte for byte, so the server only appends them. End of input
ends it; so does the server's death (the parent-death signal), so a worker never outlives its
server.

Arguments: the model directory and ``{"version_id", "model_name", "version"}`` as JSON.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

from civicml.serving._sandbox_worker import _failure, _read  # the same protocol

_PR_SET_PDEATHSIG = 1


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


#: A copy's outcome: answered (counted with its latency), refused as invalid (4xx), the model
#: failed (5xx), or the model answered a non-finite number (5xx, captured as such).
ANSWERED, INVALID_INPUT, MODEL_ERROR, NON_FINITE = 0, 1, 2, 3
_ERRORS = {
    INVALID_INPUT: "invalid_input",
    MODEL_ERROR: "model_error",
    NON_FINITE: "non_finite_output",
}


def _answer(loaded: Any, rows: Any) -> tuple[int, list[Any], Any, int, str]:
    """(outcome, predictions, probabilities, latency ns, message) for one copy."""
    from civicml.core.errors import InvalidInputError
    from civicml.serving._checks import check_keys, non_finite_record

    started = time.perf_counter_ns()
    try:
        if isinstance(rows, list):
            check_keys(rows, loaded.model.signature)
        predictions, probabilities = loaded.predict(loaded.prepare(rows))
    except InvalidInputError:
        return INVALID_INPUT, [], None, 0, ""
    except Exception as err:
        return MODEL_ERROR, [], None, 0, f"{type(err).__name__}: {str(err)[:300]}"
    latency = time.perf_counter_ns() - started
    if non_finite_record(predictions, probabilities, loaded.classification) is not None:
        return NON_FINITE, predictions, probabilities, 0, ""
    return ANSWERED, predictions, probabilities, latency, ""


def _batch(loaded: Any, request: dict[str, Any]) -> bytes:
    """The answer frame to one message of copies.

    ``request["capture"]`` holds what only the server knows: ``routes`` (per route of the
    copies: whether it captures, endpoint, model name, version, version id, variant, classes)
    and per copy its ``route`` (an index into ``routes``), ``time`` (the live answer's, seconds
    since the epoch), ``caller`` and ``ids`` (the live answer's inference ids). The request id
    of each line is a fresh one, as the server draws for every captured event.
    """
    from datetime import UTC, datetime

    from civicml.core.uuids import uuid4_str
    from civicml.serving._capture_format import CaptureEvent, _second, capture_lines

    copies = request["copies"]
    capture = request.get("capture")
    routes = capture["routes"] if capture else []
    route_of, times = capture["route"] if capture else [], capture["time"] if capture else []
    callers, ids = capture["caller"] if capture else [], capture["ids"] if capture else []
    outcomes: list[int] = []
    latencies: list[int] = []
    messages: list[list[Any]] = []
    segments: list[list[Any]] = []  # [route, hour, size]
    lines: list[bytes] = []
    for i, rows in enumerate(copies):
        outcome, predictions, probabilities, latency, message = _answer(loaded, rows)
        outcomes.append(outcome)
        latencies.append(latency)
        if message:
            messages.append([i, message])
        index = route_of[i] if capture else -1
        if index < 0 or not routes[index][0]:
            continue
        _, endpoint, model_name, version, version_id, variant, classes = routes[index]
        moment = datetime.fromtimestamp(times[i], UTC)
        event = CaptureEvent(
            project_id="",
            endpoint_id="",
            endpoint=endpoint,
            model_name=model_name,
            model_version=version,
            model_version_id=version_id,
            time=moment,
            request_id=uuid4_str(),
            records=rows,
            predictions=predictions,
            probabilities=probabilities,
            classes=classes,
            inference_ids=ids[i],
            caller=callers[i],
            error=_ERRORS.get(outcome),
            variant=variant,
            shadow=True,
            latency_ms=latency / 1e6 if outcome == ANSWERED else None,
            plain=True,  # parsed JSON the server wrote with allow_nan=False: already plain
        )
        try:
            data = capture_lines(event)
        except TypeError:  # NumPy values among the answers: as JSON carries them
            plain = json.loads(json.dumps([predictions, probabilities], default=_plain))
            event = dataclasses.replace(event, predictions=plain[0], probabilities=plain[1])
            data = capture_lines(event)
        hour = _second(moment)[1]
        last = segments[-1] if segments else None
        if last is not None and last[0] == index and last[1] == hour:
            last[2] += len(data)
        else:
            segments.append([index, hour, len(data)])
        lines.append(data)
    header = {
        "ok": True,
        "outcomes": outcomes,
        "latency": latencies,
        "messages": messages,
        "lines": segments,
    }
    return _framed(header, b"".join(lines))


def _framed(header: dict[str, Any], data: bytes) -> bytes:
    head = json.dumps(header, default=_plain).encode("utf-8")
    return struct.pack(">I", len(head)) + head + data


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
            frame = _batch(loaded, request)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            frame = _framed(_failure(err), b"")
        out.write(struct.pack(">I", len(frame)) + frame)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
