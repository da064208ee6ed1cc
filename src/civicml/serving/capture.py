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

The request thread only draws the sample and hands the event on; formatting the lines
(:func:`capture_lines`, in :mod:`civicml.serving._capture_format`) and writing them happen
elsewhere. In ``civicml server`` (``serving_capture_format``) a spool process of the writer's own
(:mod:`civicml.serving._capture_worker`) formats, seals and writes them: requests answered on
the event loop keep their events for :data:`COALESCE_S` and the loop hands them over in one
pipe write that it never waits for (:meth:`CaptureWriter.attach_loop`), so capture takes the
interpreter lock from live requests only for that write — not for a thread woken to do it.
Events captured on other threads go on a bounded queue to the writer's background thread,
which hands them over in the same way or, without the process (the SDK, the CLI, a process
that failed), formats and writes them itself. A shadow worker process formats its copies'
lines itself and hands them over as :class:`CaptureLines`, appended as they are. Either way the
lines go to a spool file per endpoint under ``$CIVICML_HOME/serving/capture-spool``. A spool
file is rotated into the artifact store when it reaches ``max_bytes``, is ``max_age_s`` old, or
the hour changes: stored by SHA-256 and indexed under the endpoint (owner kind ``endpoint``) as
``capture/yyyy/mm/dd/hh/<uuid>.jsonl``, the partitioning SageMaker uses in S3 (the spool
process says when it closed a file; a thread of the writer's stores it). With encryption at rest
on, a spool file is sealed as it is written (:class:`civicml.store.crypto.SealedAppender`, the
format of :mod:`civicml.store.spool_seal`: each write — the events written together — is one
AES-256-GCM frame under a data key of the file's own, wrapped by the current key-encryption
key, which the spool process never holds), so captured inputs — residents' data — never sit on
disk in plaintext, not even for the minutes before rotation. A full queue drops the event; any
failure is logged and never reaches the request. Spool files left by a process that died (the
server's, or its spool process's) are stored when the next writer starts, or when the writer
sees its spool process end (a frame torn by the crash is dropped; a failed plain write is cut
off again).

:class:`CaptureService` reads the captured records back and turns them into a dataset version,
so monitoring can compare live inputs with the training data.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from civicml.core.errors import ConfigurationError, InvalidInputError
from civicml.core.process import process_alive
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.serving._capture_format import (
    CaptureEvent,
    CaptureLines,
    _iso,
    _second,
    capture_lines,
    capture_records,
    sent_text,
)
from civicml.serving._capture_spool import SpoolProcess
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
    """Appends captured events to spool files — by its spool process, handed them from the
    event loop or a background thread, or by that thread itself — and rotates the files into the
    artifact store.

    Args:
        ctx: Stores used to store and index the capture files.
        max_bytes: Rotate a spool file once it holds this many bytes.
        max_age_s: Rotate a spool file once it is this old (seconds).
        queue_size: Events waiting to be written; beyond this new events are dropped.
        random: The sampler, ``[0, 1)`` per call (injectable for tests).
        format_process: Whether events are formatted and written by a process of the
            writer's own (:class:`~civicml.serving._capture_spool.SpoolProcess`), the thread
            only handing them over; None: as the setting ``serving_capture_format`` says
            ("process"; "auto" is decided by the server).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        random: Callable[[], float] = random.random,
        format_process: bool | None = None,
    ) -> None:
        self._ctx = ctx
        if format_process is None:
            format_process = ctx.settings.serving_capture_format == "process"
        self._dir = ctx.settings.home / "serving" / "capture-spool"
        store = ctx.artifacts
        self._process = (
            SpoolProcess(
                self._dir,
                max_bytes=max_bytes,
                max_age_s=max_age_s,
                keys=store.keys if store.encrypt and store.keys is not None else None,
                on_closed=self._store_closed,
                recover=functools.partial(self._guard, self._recover),
            )
            if format_process
            else None
        )
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
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        #: The event loop requests are answered on (:meth:`attach_loop`), its thread, and the
        #: events captured on it since it last handed them to the spool process.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._pending: list[CaptureEvent | CaptureLines] = []
        self.dropped = 0
        self.failed = 0

    def sampled(self, percent: float) -> bool:
        """Whether to capture one request at ``percent`` (0 never, 100 always)."""
        if percent <= 0:
            return False
        return percent >= 100 or self._random() * 100 < percent

    def attach_loop(self) -> None:
        """Hand events captured on the running event loop's thread to the spool process from
        that loop, a batch every :data:`COALESCE_S`, rather than through the writer's thread:
        waking another thread to take the interpreter lock from the loop answering requests
        costs both of them more than the handing over itself (call it on the loop: the
        server's start). Events captured on other threads, and any the process cannot take at
        once, go through the thread as before."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def submit(self, event: CaptureEvent | CaptureLines) -> None:
        """Queue an event (or lines formatted elsewhere); never blocks (a full queue drops it
        and logs)."""
        if self._closed:
            return
        if (
            self._loop_thread == threading.get_ident()
            and self._process is not None
            and self._process.ready()
        ):
            pending = self._pending
            if len(pending) >= self._queue_size:
                self._drop()
                return
            pending.append(event)
            if len(pending) == 1:
                self._loop.call_later(COALESCE_S, self._hand_pending)  # type: ignore[union-attr]
            return
        self._enqueue(event)

    def _enqueue(self, event: CaptureEvent | CaptureLines) -> None:
        self._ensure_started()
        if self._queue.qsize() < self._queue_size:
            self._queue.put(event)
        else:
            self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("capture queue full: %d event(s) dropped so far", self.dropped)

    def _hand_pending(self, *, nowait: bool = True) -> None:
        """(The event loop.) Send the events captured on it to the spool process; what it
        cannot take now goes to the writer's thread."""
        events, self._pending = self._pending, []
        if not events:
            return
        left = events
        if nowait and self._process is not None and self._loop is not None:
            try:
                left = self._process.hand_over_nowait(events, self._loop)
            except Exception:
                log.exception("handing events to the capture spool process failed")
        for event in left:
            self._enqueue(event)

    def _settle_loop(self, timeout: float) -> None:
        """Before a flush or close: the events captured on the event loop handed over (from
        the loop; from here when it does not run), and, at close, the loop's last batch
        written out."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() != self._loop_thread and loop.is_running():
            done = threading.Event()

            def hand() -> None:
                try:
                    self._hand_pending()
                finally:
                    done.set()

            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(hand)
                if done.wait(timeout):
                    return
        # the loop's thread, or a loop that no longer runs (nothing else touches these now)
        self._hand_pending(nowait=False)

    def flush(self, timeout: float = 30.0) -> bool:
        """Write out every queued event and rotate all spool files now; True when done."""
        self._settle_loop(timeout)
        if self._thread is None:  # nothing queued; the process may have been handed events
            return self._process is None or self._process.flush(timeout)
        marker = _Flush(threading.Event())
        self._queue.put(marker)  # never blocks: a marker is never dropped
        return marker.done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop the background thread."""
        if self._closed:
            return
        self._closed = True  # no more events taken; then those the loop holds handed over
        self._settle_loop(timeout)
        if self._process is not None and (
            threading.get_ident() == self._loop_thread
            or self._loop is None
            or not self._loop.is_running()
        ):
            self._process.settle()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        if self._process is not None and (self._thread is None or not self._thread.is_alive()):
            self._process.close()

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
                self._finish()
                return
            if isinstance(item, _Flush):
                self._flush_all(item)
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
                self._finish()
                return
            if isinstance(following, _Flush):
                self._flush_all(following)

    def _flush_all(self, marker: _Flush) -> None:
        """Rotate every spool file, this thread's and the spool process's, then say so."""
        self._guard(self._rotate_all)
        if self._process is not None:
            self._process.flush()
        marker.done.set()

    def _finish(self) -> None:
        self._guard(self._rotate_all)
        if self._process is not None:
            self._process.close()

    def _append_all(self, events: list[CaptureEvent | CaptureLines]) -> None:
        """Hand the events to the spool process when there is one (it formats and writes
        them); format the rest here (a failing one loses only its own records) into its spool's
        buffer, then write each spool's buffer at once (one sealed frame) and flush."""
        touched: dict[int, _Spool] = {}
        items: list[CaptureEvent | CaptureLines] = events
        if self._process is not None:
            try:
                items = self._process.hand_over(events)
            except Exception:  # written here instead
                log.exception("handing events to the capture spool process failed")
        here = 0
        for item in items:
            if isinstance(item, CaptureEvent):
                if here and not here % YIELD_EVERY:
                    time.sleep(0)  # hand the interpreter lock to a request waiting for it
                here += 1
            spool = self._guard_value(functools.partial(self._append, item))
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
        """Add one event's lines (or the lines given: formatted elsewhere) to its spool's
        buffer (written by :meth:`_append_all`, or when the spool rotates); the spool, or None
        if rotated."""
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

    def _store_closed(self, path: Path) -> None:
        """Store a spool file the spool process closed (its name says whose records)."""
        _, project_id, endpoint_id, hour, _ = path.name.split("-")
        self._guard(functools.partial(self._store, path, project_id, endpoint_id, hour))

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
        import pandas as pd  # type: ignore[import-untyped]

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
