"""``proj.sources``: database and stream sources of a project, embedded or against a server.

The same calls work embedded (the service in-process) and remote
(``/api/v1/projects/{project}/sources``).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from civicml.core.errors import InvalidInputError
from civicml.sources.schemas import (
    Source,
    SourceCreate,
    SourceRun,
    SourceStatus,
    SourceUpdate,
)

__all__ = ["SourcesHandle"]

_SOURCES: TypeAdapter[list[Source]] = TypeAdapter(list[Source])
_RUNS: TypeAdapter[list[SourceRun]] = TypeAdapter(list[SourceRun])


class SourcesHandle:
    """The database and stream sources of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> proj.sources.add(  # doctest: +SKIP
        ...     "applications", kind="database", connection="warehouse",
        ...     database={"table": "applications", "watermark": "updated_at"}, every="15m",
        ... )
        >>> proj.sources.run("applications").versions  # doctest: +SKIP
        [1]
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    def _service(self) -> Any:
        from civicml.sources.service import SourceService

        return SourceService(self._backend.ctx)

    @property
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(self._project, safe='')}/sources"

    def _path(self, name: str) -> str:
        return f"{self._base}/{quote(name, safe='')}"

    def add(
        self,
        name: str,
        *,
        kind: str,
        url: str | None = None,
        connection: str | None = None,
        dataset: str | None = None,
        database: Mapping[str, Any] | None = None,
        stream: Mapping[str, Any] | None = None,
        cron: str | None = None,
        every: str | None = None,
        description: str = "",
        enabled: bool = True,
    ) -> Source:
        """Add a source (it reads nothing until it runs).

        Args:
            name: Unique in the project.
            kind: ``"database"``, ``"nats"``, ``"redis"``, ``"mqtt"`` or ``"rabbitmq"``.
            url: A URL without a password, e.g. ``"postgresql+psycopg://etl@db/agency"``.
            connection: Instead, a named connection of the ``source_connections`` setting.
            dataset: The dataset its versions go to (default ``name``).
            database: Kind database: ``{"table": …}`` or ``{"query": …}``, with an optional
                ``"watermark"`` column for incremental extraction and ``"chunk_rows"``.
            stream: Stream kinds: ``{"subject": …}`` (subject, key, topic or queue) and the
                batching: ``batch_rows``, ``window_s``, ``idle_s``, ``max_run_s``.
            cron: A five-field cron schedule (UTC).
            every: An interval instead, e.g. ``"15m"``.
            description: What it is for.
            enabled: False adds it paused.
        """
        request = _validated(
            SourceCreate,
            {
                "name": name,
                "kind": kind,
                "url": url,
                "connection": connection,
                "dataset": dataset,
                "database": None if database is None else dict(database),
                "stream": None if stream is None else dict(stream),
                "cron": cron,
                "every": every,
                "description": description,
                "enabled": enabled,
            },
        )
        if self._backend.remote:
            body = request.model_dump(mode="json", exclude_none=True)
            return Source.model_validate(self._backend._json("POST", self._base, json_body=body))
        return self._service().create(self._project, request)  # type: ignore[no-any-return]

    def list(self) -> builtins.list[Source]:
        """The project's sources by name."""
        if self._backend.remote:
            return _SOURCES.validate_python(self._backend._json("GET", self._base))
        return builtins.list(self._service().list(self._project))

    def get(self, name: str) -> Source:
        """One source with its committed position."""
        if self._backend.remote:
            return Source.model_validate(self._backend._json("GET", self._path(name)))
        return self._service().get(self._project, name)  # type: ignore[no-any-return]

    def update(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: str | None = None,
        unschedule: bool = False,
        enabled: bool | None = None,
        description: str | None = None,
    ) -> Source:
        """Change the schedule (``unschedule=True`` drops it) or description, or pause
        (``enabled=False``) / resume."""
        request = _validated(
            SourceUpdate,
            {
                "cron": cron,
                "every": every,
                "unschedule": unschedule,
                "enabled": enabled,
                "description": description,
            },
        )
        if self._backend.remote:
            body = request.model_dump(mode="json", exclude_none=True)
            data = self._backend._json("PATCH", self._path(name), json_body=body)
            return Source.model_validate(data)
        return self._service().update(self._project, name, request)  # type: ignore[no-any-return]

    def remove(self, name: str) -> Source:
        """Remove a source and its run records (its dataset versions stay)."""
        if self._backend.remote:
            return Source.model_validate(self._backend._json("DELETE", self._path(name)))
        return self._service().delete(self._project, name)  # type: ignore[no-any-return]

    def run(self, name: str) -> SourceRun:
        """Run the source now; the run (succeeded, empty, or failed with its error)."""
        if self._backend.remote:
            data = self._backend._json("POST", f"{self._path(name)}/run", json_body={})
            return SourceRun.model_validate(data)
        return self._service().run(self._project, name)  # type: ignore[no-any-return]

    def runs(self, name: str, *, limit: int = 20) -> builtins.list[SourceRun]:
        """The source's runs, newest first."""
        if self._backend.remote:
            data = self._backend._json("GET", f"{self._path(name)}/runs", params={"limit": limit})
            return _RUNS.validate_python(data)
        return builtins.list(self._service().runs(self._project, name, limit=limit))

    def status(self, name: str, *, lag: bool = True) -> SourceStatus:
        """The source, its lag (asked of the database or broker) and its throughput."""
        if self._backend.remote:
            params = {"lag": "true" if lag else "false"}
            data = self._backend._json("GET", f"{self._path(name)}/status", params=params)
            return SourceStatus.model_validate(data)
        return self._service().status(self._project, name, lag=lag)  # type: ignore[no-any-return]


def _validated(model: Any, values: dict[str, Any]) -> Any:
    """The request, or one InvalidInputError saying what is wrong with it."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise InvalidInputError(
            f"Invalid source: {problems}.",
            hint="civicml sources add --help lists the options (docs/sources.md).",
        ) from None
