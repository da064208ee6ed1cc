"""Batch prediction jobs: a dataset version in, a predictions dataset version out.

SageMaker's batch transform for civicml's registry and datasets. :meth:`BatchService.create`
checks everything it can (the caller's permissions, the model version, the input version and its
columns) and records a ``queued`` job; :meth:`BatchService.execute` runs it: the input is read
in chunks of ``chunk_rows`` (:meth:`DatasetService.iter_batches
<civicml.data.service.DatasetService.iter_batches>`), each chunk predicted as an endpoint
predicts (verified model files, the compiled fast path, the sandbox for pickles;
:mod:`civicml.serving._batch_engine`) and streamed straight into :meth:`DatasetService.ingest
<civicml.data.service.DatasetService.ingest>` as an Arrow stream, which writes the canonical
Parquet to a temp file, stores it by SHA-256 and records the output version. The stages overlap
on threads: the input is read one chunk ahead of the prediction, the ingest profiles, hashes and
writes the predicted chunks on another thread, and the artifact store stores the Parquet bytes as
they are written on a fourth. Memory stays at a few chunks (a few more with Ray).

The output's input columns are the input version's, row for row: the ingest takes their profiles
and (when the input's scan sampled the same rows) their personal-data findings from the input
version (``same_columns``) and computes only the output columns'; the result is the version an
ingest of the same table from scratch makes (the same content hash and file; the same findings;
the same profiles, to the last bits of a mean or standard deviation summed over other chunks).

Permissions: creating and running a job takes ``datasets.write`` (it writes a dataset version)
plus ``models.read`` and ``datasets.read`` (it reads both); listing and showing jobs takes
``datasets.read``.

One unit of work per change: ``batch_job.created`` with the job's lineage node (the model
version and input version ``ContributedTo`` it); the output version, the job's ``succeeded`` row,
its ``Produced`` edge to the output and ``batch_job.succeeded`` commit together with the dataset
version (the ``recorded`` hook of ``ingest``), or none of them does; ``batch_job.failed`` with
the reason otherwise.

Crash safety: a job records the process that runs it (host, pid and the pid's start tick) and a
heartbeat after each chunk. A killed job never leaves an output version: the version is recorded
only after the last chunk, in the job's final unit of work, and its temp file is named for the
dead process, so the artifact store's ``recover()`` removes it. Every :meth:`~BatchService.list`
and :meth:`~BatchService.get` first marks ``failed`` the queued or running jobs whose process is
gone (same host) or whose heartbeat is older than ``run_heartbeat_timeout_s`` (another host).
"""

from __future__ import annotations

import builtins
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from sqlalchemy import insert, select, update

from civicml.core.errors import CivicMLError, ConflictError, InvalidInputError, NotFoundError
from civicml.core.ids import new_id
from civicml.core.names import name_key, validate_name
from civicml.core.process import hostname, process_alive, process_identity
from civicml.data._pipeline import Prefetch
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving._batch_engine import Plan, Tally, check_plan, predicted
from civicml.serving._batch_rows import (
    AUDITED,
    check_columns,
    heartbeat,
    job_row,
    record_failure,
    record_success,
    to_job,
)
from civicml.serving._tables import batch_jobs
from civicml.serving.batch_schemas import (
    BatchJob,
    BatchJobCreate,
    BatchJobFailedError,
    BatchJobStatus,
    BatchJoin,
)
from civicml.serving.runtime import LoadedModel, load_version
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["MAX_LIST", "BatchService"]

log = logging.getLogger("civicml.serving.batch")

#: The most jobs one list returns.
MAX_LIST = 1_000
_OPEN = (BatchJobStatus.QUEUED.value, BatchJobStatus.RUNNING.value)


class BatchService:
    """Batch prediction jobs of a project, for ``ctx.principal``.

    Args:
        ctx: The stores, the caller and the clock.

    Example:
        >>> request = BatchJobCreate(  # doctest: +SKIP
        ...     model="eligibility", model_version=3, input_dataset="applications",
        ...     output_dataset="applications-scored",
        ... )
        >>> BatchService(ctx).run("benefits", request).output_version  # doctest: +SKIP
        1
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)

    # Jobs -------------------------------------------------------------------------------------
    def run(self, project: str, request: BatchJobCreate) -> BatchJob:
        """:meth:`create` the job and :meth:`execute` it here, now."""
        return self.execute(project, self.create(project, request).id)

    def create(self, project: str, request: BatchJobCreate) -> BatchJob:
        """Check a job and record it ``queued`` (run it with :meth:`execute`).

        Raises:
            PermissionDeniedError: The caller lacks ``datasets.write``, ``datasets.read`` or
                ``models.read`` on the project.
            NotFoundError: The project, model, version, alias or input dataset does not exist.
            InvalidInputError: A bad name or option, or an input without the model's columns.
            ConflictError: The model version is archived.
        """
        proj = self._projects.get(project, "datasets.write")
        output = validate_name("Dataset", request.output_dataset)
        if request.id_column is not None and request.join is BatchJoin.INPUT:
            raise InvalidInputError(
                "id_column only applies to join='none' (join='input' keeps every input column).",
                hint="Pass join='none' with id_column, or leave id_column out.",
            )
        mv = RegistryService(self._ctx).get_version(proj.name, request.model, request.model_version)
        if mv.archived:
            raise ConflictError(
                f"Model version {mv.name}/{mv.version} is archived; it makes no new predictions.",
                hint=f"Use another version: civicml models versions {mv.name} -p {proj.name}",
            )
        data = DatasetService(self._ctx).get_version(
            proj.name, request.input_dataset, request.input_version
        )
        check_columns(mv.signature, data, request)
        if name_key(output) == name_key(data.name):
            raise InvalidInputError(
                f"The output dataset must not be the input dataset {data.name!r}.",
                hint=f"Name another one, e.g. --output {data.name}-scored.",
            )
        host, pid, start = process_identity()
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        values: dict[str, Any] = {
            "id": new_id(),
            "project_id": proj.id,
            "status": BatchJobStatus.QUEUED.value,
            "model_name": mv.name,
            "model_version_id": mv.id,
            "model_version": mv.version,
            "input_dataset": data.name,
            "input_version_id": data.id,
            "input_version": data.version,
            "output_dataset": output,
            "join_source": request.join.value,
            "id_column": request.id_column,
            "explain": request.explain,
            "chunk_rows": request.chunk_rows,
            "executor": "local" if self._ctx.settings.compute == "local" else "ray",
            "host": host[:256],
            "pid": pid,
            "pid_start": start,
            "heartbeat_at": now,
            "created_at": now,
            "created_by": user,
        }
        with self._ctx.db.write() as uow:
            uow.conn.execute(insert(batch_jobs).values(**values))
            self._lineage.derived(
                uow,
                "batch_job",
                values["id"],
                name=f"batch {mv.name} v{mv.version} on {data.name} v{data.version}",
                project_id=proj.id,
                sources=[
                    ("model_version", mv.id, f"{mv.name} v{mv.version}"),
                    ("dataset_version", data.id, f"{data.name} v{data.version}"),
                ],
            )
            self._audit.record(
                uow,
                "batch_job.created",
                "batch_job",
                values["id"],
                project=proj.name,
                after={k: values[k] for k in AUDITED},
            )
        return to_job(values, proj.name)

    def execute(self, project: str, job_id: str) -> BatchJob:
        """Run the queued job ``job_id`` in this process and return it ``succeeded``.

        Raises:
            NotFoundError: No such job in the project.
            ConflictError: The job is not queued (it ran, or runs elsewhere).
            BatchJobFailedError: It failed (the job is recorded ``failed`` with the reason and
                nothing was written to its output).
        """
        proj = self._projects.get(project, "datasets.write")
        job = self._claim(proj.id, proj.name, job_id)
        try:
            self._produce(job)
        except CivicMLError as err:
            record_failure(self._ctx, job.id, proj.name, err.message, BatchJobStatus.RUNNING)
            raise BatchJobFailedError(
                f"Batch job {job.id} failed: {err.message}", hint=err.hint
            ) from err
        except BaseException as err:
            log.exception("batch job %s failed", job.id)
            reason = f"internal error ({type(err).__name__}); the server log has the details"
            record_failure(self._ctx, job.id, proj.name, reason, BatchJobStatus.RUNNING)
            raise
        return self.get(proj.name, job.id)

    def get(self, project: str, job_id: str) -> BatchJob:
        """One job of ``project``.

        Raises:
            NotFoundError: No such job in the project (or no such project).
        """
        proj = self._projects.get(project, "datasets.read")
        self.recover_abandoned()
        with self._ctx.db.read() as conn:
            row = job_row(conn, proj.id, job_id)
        if row is None:
            raise NotFoundError(
                f"Batch job {job_id!r} does not exist in project {proj.name!r}.",
                hint=f"List the project's jobs: civicml batch list -p {proj.name}",
            )
        return to_job(row._mapping, proj.name)

    def list(
        self, project: str, *, limit: int = 100, status: BatchJobStatus | None = None
    ) -> builtins.list[BatchJob]:
        """The project's jobs, newest first (at most ``limit``, 1 to :data:`MAX_LIST`)."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInputError(f"limit must be 1 to {MAX_LIST}, not {limit}.")
        proj = self._projects.get(project, "datasets.read")
        self.recover_abandoned()
        query = select(batch_jobs).where(batch_jobs.c.project_id == proj.id)
        if status is not None:
            query = query.where(batch_jobs.c.status == BatchJobStatus(status).value)
        query = query.order_by(batch_jobs.c.created_at.desc(), batch_jobs.c.id.desc()).limit(limit)
        with self._ctx.db.read() as conn:
            rows = conn.execute(query).all()
        return [to_job(r._mapping, proj.name) for r in rows]

    def recover_abandoned(self) -> builtins.list[str]:
        """Mark ``failed`` every queued or running job whose process is gone (this host) or
        whose heartbeat stopped for ``run_heartbeat_timeout_s`` (another host); their ids."""
        here = hostname()[:256]
        cutoff = self._ctx.clock.now().timestamp() - self._ctx.settings.run_heartbeat_timeout_s
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(batch_jobs, projects.c.name.label("project_name"))
                .join(projects, projects.c.id == batch_jobs.c.project_id)
                .where(batch_jobs.c.status.in_(_OPEN))
            ).all()
        failed = []
        for row in rows:
            if row.host == here and row.pid is not None:
                if process_alive(row.pid, row.pid_start):
                    continue
                reason = f"abandoned: process {row.pid} on {here} is gone"
            elif row.heartbeat_at is None or row.heartbeat_at.timestamp() < cutoff:
                reason = "abandoned: no heartbeat from its process for too long"
            else:
                continue
            if record_failure(
                self._ctx, row.id, row.project_name, reason, BatchJobStatus(row.status)
            ):
                failed.append(row.id)
        return failed

    def predict_table(
        self,
        project: str,
        mv: ModelVersion,
        data: DatasetVersion,
        *,
        chunk_rows: int = 50_000,
        join: BatchJoin = BatchJoin.INPUT,
        explain: bool = False,
    ) -> tuple[Any, Tally]:
        """Every row of ``data`` predicted by ``mv`` chunk by chunk as a job predicts them, but
        returned as one ``pyarrow.Table`` (no job, no output version): for callers that keep the
        result in memory anyway (the ``batch_predict`` pipeline step). The :class:`Tally` says
        how many chunks ran and where.

        Raises:
            PermissionDeniedError: The caller lacks ``models.read`` or ``datasets.read``.
            InvalidInputError: ``chunk_rows`` is below 1, or the input lacks the model's columns.
        """
        if chunk_rows < 1:
            raise InvalidInputError(f"chunk_rows must be at least 1, not {chunk_rows}.")
        proj = self._projects.get(project, "datasets.read")
        mv = RegistryService(self._ctx).get_version(proj.name, mv.name, mv.version)
        datasets = DatasetService(self._ctx)
        data = datasets.get_version_by_id(data.id)
        loaded = load_version(self._ctx, mv, self._ctx.settings.home / "cache" / "models")
        plan = Plan(
            join=join, id_column=None, explain=explain, label=f"{data.name} v{data.version}"
        )
        check_plan(loaded, [c.name for c in data.columns], plan)
        tally = Tally()
        with _read_ahead(datasets, data, chunk_rows) as batches:
            parts = list(predicted(self._ctx, mv, loaded, batches, plan, tally))
        return pa.Table.from_batches(parts), tally

    # Running ----------------------------------------------------------------------------------
    def _claim(self, project_id: str, project: str, job_id: str) -> BatchJob:
        host, pid, start = process_identity()
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = job_row(uow.conn, project_id, job_id)
            if row is None:
                raise NotFoundError(f"Batch job {job_id!r} does not exist in project {project!r}.")
            changed = uow.conn.execute(
                update(batch_jobs)
                .where(
                    batch_jobs.c.id == job_id,
                    batch_jobs.c.status == BatchJobStatus.QUEUED.value,
                )
                .values(
                    status=BatchJobStatus.RUNNING.value,
                    host=host[:256],
                    pid=pid,
                    pid_start=start,
                    started_at=now,
                    heartbeat_at=now,
                )
            ).rowcount
            if not changed:
                raise ConflictError(
                    f"Batch job {job_id} is {row.status}; only a queued job can run.",
                    hint="Create a new job to predict again.",
                )
            values = {**row._mapping, "status": "running", "started_at": now}
        return to_job(values, project)

    def _produce(self, job: BatchJob) -> None:
        datasets = DatasetService(self._ctx)
        mv = RegistryService(self._ctx).get_version(job.project, job.model_name, job.model_version)
        data = datasets.get_version_by_id(job.input_version_id)
        # The input is opened (verified) and its first chunk read while the model loads.
        with _read_ahead(datasets, data, job.chunk_rows) as batches:
            loaded = load_version(self._ctx, mv, self._ctx.settings.home / "cache" / "models")
            try:
                plan = Plan(
                    join=job.join,
                    id_column=job.id_column,
                    explain=job.explain,
                    label=f"{data.name} v{data.version}",
                )
                check_plan(loaded, [c.name for c in data.columns], plan)
                self._predict_into(datasets, job, mv, loaded, plan, data, batches)
            finally:
                close = getattr(loaded.model, "close", None)
                if callable(close):  # a sandboxed pickle's worker process
                    close()

    def _predict_into(
        self,
        datasets: DatasetService,
        job: BatchJob,
        mv: ModelVersion,
        loaded: LoadedModel,
        plan: Plan,
        data: DatasetVersion,
        batches: Iterator[Any],
    ) -> None:
        """Predict ``batches`` and ingest the predictions as the job's output version."""
        tally = Tally()

        def recorded(uow: UnitOfWork, version: DatasetVersion) -> None:
            record_success(self._ctx, uow, job, version, tally)

        stream = predicted(
            self._ctx, mv, loaded, batches, plan, tally, heartbeat(self._ctx, job.id)
        )
        first = next(stream)
        reader = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], stream))
        datasets.ingest(
            job.project,
            job.output_dataset,
            reader,
            description=f"Predictions of {mv.name} v{mv.version} for {plan.label} "
            f"(batch job {job.id}).",
            progress=False,
            recorded=recorded,
            same_columns=(data, _input_columns(data, plan)),
        )


def _input_columns(data: DatasetVersion, plan: Plan) -> list[str]:
    """The output's columns that are the input's, row for row: every input column
    (``join="input"``) or the id column; the ingest reuses their profiles and scan."""
    if plan.join is BatchJoin.INPUT:
        return [c.name for c in data.columns]
    return [plan.id_column] if plan.id_column is not None else []


def _read_ahead(datasets: DatasetService, data: DatasetVersion, chunk_rows: int) -> Prefetch:
    """The input's chunks read (decrypted, verified, decoded) on a thread of their own, one
    chunk ahead of the prediction: reading costs about as much as predicting."""
    return Prefetch(
        datasets.iter_batches(data, batch_size=chunk_rows), 1, name="civicml-batch-read"
    )
