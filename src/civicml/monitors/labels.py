"""Ground truth: labels uploaded after the fact, as ``(inference_id, label)`` rows.

An upload is a CSV, Parquet or JSON Lines file, a pandas DataFrame, or JSON records. Its rows
name the captured prediction (``inference_id``, the id every answer and captured record carries)
and the true label or value; other columns (at most :data:`MAX_ATTRIBUTES`) are kept as
*attributes* — a facet such as ``sex`` that the model never sees can come with the labels, for
bias drift. A repeated inference id keeps its last row. Each upload is stored as Parquet in the
artifact store; a window joins the uploads made since it began (labels come after predictions),
the newest label of an inference id winning.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError

__all__ = ["MAX_ATTRIBUTES", "label_table", "read_labels", "to_parquet"]

#: Most extra (attribute) columns an upload keeps.
MAX_ATTRIBUTES = 20
_FORMATS = ("csv", "parquet", "jsonl")


def _read(source: Any, fmt: str | None) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(
                f"Ground-truth file {path.name!r} does not exist.",
                hint="Give a CSV, Parquet or JSON Lines file of inference_id,label rows.",
            )
        fmt = fmt or {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}.get(
            path.suffix.lower()
        )
        with open(path, "rb") as opened:
            return _read(opened, fmt)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if fmt not in _FORMATS:
        raise InvalidInputError(
            f"Ground-truth format {fmt!r} is not known.",
            hint="Use csv, parquet or jsonl (a file's suffix says it by itself).",
        )
    handle: BinaryIO = source
    try:
        if fmt == "parquet":
            return pd.read_parquet(handle)
        if fmt == "jsonl":
            return pd.read_json(handle, lines=True, dtype=False)
        return pd.read_csv(handle, dtype={"inference_id": str})
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(
            f"The ground truth could not be read as {fmt}: {str(err)[:200]}.",
            hint="Upload rows with an inference_id and a label column.",
        ) from err


def label_table(
    source: Any,
    *,
    format: str | None = None,
    inference_id: str = "inference_id",
    label: str = "label",
) -> pd.DataFrame:
    """The upload as a frame with columns ``inference_id`` (text), ``label`` and attributes.

    Args:
        source: A DataFrame, a file path, bytes or a binary file, or a list of records
            (dicts with ``inference_id``, ``label`` and optional ``attributes``).
        format: ``csv``, ``parquet`` or ``jsonl`` for bytes and files without a known suffix.
        inference_id: The column holding the inference id.
        label: The column holding the label.

    Raises:
        InvalidInputError: A column is missing, an id is missing or too long, a label is
            missing, there are no rows, or too many attribute columns.
    """
    if isinstance(source, Sequence) and not isinstance(source, str | bytes):
        rows = []
        for record in source:
            item = record if isinstance(record, dict) else record.model_dump()
            rows.append(
                {
                    "inference_id": item.get("inference_id"),
                    "label": item.get("label"),
                    **(item.get("attributes") or {}),
                }
            )
        frame = pd.DataFrame.from_records(rows)
        inference_id, label = "inference_id", "label"
    else:
        frame = _read(source, format)
    for column, role in ((inference_id, "inference id"), (label, "label")):
        if column not in frame.columns:
            raise InvalidInputError(
                f"The ground truth has no {role} column {column!r}.",
                hint=f"It has {list(map(str, frame.columns))[:20]}; name the columns with "
                "--inference-id-column / --label-column (inference_id= / label= in the SDK).",
            )
    if frame.empty:
        raise InvalidInputError("The ground truth has no rows.", hint="Upload at least one label.")
    frame = frame.rename(columns={inference_id: "inference_id", label: "label"})
    extra = [c for c in frame.columns if c not in ("inference_id", "label")]
    if len(extra) > MAX_ATTRIBUTES:
        raise InvalidInputError(
            f"The ground truth has {len(extra)} columns besides the id and label; at most "
            f"{MAX_ATTRIBUTES} are kept.",
            hint="Upload only the columns monitors need (the label and facets such as 'sex').",
        )
    ids = frame["inference_id"]
    if ids.isna().any():
        raise InvalidInputError(
            f"{int(ids.isna().sum())} ground-truth row(s) have no inference id.",
            hint="Every label names the prediction it belongs to (its inference_id).",
        )
    ids = ids.astype(str).str.strip()
    if (ids.str.len() == 0).any() or (ids.str.len() > 64).any():
        raise InvalidInputError(
            "An inference id is empty or longer than 64 characters.",
            hint="Use the inference_ids the endpoint answered with.",
        )
    if frame["label"].isna().any():
        raise InvalidInputError(
            f"{int(frame['label'].isna().sum())} ground-truth row(s) have no label.",
            hint="Leave out the rows whose label is not known yet; upload them later.",
        )
    frame = frame.assign(inference_id=ids)
    frame.columns = [str(c) for c in frame.columns]
    for column in frame.columns:
        if frame[column].dtype == object and column != "inference_id":
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame.drop_duplicates("inference_id", keep="last").reset_index(drop=True)


def to_parquet(frame: pd.DataFrame) -> bytes:
    """The frame as Parquet bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_labels(parts: Sequence[bytes]) -> pd.DataFrame:
    """The uploads (oldest first) as one frame, the newest label of each id winning."""
    if not parts:
        return pd.DataFrame({"inference_id": pd.Series([], dtype=object), "label": []})
    frames = [pd.read_parquet(io.BytesIO(p)) for p in parts]
    if len(frames) == 1:
        return frames[0]  # an upload holds each inference id once already
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates("inference_id", keep="last").reset_index(drop=True)
