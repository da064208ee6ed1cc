"""A window of an endpoint's captured records, read back for one monitor execution.

The capture files of the endpoint's hours that overlap the window are read (each verified
against its SHA-256 by the artifact store) and every record inferred in ``[start, end)`` is kept,
except the shadow variant's answers (never given to anyone, their inputs are the live ones
again) and requests the model failed (no prediction). Each kept record gives its input row, its
``inference_id``, its prediction and, for a classifier, its class probabilities.

Reading the lines is the cost of a window: the records are parsed with pyarrow's JSON reader
(C++, one pass per file) and only fall back to :mod:`json` when a file holds values pyarrow
cannot put in one column type (a number in one record and text in another).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.serving.capture import CAPTURE_PREFIX, CaptureService, CaptureWriter
from civicml.store.context import Context

__all__ = ["CapturedWindow", "iso_ms", "read_window"]

log = logging.getLogger("civicml.monitors")


def iso_ms(moment: datetime) -> str:
    """A moment as capture writes ``inferenceTime`` (UTC, milliseconds, ``Z``)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass
class CapturedWindow:
    """The answered live records of a window, in capture order."""

    inputs: pd.DataFrame
    ids: Any  # the inference ids as a pyarrow array (joined in C++, no Python string each)
    predictions: Any  # a list, or an array of the answered labels or values
    probabilities: np.ndarray[Any, Any] | None = None
    classes: list[Any] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Records in the window."""
        return len(self.ids)

    @property
    def inference_ids(self) -> np.ndarray[Any, Any]:
        """The inference ids as an object array."""
        found: np.ndarray[Any, Any] = np.asarray(self.ids.to_pylist(), dtype=object)
        return found


def read_window(
    ctx: Context,
    project: str,
    endpoint: str,
    start: datetime,
    end: datetime,
    *,
    writer: CaptureWriter | None = None,
    inputs: bool = True,
) -> CapturedWindow:
    """The captured records of ``endpoint`` inferred in ``[start, end)`` (without their input
    rows when ``inputs`` is False: model quality needs only ids and predictions).

    Raises:
        NotFoundError: The project or endpoint does not exist.
        PermissionDeniedError: The caller may not read datasets (captures are residents' data).
    """
    low, high = iso_ms(start), iso_ms(end)
    last_hour = end.astimezone(UTC).strftime("%Y/%m/%d/%H")
    parts: list[_Part] = []
    for info in CaptureService(ctx, writer).files(project, endpoint, since=start):
        hour = info.path[len(CAPTURE_PREFIX) + 1 :][:13]
        if hour > last_hour:
            continue
        data = ctx.artifacts.read_bytes(info.digest)
        part = _parse_fast(data, low, high, inputs=inputs)
        if part is None:
            part = _parse_slow(data, low, high, inputs=inputs)
        if len(part.ids):
            parts.append(part)
    return _combine(parts)


@dataclass
class _Part:
    ids: Any  # a list, or an object array
    inputs: pd.DataFrame | list[dict[str, Any]]
    predictions: Any  # a list, or an array
    probabilities: Any  # rows of class probabilities (an array or lists), or None
    classes: list[Any]


def _parse_fast(data: bytes, low: str, high: str, *, inputs: bool = True) -> _Part | None:
    """Parse one capture file with pyarrow; None when its values do not fit column types."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.compute as pc  # type: ignore[import-untyped]
    import pyarrow.json as pj  # type: ignore[import-untyped]

    empty = _Part([], [], [], None, [])
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=_record_options(inputs))
        meta = table.column("eventMetadata")
        times = pc.struct_field(meta, "inferenceTime")
        keep = pc.and_(pc.greater_equal(times, low), pc.less(times, high))
        shadow = pc.fill_null(pc.struct_field(meta, "shadow"), False)  # absent: a live answer
        keep = pc.and_(keep, pc.invert(shadow))
        table = table.filter(keep)
        if table.num_rows == 0:
            return empty
        outputs = _strings(table, "endpointOutput")
        out = pj.read_json(io.BytesIO(outputs))
        if "prediction" not in out.column_names:
            return empty
        answered = pc.is_valid(out.column("prediction"))
        if "error" in out.column_names:
            answered = pc.and_(answered, pc.is_null(out.column("error")))
        if not pc.all(answered).as_py():
            table, out = table.filter(answered), out.filter(answered)
        if table.num_rows == 0:
            return empty
        frame = (
            pj.read_json(io.BytesIO(_strings(table, "endpointInput"))).to_pandas()
            if inputs
            else pd.DataFrame(index=range(table.num_rows))
        )
        ids = pc.struct_field(table.column("eventMetadata"), "eventId")
        probabilities, classes = _probabilities(out)
        predictions = out.column("prediction").to_numpy(zero_copy_only=False)
        return _Part(ids, frame, predictions, probabilities, classes)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError):
        log.debug("capture file not columnar; parsed record by record", exc_info=True)
        return None


def _record_options(inputs: bool) -> Any:
    """Parse only the fields a window uses (the rest of each record is skipped, not built)."""
    import pyarrow as pa
    import pyarrow.json as pj

    data = pa.struct([("data", pa.string())])
    sides = [("endpointOutput", data)] + ([("endpointInput", data)] if inputs else [])
    meta = pa.struct(
        [("eventId", pa.string()), ("inferenceTime", pa.string()), ("shadow", pa.bool_())]
    )
    schema = pa.schema([("captureData", pa.struct(sides)), ("eventMetadata", meta)])
    return pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")


def _strings(table: Any, side: str) -> bytes:
    """The ``data`` strings of one side of the records, one per line: each string with a
    newline appended (in C++), then the array's contiguous value bytes, without a Python string
    per record."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.struct_field(pc.struct_field(table.column("captureData"), side), "data")
    lines = pc.binary_join_element_wise(column, "", "\n")
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if lines.null_count:
        raise pa.ArrowInvalid("a record has no data")
    width = 8 if pa.types.is_large_string(lines.type) else 4
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64 if width == 8 else np.int32)
    first, last = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return bytes(memoryview(lines.buffers()[2])[first:last])


def _probabilities(out: Any) -> tuple[Any, list[Any]]:
    """The probability rows as an array and the classes, when every record has the same."""
    import pyarrow.compute as pc

    names = out.column_names
    if "probabilities" not in names or "classes" not in names:
        return None, []
    classes_column, rows = out.column("classes"), out.num_rows
    first = classes_column[0].as_py()
    if not first or pc.any(pc.is_null(classes_column)).as_py():
        return None, []
    lengths = pc.list_value_length(classes_column).to_numpy(zero_copy_only=False)
    if (lengths != len(first)).any():
        return None, []
    flat = pc.list_flatten(classes_column).to_numpy(zero_copy_only=False)
    if not (flat == np.tile(np.asarray(first, dtype=object), rows)).all():
        return None, []
    values = pc.list_flatten(out.column("probabilities")).to_numpy(zero_copy_only=False)
    if len(values) != rows * len(first):
        return None, []
    return np.asarray(values, dtype=np.float64).reshape(rows, len(first)), list(first)


def _parse_slow(data: bytes, low: str, high: str, *, inputs: bool = True) -> _Part:
    ids: list[str] = []
    rows: list[dict[str, Any]] = []
    predictions: list[Any] = []
    probabilities: list[Any] = []
    classes: list[Any] | None = None
    mixed = False
    for line in data.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        meta = record["eventMetadata"]
        when = meta["inferenceTime"]
        if when < low or when >= high or meta.get("shadow"):
            continue
        capture = record["captureData"]
        output = json.loads(capture["endpointOutput"]["data"])
        if "prediction" not in output:
            continue
        ids.append(str(meta["eventId"]))
        rows.append(json.loads(capture["endpointInput"]["data"]) if inputs else {})
        predictions.append(output["prediction"])
        probabilities.append(output.get("probabilities"))
        found = output.get("classes")
        if classes is None:
            classes = found
        elif found != classes:
            mixed = True
    has_probabilities = bool(ids) and not mixed and all(p is not None for p in probabilities)
    return _Part(
        ids,
        rows,
        predictions,
        probabilities if has_probabilities else None,
        (classes or []) if has_probabilities else [],
    )


def _combine(parts: list[_Part]) -> CapturedWindow:
    import pyarrow as pa

    if not parts:
        return CapturedWindow(pd.DataFrame(), pa.array([], type=pa.string()), [])
    frames = [
        p.inputs if isinstance(p.inputs, pd.DataFrame) else pd.DataFrame(p.inputs) for p in parts
    ]
    inputs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    chunks = []
    for part in parts:
        if isinstance(part.ids, pa.ChunkedArray):
            chunks += part.ids.chunks
        else:
            chunks.append(pa.array(list(part.ids), pa.string()))
    ids = pa.chunked_array(chunks, type=pa.string())
    predictions: Any = (
        np.concatenate([np.asarray(p.predictions) for p in parts])
        if all(isinstance(p.predictions, np.ndarray) for p in parts)
        else [v for p in parts for v in p.predictions]
    )
    probabilities = None
    classes: list[Any] = []
    if all(p.probabilities is not None for p in parts) and all(
        p.classes == parts[0].classes for p in parts
    ):
        classes = list(parts[0].classes)
        probabilities = np.vstack(
            [np.asarray(p.probabilities, dtype=np.float64).reshape(len(p.ids), -1) for p in parts]
        )
    return CapturedWindow(inputs.reset_index(drop=True), ids, predictions, probabilities, classes)
