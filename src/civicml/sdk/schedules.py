"""``ml.schedules``: cron schedules and event triggers that start pipelines, embedded or remote.

The scheduler (``civicml server`` or ``civicml scheduler``) imports the pipeline, so a schedule
names it as ``package.module:function`` inside the server's ``pipeline_modules`` setting; the
same calls work embedded and through ``/api/v1/projects/{project}/schedules``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter, ValidationError

from civicml.core.errors import InvalidInputError
from civicml.pipelines.schedule_schemas import Firing, Schedule, ScheduleCreate

__all__ = ["SchedulesHandle"]

_SCHEDULES: TypeAdapter[list[Schedule]] = TypeAdapter(list[Schedule])
_FIRINGS: TypeAdapter[list[Firing]] = TypeAdapter(list[Firing])


class SchedulesHandle:
    """Create, list, read, pause, resume and delete schedules; read their firings."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def _service(self) -> Any:
        from civicml.pipelines.schedules import ScheduleService

        return ScheduleService(self._backend.ctx)

    def create(
        self,
        name: str,
        *,
        project: str,
        pipeline: str,
        cron: str | None = None,
        timezone: str = "UTC",
        event: str | None = None,
        match: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        starting_deadline_s: int | None = None,
        enabled: bool = True,
    ) -> Schedule:
        """Create a schedule: ``cron=`` or ``event=``, the pipeline as ``module:function``.

        Example:
            >>> ml.schedules.create(  # doctest: +SKIP
            ...     "on-new-claims", project="benefits", pipeline="agency.pipes:retrain",
            ...     event="dataset_version.created", match={"dataset": "claims"},
            ...     params={"dataset": "{event.dataset}", "version": "{event.version}"})
        """
        request = _request(
            {
                "name": name,
                "pipeline": pipeline,
                "cron": cron,
                "timezone": timezone,
                "event": event,
                "match": dict(match or {}),
                "params": dict(params or {}),
                "starting_deadline_s": starting_deadline_s,
                "enabled": enabled,
            }
        )
        if self._backend.remote:
            body = request.model_dump(mode="json")
            return Schedule.model_validate(
                self._backend._json("POST", _base(project), json_body=body)
            )
        return self._service().create(project, request)  # type: ignore[no-any-return]

    def list(self, project: str) -> builtins.list[Schedule]:
        """The project's schedules by name."""
        if self._backend.remote:
            return _SCHEDULES.validate_python(self._backend._json("GET", _base(project)))
        return builtins.list(self._service().list(project))

    def get(self, name: str, *, project: str) -> Schedule:
        """One schedule."""
        if self._backend.remote:
            return Schedule.model_validate(self._backend._json("GET", _path(project, name)))
        return self._service().get(project, name)  # type: ignore[no-any-return]

    def pause(self, name: str, *, project: str) -> Schedule:
        """Stop firing it (what is missed while paused is not fired later)."""
        return self._change(name, project, "pause")

    def resume(self, name: str, *, project: str) -> Schedule:
        """Fire it again, from now on."""
        return self._change(name, project, "resume")

    def _change(self, name: str, project: str, how: str) -> Schedule:
        if self._backend.remote:
            data = self._backend._json("POST", f"{_path(project, name)}/{how}", json_body={})
            return Schedule.model_validate(data)
        return getattr(self._service(), how)(project, name)  # type: ignore[no-any-return]

    def delete(self, name: str, *, project: str) -> Schedule:
        """Delete it and its firing records (their executions stay)."""
        if self._backend.remote:
            return Schedule.model_validate(self._backend._json("DELETE", _path(project, name)))
        return self._service().delete(project, name)  # type: ignore[no-any-return]

    def firings(self, name: str, *, project: str, limit: int = 100) -> builtins.list[Firing]:
        """Its most recent firings, newest first."""
        if self._backend.remote:
            data = self._backend._json(
                "GET", f"{_path(project, name)}/firings", params={"limit": limit}
            )
            return _FIRINGS.validate_python(data)
        return builtins.list(self._service().firings(project, name, limit=limit))


def _request(values: dict[str, Any]) -> ScheduleCreate:
    """The create request, or one InvalidInputError saying what is wrong with it."""
    try:
        return ScheduleCreate.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise InvalidInputError(
            f"Invalid schedule: {problems}.",
            hint="civicml schedules add --help lists the options (docs/pipelines.md, "
            "Schedules and triggers).",
        ) from None


def _base(project: str) -> str:
    return f"/api/v1/projects/{quote(project, safe='')}/schedules"


def _path(project: str, name: str) -> str:
    return f"{_base(project)}/{quote(name, safe='')}"
