"""``ml.pipelines``: run ``@cm.pipeline`` functions on the embedded platform.

A pipeline's steps are Python functions of the calling process, so they run where the client
runs: against a remote server there is nothing to send them to yet (REST and CLI for pipelines
come with a worker that can import the user's code).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from civicml.core.errors import ConfigurationError
from civicml.pipelines.dsl import BoundPipeline, Pipeline
from civicml.pipelines.schemas import Execution

__all__ = ["PipelinesHandle"]


class PipelinesHandle:
    """Run, retry, show and list pipeline executions (embedded backend)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def _service(self, max_workers: int = 4) -> Any:
        if self._backend.remote:
            raise ConfigurationError(
                "Pipelines run in the client's process; a remote civicml server cannot run "
                "this process's Python functions.",
                hint="Connect to the embedded platform: cm.connect(home=...) on a machine that "
                "shares the server's stores.",
            )
        from civicml.pipelines.service import PipelineService

        return PipelineService(self._backend.ctx, max_workers=max_workers)

    def run(
        self,
        pipeline_fn: Pipeline | BoundPipeline,
        *,
        project: str,
        params: Mapping[str, Any] | None = None,
        max_workers: int = 4,
    ) -> Execution:
        """Execute the pipeline in ``project``; unchanged steps come from the cache.

        Example:
            >>> execution = ml.pipelines.run(training, project="benefits")  # doctest: +SKIP
        """
        service = self._service(max_workers)
        return service.run(pipeline_fn, project=project, params=params)  # type: ignore[no-any-return]

    def retry(self, execution_id: str, pipeline_fn: Pipeline | None = None) -> Execution:
        """Re-run the failed steps of an execution and what depends on them."""
        return self._service().retry(execution_id, pipeline_fn)  # type: ignore[no-any-return]

    def get(self, execution_id: str) -> Execution:
        """One execution with its steps and their cache keys."""
        return self._service().get(execution_id)  # type: ignore[no-any-return]

    def list(self, project: str, *, pipeline: str | None = None) -> builtins.list[Execution]:
        """The executions in ``project``, newest first."""
        return builtins.list(self._service().list(project, pipeline=pipeline))
