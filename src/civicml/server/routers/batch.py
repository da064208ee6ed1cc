"""Batch prediction jobs: a dataset version in, a predictions dataset version out.

``POST`` checks the job (permissions, model version, input version and its columns: any problem
is a 4xx at once), records it ``queued`` and answers ``202 Accepted`` with a ``Location``; the
server runs it in a background thread (at most two at once per server process) and the client
polls ``GET …/batch-jobs/{id}`` until it is ``succeeded`` (the output version is named) or
``failed`` (with the reason). Creating takes ``datasets.write`` (plus ``models.read`` and
``datasets.read``), reading ``datasets.read``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Response

from civicml.server.deps import Services, services
from civicml.serving.batch import MAX_LIST, BatchService
from civicml.serving.batch_runner import background_runner
from civicml.serving.batch_schemas import BatchJob, BatchJobCreate, BatchJobStatus

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["batch"])
Svc = Annotated[Services, Depends(services)]
JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST, description="Most recent jobs to return.")]


@router.post("/batch-jobs", response_model=BatchJob, status_code=202)
def create_job(project: str, body: BatchJobCreate, svc: Svc, response: Response) -> BatchJob:
    """Check and queue a batch prediction job; it runs in the background (`datasets.write`)."""
    job = BatchService(svc.ctx).create(project, body)
    background_runner().submit(svc.ctx, job.project, job.id)
    response.headers["Location"] = (
        f"/api/v1/projects/{quote(job.project, safe='')}/batch-jobs/{quote(job.id, safe='')}"
    )
    return job


@router.get("/batch-jobs", response_model=list[BatchJob])
def list_jobs(
    project: str,
    svc: Svc,
    limit: Limit = 100,
    status: Annotated[BatchJobStatus | None, Query(description="Only jobs in this state.")] = None,
) -> list[BatchJob]:
    """The project's batch jobs, newest first (`datasets.read`)."""
    return BatchService(svc.ctx).list(project, limit=limit, status=status)


@router.get("/batch-jobs/{job_id}", response_model=BatchJob)
def get_job(project: str, job_id: JobId, svc: Svc) -> BatchJob:
    """One batch job: status, counts, timings, output version or error (`datasets.read`)."""
    return BatchService(svc.ctx).get(project, job_id)
