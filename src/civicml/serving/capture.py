"""Data capture: a sample of requests and responses, as SageMaker Model Monitor records them.

Each captured record is one JSON line (SageMaker's capture format, anchors.md B2)::

    {"captureData": {
        "endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                           "data": "{\\"age\\": 41, ...}", "encoding": "JSON"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "{\\"prediction\\": true, ...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<inference id>", "inferenceId": "<inference id>",
                       "inferenceTime": "2026-11-23T10:15:02.123Z", "requestId": "...",
                       "endpointName": "...", "modelName": "...", "modelVersion": 3,
                       "modelVersionId": "...", "caller": "<user who called>",
                       "variant": "blue", "shadow": false, "latencyMs": 0.41},
     "eventVersion": "0"}

one line per input record, so each prediction has its own ``eventId`` (the ``inference_ids`` the
endpoint answered). ``caller`` is the principal of the request (``X-CivicML-User`` on a server,
the SDK's user when embedded), so every captured prediction says who asked for it. Whether a
request is captured is drawn per request (``capture_percent``). ``variant`` names the variant
that answered and ``latencyMs`` the model's latency; a record with ``"shadow": true`` is the
shadow variant's answer to a copy of a live request: it carries the live record's
``eventId``, so the two form a pair, and it was never returned to anyone. Records written before
variants existed lack these three keys; readers treat them as the live answer of an unnamed
variant. Every request copied to the shadow is captured on both sides, whatever
``capture_percent`` says, so the comparison has whole pairs (capture must be on).

A request the model failed (it returned a non-finite number: 502, see
:class:`~civicml.serving.runtime.ModelOutputError`) is captured with its input and
``{"error": "non_finite_output"}`` as its output, no values; such records are left out of
:meth:`CaptureService.to_frame` and the datasets made from it (they have no prediction).

The request thread only draws the sample and puts the event on a bounded queue; a background
thread formats the lines (a shadow worker process formats its copies' lines itself and hands
them over as :class:`CaptureLines`, appended as they are) and appends them to a spool file per
endpoint under
``$CIVICML_HOME/serving/capture-spool``. A spool file is rotated into the artifact store when it
reaches ``max_bytes``, is ``max_age_s`` old, or the hour changes: stored by SHA-256 and indexed
under the endpoint (owner kind ``endpoint``) as ``capture/yyyy/mm/dd/hh/<uuid>.jsonl``, the
partitioning SageMaker uses in S3. With encryption at rest on, a spool file is sealed as it is
written (:class:`civicml.store.crypto.SealedAppender`: each write — the events the writer
formatted together — is one AES-256-GCM frame under a data key of the file's own, wrapped by the
current key-encryption key), so captured inputs — residents' data — never sit on disk in
plaintext, not even for the minutes before rotation. A full queue
drops the event; any failure is logged and never reaches the request. Spool files left by a
process that died are stored when the next writer starts (a frame torn by the crash is
dropped).

:class:`CaptureService` reads the captured records back and turns them into a dataset version,
so monitoring can compare live inputs with the training data.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from civicml.core.errors import ConfigurationError, InvalidInputError
from civicml.core.jsonsafe import compact_dumps
from civicml.core.process import process_alive
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.serving._queries import endpoint_row
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context
from civicml.store.crypto import SealedAppender, is_sealed, read_sealed
from civicml.store.schemas import ArtifactInfo

__all__ = [
    "CaptureEvent",
    "CaptureLines",
    "CaptureService",
    "CaptureWriter",
    "capture_lines",
    "capture_records",
    "claim_spool",
    "sent_text",
]

log = logging.getLogger("civicml.serving.capture")

CAPTURE_PREFIX = "capture"
MEDIA_TYPE = "application/x-ndjson"
DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_MAX_AGE_S = 60.0
DEFAULT_QUEUE_SIZE = 10_000
#: Events the writer formats before one write and flush of their spool files.
WRITE_BATCH = 256
#: Seconds the writer waits after the first of a few events, to write those behind it at once:
#: at a thousand requests a second, one write (one sealed frame, one flush) for ten of them.
#: Longer saves little more, and the writer then formats (holding the GIL) in longer bursts,
#: which a request arriving meanwhile waits out.
COALESCE_S = 0.01
#: The writer hands the interpreter lock over after formatting this many events of a batch:
#: a request arriving meanwhile waits for a few events' formatting, not for the whole batch's
#: (Python lets a thread that wants the lock wait up to 5 ms). On 2 cores this took the live
#: p99 at concurrency 1 from 1.3-1.5 ms to 0.7-0.9 ms (benchmarks/shadow.py).
YIELD_EVERY = 4
_NOTHING = object()
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode
#: A str as _COMPACT_JSON writes it (ASCII, escaped).
_ENCODE_STR: Callable[[str], str] = json.encoder.encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    """One sampled request and its response, as the runtime hands it to the writer."""

    project_id: str
    endpoint_id: str
    endpoint: str
    model_name: str
    model_version: int
    model_version_id: str
    time: datetime
    request_id: str
    records: Any  # a list of mappings or a DataFrame, as the caller sent them
    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any]
    inference_ids: list[str]
    #: The principal (user name) of the request.
    caller: str | None = None
    #: Why the request failed after predicting (e.g. ``"non_finite_output"``); None when it
    #: was answered.
    error: str | None = None
    #: The variant that answered (None: written by a caller that does not know variants).
    variant: str | None = None
    #: True for the shadow variant's answer to a copy of a live request (never returned).
    shadow: bool = False
    #: The model's latency for this request (ms); None when it failed.
    latency_ms: float | None = None
    #: True when ``records`` are known to be plain JSON records (a list of ``dict`` of ``str``
    #: keys and ``str``/``int``/finite ``float``/``bool``/``None`` values: what the fast path's
    #: ``encode`` accepts), so formatting skips checking each value. False checks them.
    plain: bool = False
    #: The JSON text (UTF-8) the list ``records`` was parsed from, between its brackets, when
    #: the caller knows it (:func:`sent_text`): each record is captured as it was sent, as
    #: SageMaker captures a payload, rather than encoded again (formatting 20 floats again is
    #: most of an event's cost). Records it cannot be cut into (:func:`_sent_records`) are
    #: encoded again.
    text: bytes | None = None


@dataclass(frozen=True, slots=True)
class CaptureLines:
    """Capture lines formatted elsewhere (the shadow's worker process formats its own with
    :func:`capture_lines`): the writer appends ``data`` to the endpoint's spool as it is.

    ``hour`` is ``yyyymmddhh`` (UTC) of every record in ``data``: the spool file it goes to.
    """

    project_id: str
    endpoint_id: str
    hour: str
    data: bytes


_RECORDS_HEAD = b'{"records":['


def sent_text(body: bytes, records: Any) -> bytes | None:
    """The JSON text of the records of an invocation body ``{"records":[…]}`` (the form the SDK
    and most clients send), between the array's brackets, which ``records`` was parsed from;
    None for any other body (a bare record or list, a byte-order mark, a record over several
    lines): their records are encoded again.

    The body parsed as an object whose only member ``records`` is an array (``records`` is
    that array), so between its opening ``{"records":[`` and its closing ``]}`` lie exactly its
    elements, with the commas and whitespace JSON allows. A body over several lines is left
    out: readers of a capture file join the records' texts one per line
    (``monitors/window.py``).
    """
    if type(records) is not list or not records or not body.startswith(_RECORDS_HEAD):
        return None
    if not body.endswith(b"]}"):
        body = body.rstrip()
        if not body.endswith(b"]}"):
            return None
    text = body[len(_RECORDS_HEAD) : -2]
    if b"\n" in text or b"\r" in text:
        return None
    return text


#: One JSON object holding no other object: strings (with their escapes) and anything but
#: quotes and braces. Linear: each alternative starts with a character the others cannot.
_FLAT_OBJECT = re.compile(rb'\{(?:[^"{}]++|"(?:[^"\\]++|\\.)*+")*+\}')


def _sent_records(text: bytes, count: int) -> list[bytes] | None:
    """The texts of the ``count`` records in ``text`` (:attr:`CaptureEvent.text`), or None
    when it is not exactly ``count`` flat objects separated by commas (a record holding an
    object, say): those records are encoded again."""
    if count == 1:
        return [text.strip()]
    found: list[bytes] = []
    at = 0
    for match in _FLAT_OBJECT.finditer(text):
        if text[at : match.start()].strip() != (b"," if found else b""):
            return None
        found.append(match.group())
        at = match.end()
    if text[at:].strip() or len(found) != count:
        return None
    return found


def capture_records(event: CaptureEvent) -> list[dict[str, Any]]:
    """The SageMaker-format capture records of an event, one per input record."""
    rows = event.records
    if hasattr(rows, "to_dict"):  # a DataFrame
        rows = rows.to_dict("records")
    when = _iso(event.time)
    texts = None if event.text is None else _sent_records(event.text, len(rows))
    out = []
    for i, record in enumerate(rows):
        output: dict[str, Any]
        if event.error is not None:
            output = {"error": event.error}
        else:
            output = {"prediction": event.predictions[i]}
        if event.error is None and event.probabilities is not None:
            output["probabilities"] = event.probabilities[i]
            output["classes"] = event.classes
        out.append(
            {
                "captureData": {
                    "endpointInput": _payload("INPUT", _plain_record(record))
                    if texts is None
                    else _payload_text("INPUT", texts[i].decode()),
                    "endpointOutput": _payload("OUTPUT", output),
                },
                "eventMetadata": {
                    "eventId": event.inference_ids[i],
                    "inferenceId": event.inference_ids[i],
                    "inferenceTime": when,
                    "requestId": event.request_id,
                    "endpointName": event.endpoint,
                    "modelName": event.model_name,
                    "modelVersion": event.model_version,
                    "modelVersionId": event.model_version_id,
                    "caller": event.caller,
                    "variant": event.variant,
                    "shadow": event.shadow,
                    "latencyMs": None if event.latency_ms is None else round(event.latency_ms, 4),
                },
                "eventVersion": "0",
            }
        )
    return out


_HEAD = (
    '{"captureData":{"endpointInput":{"observedContentType":"application/json","mode":"INPUT",'
    '"data":'
)
_MIDDLE = (
    ',"encoding":"JSON"},"endpointOutput":{"observedContentType":"application/json",'
    '"mode":"OUTPUT","data":'
)
_META = ',"encoding":"JSON"}},"eventMetadata":{"eventId":'
_TAIL = '},"eventVersion":"0"}\n'


def capture_lines(event: CaptureEvent) -> bytes:
    """The JSON lines of :func:`capture_records` (compact, one per input record, each ending in
    a newline), byte for byte, written without building each record's nested objects: what the
    capture writer spends its time on. The parts every record of an endpoint variant shares are
    encoded once (:func:`_constant_metadata`), the time once a second (:func:`_iso`)."""
    rows = event.records
    if hasattr(rows, "to_dict"):  # a DataFrame
        rows = rows.to_dict("records")
    latency = "null" if event.latency_ms is None else repr(round(event.latency_ms, 4))
    plain = event.plain
    tail = "".join(
        (',"inferenceTime":"', _iso(event.time), '","requestId":', _ENCODE_STR(event.request_id),
         _constant_metadata(event), ',"latencyMs":', latency, _TAIL)
    )  # fmt: skip
    ids = event.inference_ids
    out: list[str] = []
    failed = None if event.error is None else _ENCODE_STR(compact_dumps({"error": event.error}))
    classes = "" if event.probabilities is None or failed else _classes_suffix(event.classes)
    texts = None if event.text is None else _sent_records(event.text, len(rows))
    for i, record in enumerate(rows):
        output = _output(event, i, classes) if failed is None else failed
        encoded_id = _ENCODE_STR(ids[i])
        if texts is not None:
            data = _ENCODE_STR(texts[i].decode())
        else:
            data = _ENCODE_STR(compact_dumps(record if plain else _plain_record(record)))
        out += (_HEAD, data, _MIDDLE, output, _META, encoded_id, ',"inferenceId":', encoded_id)
        out.append(tail)
    return "".join(out).encode()


def _output(event: CaptureEvent, i: int, classes: str) -> str:
    """Record ``i``'s ``endpointOutput`` data, as an encoded JSON string (``classes``: the
    encoded end of it, :func:`_classes_suffix`, when there are probabilities).

    Encoding a JSON string escapes its quotes and backslashes only (the JSON text is ASCII, its
    control characters escaped), so the parts are escaped on their own and joined: numbers, the
    usual prediction and every probability, need no escaping at all.
    """
    text = compact_dumps(event.predictions[i])
    if '"' in text or "\\" in text:
        text = _ENCODE_STR(text)[1:-1]
    if event.probabilities is None:
        return '"{\\"prediction\\":' + text + '}"'
    probabilities = compact_dumps(event.probabilities[i])
    if '"' in probabilities or "\\" in probabilities:  # pragma: no cover - numbers only
        probabilities = _ENCODE_STR(probabilities)[1:-1]
    return '"{\\"prediction\\":' + text + ',\\"probabilities\\":' + probabilities + classes


_CLASSES: dict[int, tuple[list[Any], str]] = {}


def _classes_suffix(classes: list[Any]) -> str:
    """``,\\"classes\\":[…]}"``: the encoded end of an output with probabilities, kept per
    list of classes (a loaded model's, the same list for each of its events; the cache holds the
    list, so its id is not reused while cached)."""
    found = _CLASSES.get(id(classes))
    if found is not None and found[0] is classes:
        return found[1]
    suffix = _ENCODE_STR(',"classes":' + compact_dumps(classes) + "}")[1:]
    if len(_CLASSES) >= 64:
        _CLASSES.clear()
    _CLASSES[id(classes)] = (classes, suffix)
    return suffix


_CONSTANT: dict[tuple[Any, ...], str] = {}


def _constant_metadata(event: CaptureEvent) -> str:
    """``,"endpointName":…,"shadow":…``: the event metadata every record of one endpoint,
    model version, variant and caller shares, encoded once (a small cache)."""
    key = (event.endpoint, event.model_name, event.model_version, event.model_version_id,
           event.caller, event.variant, event.shadow)  # fmt: skip
    found = _CONSTANT.get(key)
    if found is None:
        encoded = _COMPACT_JSON(
            {
                "endpointName": event.endpoint,
                "modelName": event.model_name,
                "modelVersion": event.model_version,
                "modelVersionId": event.model_version_id,
                "caller": event.caller,
                "variant": event.variant,
                "shadow": event.shadow,
            }
        )
        found = "," + encoded[1:-1]
        if len(_CONSTANT) >= 1024:
            _CONSTANT.clear()
        _CONSTANT[key] = found
    return found


def _payload(mode: str, value: Any) -> dict[str, str]:
    return _payload_text(mode, compact_dumps(value))


def _payload_text(mode: str, data: str) -> dict[str, str]:
    return {
        "observedContentType": "application/json",
        "mode": mode,
        "data": data,
        "encoding": "JSON",
    }


_SCALARS = (str, int, bool, type(None))


def _plain_record(record: Any) -> Any:
    """A record as JSON-ready values: as it is when it already is (the common case: parsed
    JSON), else through :func:`_plain`."""
    if type(record) is dict:
        for key, value in record.items():
            kind = type(value)
            if type(key) is not str or (
                kind not in _SCALARS and (kind is not float or not math.isfinite(value))
            ):
                return _plain(dict(record))
        return record
    return _plain(dict(record))


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy scalars as Python, NaN as null, timestamps as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):  # pandas Timestamp, date
        return value.isoformat()
    if value is not None and not isinstance(value, str | int | float | bool):
        import pandas as pd  # type: ignore[import-untyped]

        with contextlib.suppress(TypeError, ValueError):
            if pd.isna(value):  # pandas NA / NaT
                return None
        return str(value)
    return value


_MILLIS = [f"{n:03d}Z" for n in range(1000)]


def _iso(moment: datetime) -> str:
    """``moment`` as ``2026-11-23T10:15:02.123Z`` (UTC, milliseconds)."""
    return _second(moment)[0] + _MILLIS[moment.microsecond // 1000]


_LAST_SECOND: list[Any] = [None, ("", "")]


def _second(moment: datetime) -> tuple[str, str]:
    """(``yyyy-mm-ddThh:mm:ss.``, ``yyyymmddhh``) of ``moment`` in UTC; the last second's are
    kept, as consecutive events mostly share it (for a UTC time, found by its whole seconds
    since the epoch, with no conversion)."""
    if moment.tzinfo is UTC:
        key: Any = int(moment.timestamp() // 1)
    else:  # another zone, or naive (local time, as astimezone reads it)
        key = moment.astimezone(UTC).replace(microsecond=0)
    last, found = _LAST_SECOND
    if key == last:
        return found  # type: ignore[no-any-return]
    utc = moment.astimezone(UTC)
    found = (utc.strftime("%Y-%m-%dT%H:%M:%S."), utc.strftime("%Y%m%d%H"))
    _LAST_SECOND[:] = [key, found]
    return found


# Writing ----------------------------------------------------------------------------------------
@dataclass
class _Spool:
    project_id: str
    endpoint_id: str
    hour: str  # yyyymmddhh of the records in it
    path: Path
    handle: IO[bytes] | SealedAppender
    opened: float = field(default_factory=time.monotonic)
    size: int = 0
    #: Lines added since the last write (see _write_out).
    buffer: list[bytes] = field(default_factory=list)


def _write_out(spool: _Spool) -> None:
    """Write the spool's buffered lines in one write (one frame when sealed) and flush."""
    if spool.buffer:
        data = b"".join(spool.buffer)
        spool.buffer.clear()
        spool.handle.write(data)
    spool.handle.flush()


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event


class CaptureWriter:
    """Appends captured events in a background thread and rotates them into the artifact store.

    Args:
        ctx: Stores used to store and index the capture files.
        max_bytes: Rotate a spool file once it holds this many bytes.
        max_age_s: Rotate a spool file once it is this old (seconds).
        queue_size: Events waiting to be written; beyond this new events are dropped.
        random: The sampler, ``[0, 1)`` per call (injectable for tests).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        random: Callable[[], float] = random.random,
    ) -> None:
        self._ctx = ctx
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._random = random
        # SimpleQueue (C, no lock taken in Python) with the size checked by submit: a put on
        # every captured request is a fraction of queue.Queue's.
        self._queue: queue.SimpleQueue[CaptureEvent | CaptureLines | _Flush | None] = (
            queue.SimpleQueue()
        )
        self._queue_size = queue_size
        self._spools: dict[str, _Spool] = {}
        self._dir = ctx.settings.home / "serving" / "capture-spool"
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self.failed = 0

    def sampled(self, percent: float) -> bool:
        """Whether to capture one request at ``percent`` (0 never, 100 always)."""
        if percent <= 0:
            return False
        return percent >= 100 or self._random() * 100 < percent

    def submit(self, event: CaptureEvent | CaptureLines) -> None:
        """Queue an event (or lines formatted elsewhere); never blocks (a full queue drops it
        and logs)."""
        if self._closed:
            return
        self._ensure_started()
        if self._queue.qsize() < self._queue_size:
            self._queue.put(event)
        else:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("capture queue full: %d event(s) dropped so far", self.dropped)

    def flush(self, timeout: float = 30.0) -> bool:
        """Write out every queued event and rotate all spool files now; True when done."""
        if self._thread is None:
            return True
        marker = _Flush(threading.Event())
        self._queue.put(marker)  # never blocks: a marker is never dropped
        return marker.done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop the background thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="civicml-capture", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        self._guard(self._recover)
        tick = max(0.05, min(1.0, self._max_age_s / 2))
        while True:
            try:
                item = self._queue.get(timeout=tick)
            except queue.Empty:
                self._guard(self._rotate_old)
                continue
            if item is None:
                self._guard(self._rotate_all)
                return
            if isinstance(item, _Flush):
                self._guard(self._rotate_all)
                item.done.set()
                continue
            events: list[CaptureEvent | CaptureLines] = [item]
            following: object = _NOTHING
            if self._queue.qsize() < WRITE_BATCH:
                # let a busy endpoint's next events arrive: one wake-up and one write for many
                # rather than a thread switch per request (requests never wait for this)
                time.sleep(COALESCE_S)
            while len(events) < WRITE_BATCH:  # take what else waits: one write for all
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    following = _NOTHING
                    break
                if not isinstance(following, CaptureEvent | CaptureLines):
                    break
                events.append(following)
                following = _NOTHING
            self._append_all(events)
            self._guard(self._rotate_old)
            if following is None:
                self._guard(self._rotate_all)
                return
            if isinstance(following, _Flush):
                self._guard(self._rotate_all)
                following.done.set()

    def _append_all(self, events: list[CaptureEvent | CaptureLines]) -> None:
        """Format each event (a failing one loses only its own records) into its spool's
        buffer, then write each spool's buffer at once (one sealed frame) and flush."""
        touched: dict[int, _Spool] = {}
        for number, event in enumerate(events):
            if number and not number % YIELD_EVERY:
                time.sleep(0)  # hand the interpreter lock to a request waiting for it
            spool = self._guard_value(functools.partial(self._append, event))
            if spool is not None:
                touched[id(spool)] = spool
        for spool in touched.values():
            if not spool.handle.closed:
                self._guard(functools.partial(_write_out, spool))

    def _guard_value(self, work: Callable[[], _Spool | None]) -> _Spool | None:
        try:
            return work()
        except Exception:
            self.failed += 1
            log.exception("data capture failed; the affected records were not captured")
            return None

    def _guard(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            self.failed += 1
            log.exception("data capture failed; the affected records were not captured")

    def _append(self, event: CaptureEvent | CaptureLines) -> _Spool | None:
        """Add one event's lines (or the lines given) to its spool's buffer (written by
        :meth:`_append_all`, or when the spool rotates); the spool, or None if rotated."""
        if isinstance(event, CaptureLines):
            lines, hour = event.data, event.hour
        else:
            lines = capture_lines(event)
            hour = _second(event.time)[1]
        spool = self._spools.get(event.endpoint_id)
        if spool is not None and spool.hour != hour:
            self._rotate(spool)
            spool = None
        if spool is None:
            spool = self._open(event.project_id, event.endpoint_id, hour)
        spool.buffer.append(lines)
        spool.size += len(lines)
        if spool.size >= self._max_bytes:
            self._rotate(spool)
            return None
        return spool

    def _open(self, project_id: str, endpoint_id: str, hour: str) -> _Spool:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{os.getpid()}-{project_id}-{endpoint_id}-{hour}-{uuid.uuid4().hex}.jsonl"
        path = self._dir / name
        handle: Any = open(path, "xb")
        store = self._ctx.artifacts
        if store.encrypt and store.keys is not None:
            try:
                handle = SealedAppender(handle, store.keys)
            except BaseException:
                handle.close()
                path.unlink(missing_ok=True)
                raise
        spool = _Spool(project_id, endpoint_id, hour, path, handle)
        self._spools[endpoint_id] = spool
        return spool

    def _rotate_old(self) -> None:
        now = time.monotonic()
        for spool in [s for s in self._spools.values() if now - s.opened >= self._max_age_s]:
            self._rotate(spool)

    def _rotate_all(self) -> None:
        for spool in list(self._spools.values()):
            self._guard(functools.partial(self._rotate, spool))

    def _rotate(self, spool: _Spool) -> None:
        self._spools.pop(spool.endpoint_id, None)
        try:
            _write_out(spool)
        finally:
            spool.handle.close()
        self._store(spool.path, spool.project_id, spool.endpoint_id, spool.hour)

    def _store(self, path: Path, project_id: str, endpoint_id: str, hour: str) -> None:
        """Store one spool file and index it; the spool file stays when that fails."""
        if path.stat().st_size == 0:
            path.unlink()
            return
        store = self._ctx.artifacts
        if is_sealed(path):
            if store.keys is None:
                raise ConfigurationError(
                    f"The capture spool {path.name} is encrypted and no key provider is "
                    "configured; it is kept.",
                    hint="Set keys_dir to the directory that holds the key-encryption keys.",
                )
            lines = read_sealed(path, store.keys)
            if not lines:
                path.unlink()
                return
            stored = store.put_bytes(lines)
        else:
            stored = store.put_file(path)
        relative = f"{CAPTURE_PREFIX}/{hour[:4]}/{hour[4:6]}/{hour[6:8]}/{hour[8:10]}/"
        relative += f"{uuid.uuid4()}.jsonl"
        with self._ctx.db.write() as uow:
            ArtifactIndex.add(
                uow,
                project_id=project_id,
                owner_kind="endpoint",
                owner_id=endpoint_id,
                path=relative,
                stored=stored,
                created_by=self._ctx.principal.user,
                created_at=self._ctx.clock.now(),
                media_type=MEDIA_TYPE,
            )
        path.unlink()

    def _recover(self) -> None:
        """Store spool files left behind by processes that died before rotating them.

        Several serving processes (``civicml server --workers N``) may recover at once: each
        first claims a file by renaming it to a name of its own pid (atomic: one rename wins),
        so a file is stored once. A claimer that dies leaves a file of a dead pid again.
        """
        if not self._dir.is_dir():
            return
        for path in sorted(self._dir.glob("*.jsonl")):
            parts = path.name.split("-")
            if len(parts) != 5 or not parts[0].isdigit():
                continue
            pid = int(parts[0])
            if pid == os.getpid() or process_alive(pid):
                continue
            claimed = claim_spool(path)
            if claimed is not None:
                self._guard(functools.partial(self._store, claimed, parts[1], parts[2], parts[3]))


def claim_spool(path: Path) -> Path | None:
    """Take over a dead process's spool file ``path`` by renaming it to this process's pid;
    the new path, or None when another process claimed (or stored) it first."""
    _, project_id, endpoint_id, hour, _ = path.name.split("-")
    name = f"{os.getpid()}-{project_id}-{endpoint_id}-{hour}-{uuid.uuid4().hex}.jsonl"
    mine = path.with_name(name)
    try:
        os.rename(path, mine)
    except FileNotFoundError:
        return None
    return mine


# Reading ----------------------------------------------------------------------------------------
class CaptureService:
    """Reads captured records back and turns them into dataset versions.

    Args:
        ctx: The stores, principal and clock every call runs with.
        writer: The writer of this process, flushed first so the newest records are included.

    Example:
        >>> captured = CaptureService(ctx).to_dataset("benefits", "eligibility")  # doctest: +SKIP
        >>> captured.row_count  # doctest: +SKIP
        120
    """

    def __init__(self, ctx: Context, writer: CaptureWriter | None = None) -> None:
        self._ctx = ctx
        self._writer = writer
        self._projects = ProjectService(ctx)

    def files(
        self, project: str, endpoint: str, since: datetime | None = None
    ) -> list[ArtifactInfo]:
        """The capture files of an endpoint, oldest hour first (from ``since``'s hour on)."""
        if self._writer is not None:
            self._writer.flush()
        proj = self._projects.get(project, "datasets.read")  # captures are citizens' inputs
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            infos = ArtifactIndex.list(conn, "endpoint", row.id, CAPTURE_PREFIX)
        if since is not None:
            floor = since.astimezone(UTC).strftime("%Y/%m/%d/%H")
            infos = [i for i in infos if i.path[len(CAPTURE_PREFIX) + 1 :][:13] >= floor]
        return sorted(infos, key=lambda i: (i.path[: len(CAPTURE_PREFIX) + 14], i.created_at))

    def records(
        self, project: str, endpoint: str, since: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every captured record (SageMaker format) of an endpoint, from ``since`` on."""
        floor = None if since is None else _iso(since)
        for info in self.files(project, endpoint, since):
            for line in self._ctx.artifacts.read_bytes(info.digest).splitlines():
                record: dict[str, Any] = json.loads(line)
                if floor is None or record["eventMetadata"]["inferenceTime"] >= floor:
                    yield record

    def to_frame(
        self,
        project: str,
        endpoint: str,
        since: datetime | None = None,
        *,
        predictions: bool = True,
        metadata: bool = False,
    ) -> Any:
        """The captured inputs as a pandas DataFrame, one row per answered record (requests the
        model failed have no prediction and are left out, and so are the shadow variant's
        answers: they were never given to anyone, and their inputs are the live ones again).

        Args:
            project: Project name.
            endpoint: Endpoint name.
            since: Only records inferred at or after this moment.
            predictions: Add the ``prediction`` column.
            metadata: Add ``inference_id``, ``inference_time``, ``model_version``,
                ``caller`` (who made the request; null in records captured before it was
                recorded) and ``variant`` (which variant answered; null in records captured
                before endpoints had variants).
        """
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for record in self.records(project, endpoint, since):
            data = record["captureData"]
            if record["eventMetadata"].get("shadow"):
                continue  # the shadow's answer: never given, its input is the live one's
            output = json.loads(data["endpointOutput"]["data"])
            if "prediction" not in output:
                continue  # the model failed this request: no prediction to compare
            row = dict(json.loads(data["endpointInput"]["data"]))
            if predictions:
                row["prediction"] = output["prediction"]
            if metadata:
                meta = record["eventMetadata"]
                row["inference_id"] = meta["eventId"]
                row["inference_time"] = pd.Timestamp(meta["inferenceTime"])
                row["model_version"] = meta.get("modelVersion")
                row["caller"] = meta.get("caller")
                row["variant"] = meta.get("variant")
            rows.append(row)
        return pd.DataFrame.from_records(rows)

    def to_dataset(
        self,
        project: str,
        endpoint: str,
        since: datetime | None = None,
        *,
        name: str | None = None,
        predictions: bool = True,
        metadata: bool = False,
        description: str = "",
    ) -> DatasetVersion:
        """Store the captured inputs (and predictions) as a version of a dataset.

        Args:
            project: Project name.
            endpoint: Endpoint name.
            since: Only records inferred at or after this moment.
            name: Dataset name; default ``<endpoint>-capture``.
            predictions: Add the ``prediction`` column.
            metadata: Add ``inference_id``, ``inference_time``, ``model_version``, ``caller``
                and ``variant`` (never model input columns: they describe the request).
            description: Free text for the version.

        Returns:
            The dataset version (the existing one when the same records were stored before),
            linked in lineage as produced by the endpoint.

        Raises:
            NotFoundError: The project or endpoint does not exist.
            InvalidInputError: Nothing was captured (since ``since``).
        """
        frame = self.to_frame(project, endpoint, since, predictions=predictions, metadata=metadata)
        if frame.empty:
            when = "" if since is None else f" since {since.isoformat()}"
            raise InvalidInputError(
                f"Endpoint {endpoint!r} has no captured records{when}.",
                hint="Capture needs a capture percentage above 0: civicml endpoints update "
                f"{endpoint} --capture-percent 100 --project {project}",
            )
        datasets = DatasetService(self._ctx)
        version = datasets.ingest(
            project,
            name or f"{endpoint}-capture",
            frame,
            description=description or f"Captured requests of endpoint {endpoint!r}.",
            progress=False,
        )
        self._link(project, endpoint, version)
        return version

    def _link(self, project: str, endpoint: str, version: DatasetVersion) -> None:
        lineage = LineageService(self._ctx)
        proj = self._projects.get(project, "datasets.write")
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint)
            src = lineage.node(uow, "endpoint", row.id, name=endpoint, project_id=proj.id)
            dst = lineage.node(
                uow, "dataset_version", version.id, name=f"{version.name} v{version.version}"
            )
            lineage.link(uow, src, dst, "Produced")
