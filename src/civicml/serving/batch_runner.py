"""Batch jobs in background threads: how the server runs the jobs ``POST …/batch-jobs``
queued (the client polls ``GET``)."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from civicml.serving.batch import BatchService
from civicml.serving.batch_schemas import BatchJobFailedError
from civicml.store.context import Context

__all__ = ["BatchRunner", "background_runner"]

log = logging.getLogger("civicml.serving.batch")


class BatchRunner:
    """Runs jobs in background threads of this process (the server's way: ``POST`` answers
    ``202 Accepted`` with the queued job, the client polls ``GET``). At most ``workers`` jobs
    run at once; the others wait ``queued``. A job that fails is recorded ``failed`` (and
    logged without its data); if the process dies, the next list marks it failed.

    Args:
        workers: Jobs run at once.
    """

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="civicml-batch")

    def submit(self, ctx: Context, project: str, job_id: str) -> None:
        """Run the queued job ``job_id`` as ``ctx.principal``, in the background."""
        self._pool.submit(_run_logged, ctx, project, job_id)

    def close(self) -> None:
        """Wait for the jobs that run and are queued here."""
        self._pool.shutdown(wait=True)


def _run_logged(ctx: Context, project: str, job_id: str) -> None:
    try:
        BatchService(ctx).execute(project, job_id)
    except BatchJobFailedError as err:
        log.info("batch job %s failed: %s", job_id, err.message)
    except Exception:
        log.exception("batch job %s could not run", job_id)


@functools.cache
def background_runner() -> BatchRunner:
    """This process's :class:`BatchRunner` (made on first use)."""
    return BatchRunner()
