"""``ml.pipelines``: run ``@cm.pipeline`` functions on the embedded platform, read executions
anywhere.

A pipeline's steps are Python functions of the calling process, so they run where the client
runs: against a remote server there is nothing to send them to, and ``run`` and ``retry`` need
the embedded platform. Reading executions, their HTML graph and cancelling work remotely too,
through ``/api/v1/pipelines/executions``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.errors import ConfigurationError
from civicml.pipelines.dsl import BoundPipeline, Pipeline
from civicml.pipelines.schemas import Execution

__all__ = ["PipelinesHandle"]

_EXECUTIONS: TypeAdapter[list[Execution]] = TypeAdapter(list[Execution])


class PipelinesHandle:
    """Run and retry pipelines (embedded backend); get, list, cancel executions (either)."""

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
        if self._backend.remote:
            return Execution.model_validate(self._backend._json("GET", _path(execution_id)))
        return self._service().get(execution_id)  # type: ignore[no-any-return]

    def list(self, project: str, *, pipeline: str | None = None) -> builtins.list[Execution]:
        """The executions in ``project``, newest first."""
        if self._backend.remote:
            path = f"/api/v1/projects/{quote(project, safe='')}/pipelines/executions"
            params = {} if pipeline is None else {"pipeline": pipeline}
            return _EXECUTIONS.validate_python(self._backend._json("GET", path, params=params))
        return builtins.list(self._service().list(project, pipeline=pipeline))

    def cancel(self, execution_id: str) -> Execution:
        """Mark a running or waiting execution cancelled (``retry`` resumes it)."""
        if self._backend.remote:
            data = self._backend._json("POST", f"{_path(execution_id)}/cancel", json_body={})
            return Execution.model_validate(data)
        return self._service().cancel(execution_id)  # type: ignore[no-any-return]

    def graph_html(self, execution_id: str) -> str:
        """The execution's graph as a self-contained HTML page (status, duration, cache hit)."""
        if self._backend.remote:
            return str(self._backend.call("GET", f"{_path(execution_id)}/graph.html").text)
        return self._service().graph_html(execution_id)  # type: ignore[no-any-return]


def _path(execution_id: str) -> str:
    return f"/api/v1/pipelines/executions/{quote(execution_id, safe='')}"
