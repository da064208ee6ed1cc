"""``proj.batch``: batch prediction jobs (a dataset version in, a predictions version out),
embedded or against a server.

Embedded, :meth:`BatchHandle.run` runs the job in this process and returns it finished. Remote,
``POST /api/v1/projects/{project}/batch-jobs`` checks the job and answers ``202 Accepted``; the
server runs it in a background thread and :meth:`BatchHandle.run` polls ``GET …/batch-jobs/{id}``
until it succeeded or failed (``wait=False`` returns the queued job at once).
"""

from __future__ import annotations

import builtins
import time
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from civicml.core.errors import InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.registry.schemas import ModelVersion
from civicml.serving.batch_schemas import (
    BatchJob,
    BatchJobCreate,
    BatchJobFailedError,
    BatchJobStatus,
)

__all__ = ["BatchHandle"]

_JOBS: TypeAdapter[list[BatchJob]] = TypeAdapter(list[BatchJob])
_DONE = (BatchJobStatus.SUCCEEDED, BatchJobStatus.FAILED)


class BatchHandle:
    """The batch prediction jobs of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> job = proj.batch.run(  # doctest: +SKIP
        ...     "eligibility", 3, dataset="applications", output="applications-scored"
        ... )
        >>> proj.datasets.to_pandas(proj.batch.output(job))  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    def _service(self) -> Any:
        from civicml.serving.batch import BatchService

        return BatchService(self._backend.ctx)

    @property
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(self._project, safe='')}/batch-jobs"

    def run(
        self,
        model: str | ModelVersion,
        version: int | str | None = None,
        *,
        dataset: str | DatasetVersion,
        dataset_version: int | str = "latest",
        output: str,
        join: str = "input",
        id_column: str | None = None,
        explain: bool = False,
        chunk_rows: int = 50_000,
        description: str = "",
        wait: bool = True,
        timeout_s: float = 3600.0,
    ) -> BatchJob:
        """Predict every row of a dataset version with a model version; the predictions
        become a new version of dataset ``output``.

        Args:
            model: A registered model's name, or a :class:`ModelVersion`.
            version: The version number or an alias (``"production"``); taken from ``model``
                when it is a version.
            dataset: The input dataset's name, or a :class:`DatasetVersion`.
            dataset_version: Its version number or ``"latest"`` (ignored for a version).
            output: The dataset the predictions become a version of (created if needed).
            join: ``"input"`` (every input column, then the outputs) or ``"none"`` (only
                ``id_column``, else ``row``, and the outputs).
            id_column: With ``join="none"``, the input column that identifies a row.
            explain: Add per-row SHAP attributions (``shap_<column>``, ``shap_base_value``).
            chunk_rows: Rows predicted at once (memory stays at about one chunk).
            description: Kept with the job's output version.
            wait: Remote only: poll until the job ends (False returns it queued).
            timeout_s: Remote only: how long to wait before giving up polling.

        Raises:
            BatchJobFailedError: The job ran and failed (it stays listed, with the reason).
            InvalidInputError, NotFoundError, PermissionDeniedError: It could not start.
        """
        if isinstance(model, ModelVersion):
            name, version = model.name, model.version if version is None else version
        else:
            name = model
        if version is None:
            raise InvalidInputError(
                f"Name the version of model {name!r} to predict with.",
                hint="Pass a version number or an alias, e.g. proj.batch.run('m', 3, ...).",
            )
        if isinstance(dataset, DatasetVersion):
            source, dataset_version = dataset.name, dataset.version
        else:
            source = dataset
        request = _request(
            {
                "model": name,
                "model_version": version,
                "input_dataset": source,
                "input_version": dataset_version,
                "output_dataset": output,
                "join": join,
                "id_column": id_column,
                "explain": explain,
                "chunk_rows": chunk_rows,
                "description": description,
            }
        )
        if not self._backend.remote:
            return self._service().run(self._project, request)  # type: ignore[no-any-return]
        body = request.model_dump(mode="json", exclude_none=True)
        job = BatchJob.model_validate(self._backend._json("POST", self._base, json_body=body))
        return self.wait(job.id, timeout_s=timeout_s) if wait else job

    def wait(self, job_id: str, *, timeout_s: float = 3600.0) -> BatchJob:
        """Poll the job until it succeeded (returned) or failed (raised).

        Raises:
            BatchJobFailedError: The job failed.
            TimeoutError: It was still running after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while True:
            job = self.get(job_id)
            if job.status is BatchJobStatus.FAILED:
                raise BatchJobFailedError(
                    f"Batch job {job.id} failed: {job.error}",
                    hint=f"See the job: civicml batch show {job.id} -p {self._project}",
                )
            if job.status in _DONE:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"Batch job {job_id} is still {job.status.value}.")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def get(self, job_id: str) -> BatchJob:
        """One job."""
        if self._backend.remote:
            data = self._backend._json("GET", f"{self._base}/{quote(job_id, safe='')}")
            return BatchJob.model_validate(data)
        return self._service().get(self._project, job_id)  # type: ignore[no-any-return]

    def list(self, *, limit: int = 100, status: str | None = None) -> builtins.list[BatchJob]:
        """The project's jobs, newest first (only those with ``status`` when given)."""
        state = None if status is None else _status(status)
        if self._backend.remote:
            params: dict[str, Any] = {"limit": limit}
            if state is not None:
                params["status"] = state.value
            return _JOBS.validate_python(self._backend._json("GET", self._base, params=params))
        return builtins.list(self._service().list(self._project, limit=limit, status=state))

    def output(self, job: BatchJob | str) -> DatasetVersion:
        """The dataset version a succeeded job wrote.

        Raises:
            InvalidInputError: The job has not succeeded.
        """
        found = self.get(job) if isinstance(job, str) else job
        if found.output_version is None:
            raise InvalidInputError(
                f"Batch job {found.id} is {found.status.value}; it has no output version.",
                hint="Wait for it: proj.batch.wait(job_id).",
            )
        from civicml.sdk.datasets import DatasetsHandle

        return DatasetsHandle(self._backend, self._project).version(
            found.output_dataset, found.output_version
        )


def _status(value: str) -> BatchJobStatus:
    try:
        return BatchJobStatus(value)
    except ValueError:
        raise InvalidInputError(
            f"{value!r} is not a batch job status.",
            hint=f"Use one of: {', '.join(s.value for s in BatchJobStatus)}.",
        ) from None


def _request(values: dict[str, Any]) -> BatchJobCreate:
    """The request, or one InvalidInputError saying what is wrong with it."""
    try:
        return BatchJobCreate.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise InvalidInputError(
            f"Invalid batch job: {problems}.",
            hint="civicml batch run --help lists the options (docs/serving.md).",
        ) from None
