"""Capture events and their JSON lines: what :mod:`civicml.serving.capture` writes, kept apart
from the writer so that the capture spool process (:mod:`civicml.serving._capture_worker`)
imports only this (the standard library, :mod:`civicml.core.jsonsafe` and
:mod:`civicml.core.uuids`), not the data, governance and store services the writer needs.
:mod:`civicml.serving.capture` exports every public name here.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from civicml.core.jsonsafe import compact_dumps
from civicml.core.uuids import uuid4_str

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode
#: A str as _COMPACT_JSON writes it (ASCII, escaped).
_ENCODE_STR: Callable[[str], str] = json.encoder.encode_basestring_ascii


@dataclass(slots=True)
class CaptureEvent:
    """One sampled request and its response, as the runtime hands it to the writer.

    Never changed once made (``dataclasses.replace`` makes another); not frozen because a
    frozen dataclass sets each of its 20 fields through ``object.__setattr__``, and one is made
    on the event loop for every captured request (4.4 µs instead of 2.9 µs).
    """

    project_id: str
    endpoint_id: str
    endpoint: str
    model_name: str
    model_version: int
    model_version_id: str
    time: datetime
    #: The request's id in its captured records (``requestId``); None: made when they are
    #: formatted (a random UUID, one per event), off the request's path.
    request_id: str | None
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
    and most clients send: compact, or with the spaces of Python's ``json.dumps`` and the
    ``requests`` library, ``{"records": [...]}``), between the array's brackets, which
    ``records`` was parsed from; None for any other body (a bare record or list, a byte-order
    mark, a record over several lines): their records are encoded again.

    The body parsed as an object whose only member ``records`` is an array (``records`` is
    that array), so between its opening ``{"records":[`` and its closing ``]}`` (with the
    spaces or tabs JSON allows around them) lie exactly its elements, with the commas and
    whitespace JSON allows. A body over several lines is left out: readers of a capture file
    join the records' texts one per line (``monitors/window.py``).
    """
    if type(records) is not list or not records:
        return None
    if body.startswith(_RECORDS_HEAD):
        start = len(_RECORDS_HEAD)
    else:
        opened = _RECORDS_OPEN.match(body)
        if opened is None:
            return None
        start = opened.end()
    if body.endswith(b"]}"):
        end = len(body) - 2
    else:
        inner = body.rstrip()
        if not inner.endswith(b"}"):
            return None
        inner = inner[:-1].rstrip(b" \t")
        if not inner.endswith(b"]"):
            return None
        end = len(inner) - 1
    text = body[start:end]
    if b"\n" in text or b"\r" in text:
        return None
    return text


#: The head of a records body with spaces or tabs around its parts (``json.dumps``'s default).
_RECORDS_OPEN = re.compile(rb'\{[ \t]*"records"[ \t]*:[ \t]*\[')


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
                    "requestId": event.request_id or uuid4_str(),
                    **_shared_metadata(event),
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
        (',"inferenceTime":"', _iso(event.time), '","requestId":',
         _ENCODE_STR(event.request_id or uuid4_str()),
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


def _shared_metadata(event: CaptureEvent) -> dict[str, Any]:
    """The part of a record's ``eventMetadata`` every record of one endpoint, model version,
    variant and caller shares, in the order of the keys in a record."""
    return {
        "endpointName": event.endpoint,
        "modelName": event.model_name,
        "modelVersion": event.model_version,
        "modelVersionId": event.model_version_id,
        "caller": event.caller,
        "variant": event.variant,
        "shadow": event.shadow,
    }


def _constant_metadata(event: CaptureEvent) -> str:
    """``,"endpointName":…,"shadow":…``: the event metadata every record of one endpoint,
    model version, variant and caller shares, encoded once (a small cache)."""
    key = (event.endpoint, event.model_name, event.model_version, event.model_version_id,
           event.caller, event.variant, event.shadow)  # fmt: skip
    found = _CONSTANT.get(key)
    if found is None:
        found = "," + _COMPACT_JSON(_shared_metadata(event))[1:-1]
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


def event_fields(event: CaptureEvent) -> tuple[Any, ...] | None:
    """What the capture spool process needs of ``event`` (:func:`event_from_fields` makes it
    again), as values ``marshal`` writes; None for an event it does not take (records in a
    DataFrame, a time without a zone). Records sent as text (``text``) go as their count: the
    lines are cut from the text; records whose text cannot be cut go themselves."""
    moment = event.time
    records = event.records
    if moment.tzinfo is None or not isinstance(records, list):
        return None
    text = event.text
    if text is not None and len(records) != 1 and _sent_records(text, len(records)) is None:
        text = None  # not cut into its records: they go themselves
    return (
        event.project_id, event.endpoint_id, event.endpoint, event.model_name,
        event.model_version, event.model_version_id, (moment - _EPOCH) // _MICROSECOND,
        event.request_id, records if text is None else len(records),
        event.predictions, event.probabilities, event.classes,
        event.inference_ids, event.caller, event.error, event.variant, event.shadow,
        event.latency_ms, event.plain, text,
    )  # fmt: skip


def formattable(fields: tuple[Any, ...]) -> bool:
    """Whether the event :func:`event_fields` described can be formatted from its fields: its
    records are there, or its text is cut into as many records."""
    records, text = fields[8], fields[19]
    return type(records) is not int or (
        text is not None and _sent_records(text, records) is not None
    )


def event_from_fields(fields: tuple[Any, ...]) -> CaptureEvent:
    """The event :func:`event_fields` described (its time in UTC: the same instant; records
    sent as a count are empty placeholders, their lines come from the text)."""
    (project_id, endpoint_id, endpoint, model_name, model_version, model_version_id, micros,
     request_id, records, predictions, probabilities, classes, inference_ids, caller, error,
     variant, shadow, latency_ms, plain, text) = fields  # fmt: skip
    return CaptureEvent(  # positional, in the fields' order: the spool process makes many
        project_id, endpoint_id, endpoint, model_name, model_version, model_version_id,
        _EPOCH + micros * _MICROSECOND, request_id,
        [{}] * records if type(records) is int else records,
        predictions, probabilities, classes, inference_ids, caller, error, variant, shadow,
        latency_ms, plain, text,
    )  # fmt: skip
