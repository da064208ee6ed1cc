"""Rows of batch jobs: the checks before one is recorded, reading one, and its schema."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select, update

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.serving._batch_engine import Tally
from civicml.serving._tables import batch_jobs
from civicml.serving.batch_schemas import BatchJob, BatchJobCreate, BatchJobStatus, BatchJoin
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = [
    "AUDITED",
    "BEAT_S",
    "check_columns",
    "heartbeat",
    "job_row",
    "record_failure",
    "record_success",
    "to_job",
]

#: Seconds between two heartbeats of a running job (one write per chunk at most).
BEAT_S = 5.0

#: The columns of a job the ``batch_job.created`` audit event carries.
AUDITED = (
    "model_name",
    "model_version",
    "model_version_id",
    "input_dataset",
    "input_version",
    "input_version_id",
    "output_dataset",
    "join_source",
    "id_column",
    "explain",
    "chunk_rows",
    "executor",
)


def check_columns(signature: Any, data: DatasetVersion, request: BatchJobCreate) -> None:
    """Refuse a job whose input lacks the model's columns (as registered) or the id column,
    or already has a ``prediction`` column to join with."""
    have = {c.name for c in data.columns}
    label = f"{data.name} v{data.version}"
    if signature:
        names = [str(c.name if hasattr(c, "name") else c["name"]) for c in signature]
        missing = [n for n in names if n not in have]
        if missing:
            raise InvalidInputError(
                f"Dataset {label} lacks the model's input columns {', '.join(map(repr, missing))}.",
                hint=f"Model {request.model} reads: {', '.join(names)}.",
            )
    if request.id_column is not None and request.id_column not in have:
        raise InvalidInputError(
            f"Dataset {label} has no column {request.id_column!r} (id_column).",
            hint=f"Its columns: {', '.join(sorted(have)[:20])}.",
        )
    if request.join is BatchJoin.INPUT and "prediction" in have:
        raise InvalidInputError(
            f"Dataset {label} already has the output column 'prediction'.",
            hint="Use join='none' (with id_column naming the column that identifies a row), "
            "or drop or rename the column first.",
        )


def job_row(conn: Connection, project_id: str, job_id: str) -> Any:
    """The row of job ``job_id`` of the project, or None."""
    return conn.execute(
        select(batch_jobs).where(batch_jobs.c.id == job_id, batch_jobs.c.project_id == project_id)
    ).first()


def to_job(values: Any, project: str) -> BatchJob:
    """The :class:`BatchJob` of a row (or a dict of its values)."""
    started, ended = values.get("started_at"), values.get("ended_at")
    return BatchJob(
        id=values["id"],
        project=project,
        status=BatchJobStatus(values["status"]),
        model_name=values["model_name"],
        model_version=values["model_version"],
        model_version_id=values["model_version_id"],
        input_dataset=values["input_dataset"],
        input_version=values["input_version"],
        input_version_id=values["input_version_id"],
        output_dataset=values["output_dataset"],
        output_version=values.get("output_version"),
        output_version_id=values.get("output_version_id"),
        join=BatchJoin(values["join_source"]),
        id_column=values.get("id_column"),
        explain=bool(values["explain"]),
        chunk_rows=values["chunk_rows"],
        executor=values["executor"],
        rows=values.get("rows"),
        chunks=values.get("chunks"),
        error=values.get("error"),
        created_at=values["created_at"],
        created_by=values["created_by"],
        started_at=started,
        ended_at=ended,
        duration_s=None if started is None or ended is None else (ended - started).total_seconds(),
    )


def heartbeat(ctx: Context, job_id: str) -> Callable[[Tally], None]:
    """A callback that records the job's heartbeat and rows so far (at most every
    :data:`BEAT_S` seconds)."""
    last = [time.monotonic()]

    def beat(tally: Tally) -> None:
        if time.monotonic() - last[0] < BEAT_S:
            return
        last[0] = time.monotonic()
        with ctx.db.write() as uow:
            uow.conn.execute(
                update(batch_jobs)
                .where(batch_jobs.c.id == job_id)
                .values(heartbeat_at=ctx.clock.now(), rows=tally.rows)
            )

    return beat


def record_success(
    ctx: Context, uow: UnitOfWork, job: BatchJob, version: DatasetVersion, tally: Tally
) -> None:
    """Inside the unit of work that records the output version: the job ``succeeded``, its
    ``Produced`` edge to the output and ``batch_job.succeeded``.

    Raises:
        ConflictError: The job was marked failed meanwhile (nothing commits).
    """
    now = ctx.clock.now()
    changed = uow.conn.execute(
        update(batch_jobs)
        .where(
            batch_jobs.c.id == job.id,
            batch_jobs.c.status == BatchJobStatus.RUNNING.value,
        )
        .values(
            status=BatchJobStatus.SUCCEEDED.value,
            output_version_id=version.id,
            output_version=version.version,
            rows=tally.rows,
            chunks=tally.chunks,
            heartbeat_at=now,
            ended_at=now,
        )
    ).rowcount
    if not changed:  # marked failed meanwhile (its heartbeat looked stopped)
        raise ConflictError(
            f"Batch job {job.id} was marked failed while it ran; its output is not recorded.",
            hint="Run it again; raise run_heartbeat_timeout_s if chunks take that long.",
        )
    project_id = uow.conn.execute(
        select(batch_jobs.c.project_id).where(batch_jobs.c.id == job.id)
    ).scalar_one()
    lineage = LineageService(ctx)
    node = lineage.node(uow, "batch_job", job.id, project_id=project_id)
    output = lineage.node(uow, "dataset_version", version.id, project_id=project_id)
    lineage.link(uow, node, output, "Produced")
    AuditTrail(ctx).record(
        uow,
        "batch_job.succeeded",
        "batch_job",
        job.id,
        project=job.project,
        before={"status": "running"},
        after={
            "status": "succeeded",
            "output_dataset": version.name,
            "output_version": version.version,
            "output_version_id": version.id,
            "digest": version.digest,
            "rows": tally.rows,
            "chunks": tally.chunks,
            "workers": len(tally.workers),
        },
    )


def record_failure(
    ctx: Context, job_id: str, project: str, reason: str, was: BatchJobStatus
) -> bool:
    """Record the job ``failed`` with ``reason`` (if it is still ``was``)."""
    reason = reason[:2000]
    with ctx.db.write() as uow:
        changed = uow.conn.execute(
            update(batch_jobs)
            .where(batch_jobs.c.id == job_id, batch_jobs.c.status == was.value)
            .values(status=BatchJobStatus.FAILED.value, error=reason, ended_at=ctx.clock.now())
        ).rowcount
        if changed:
            AuditTrail(ctx).record(
                uow,
                "batch_job.failed",
                "batch_job",
                job_id,
                project=project,
                before={"status": was.value},
                after={"status": "failed", "reason": reason},
            )
    return bool(changed)
