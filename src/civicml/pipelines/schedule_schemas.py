"""Schemas of schedules that cross a boundary: the create request, a schedule, a firing."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from civicml.pipelines.dsl import is_jsonable

__all__ = ["Firing", "FiringStatus", "Schedule", "ScheduleCreate", "TriggerKind"]

MAX_PARAMS_BYTES = 16_384  # the parameters (with their templates) as JSON
MAX_MATCH_KEYS = 16
MAX_PARAMS = 64

EventType = Literal[
    "dataset_version.created",
    "report.created",
    "model_version.registered",
    "model_version.approval_changed",
    "alert.fired",
    "data.erased",
]


class TriggerKind(StrEnum):
    """What starts a schedule's pipeline."""

    CRON = "cron"
    EVENT = "event"


class FiringStatus(StrEnum):
    """Where one firing stands.

    ``claimed``: a scheduler holds it (its lease) and will start it; ``running``: the pipeline
    execution started; ``succeeded`` / ``failed``: how it ended (an execution that fails, or a
    pipeline that cannot start, fails the firing); ``skipped``: a cron instant missed by more
    than the schedule's ``starting_deadline_s``.
    """

    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScheduleCreate(_Schema):
    """A new schedule: a cron expression or an event type that starts a pipeline."""

    name: str = Field(
        min_length=1, max_length=128, description="Unique in the project, e.g. 'nightly'."
    )
    pipeline: str = Field(
        min_length=3,
        max_length=256,
        description="The @cm.pipeline function as package.module:function; the module must be "
        "inside the server's pipeline_modules setting.",
    )
    cron: str | None = Field(
        default=None,
        max_length=128,
        description="Five-field cron expression (minute hour day month weekday), e.g. "
        "'0 2 * * *', or @hourly / @daily / @weekly / @monthly / @yearly.",
    )
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA time zone the cron expression is in."
    )
    event: EventType | None = Field(
        default=None,
        description="Audit event type that fires the schedule: dataset_version.created, "
        "report.created (drift reports), model_version.registered, "
        "model_version.approval_changed, alert.fired (alert rules).",
    )
    match: dict[str, Any] = Field(
        default_factory=dict,
        description="Event fields that must be equal (a list: any of its values), e.g. "
        '{"dataset": "claims"} or {"verdict": "drift"}.',
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Pipeline parameters: fixed JSON values and '{event.<field>}' templates, "
        'e.g. {"dataset": "{event.dataset}", "version": "{event.version}"}.',
    )
    starting_deadline_s: int | None = Field(
        default=None,
        ge=1,
        le=31_536_000,
        strict=True,
        description="Cron only: a missed instant older than this many seconds is skipped, not "
        "fired. Default: the latest missed instant fires once.",
    )
    enabled: bool = Field(default=True, strict=True, description="False: created paused.")

    @field_validator("match")
    @classmethod
    def _small_match(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_MATCH_KEYS:
            raise ValueError(f"at most {MAX_MATCH_KEYS} match fields")
        return value

    @field_validator("params")
    @classmethod
    def _json_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_PARAMS:
            raise ValueError(f"at most {MAX_PARAMS} parameters")
        if not is_jsonable(value):
            raise ValueError("parameters must be JSON data (no NaN or infinity)")
        if len(json.dumps(value)) > MAX_PARAMS_BYTES:
            raise ValueError(f"parameters are larger than {MAX_PARAMS_BYTES} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleCreate:
        if (self.cron is None) == (self.event is None):
            raise ValueError("give exactly one of cron and event")
        if self.event is not None and self.starting_deadline_s is not None:
            raise ValueError("starting_deadline_s applies to cron schedules only")
        return self


class Schedule(_Schema):
    """A schedule: what starts which pipeline with which parameters, as whom."""

    id: str = Field(description="Schedule id.")
    project: str = Field(description="The project its pipeline runs in.")
    name: str = Field(description="Unique in the project.")
    pipeline: str = Field(description="package.module:function of the @cm.pipeline.")
    trigger: TriggerKind = Field(description="cron or event.")
    cron: str | None = Field(default=None, description="The cron expression (cron schedules).")
    timezone: str = Field(description="IANA time zone of the cron expression.")
    event: str | None = Field(default=None, description="The event type (event schedules).")
    match: dict[str, Any] = Field(description="The event fields that must match.")
    params: dict[str, Any] = Field(description="Parameter values and {event.<field>} templates.")
    enabled: bool = Field(description="False while paused.")
    starting_deadline_s: int | None = Field(
        default=None, description="Missed cron instants older than this are skipped."
    )
    next_fire_at: datetime | None = Field(
        default=None, description="The next cron instant it fires at (UTC); null for events."
    )
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Its creator, whom its firings run as.")
    creator_roles: list[str] = Field(
        description="The creator's roles on the project when it was created: its firings act "
        "with these, on this project only."
    )
    updated_at: datetime = Field(description="When it was last created, paused or resumed.")


class Firing(_Schema):
    """One firing of a schedule: a cron instant or an event, claimed once."""

    schedule: str = Field(description="The schedule's name.")
    fire_key: str = Field(description="The cron instant (ISO-8601 UTC) or the audit event id.")
    fire_at: datetime = Field(description="The instant, or when the event happened (UTC).")
    event: dict[str, Any] | None = Field(
        default=None, description="The fields of the trigger its parameters were filled from."
    )
    parameters: dict[str, Any] = Field(description="The pipeline parameters it ran with.")
    status: FiringStatus = Field(description="claimed, running, succeeded, failed, skipped.")
    execution_id: str | None = Field(
        default=None, description="The pipeline execution it started (set when that ends)."
    )
    claimed_by: str = Field(description="The scheduler that holds (or held) it.")
    claimed_at: datetime = Field(description="When that scheduler claimed it (UTC).")
    attempts: int = Field(description="Claims of it: more than 1 after a takeover.")
    started_at: datetime | None = Field(default=None, description="When its execution started.")
    ended_at: datetime | None = Field(default=None, description="When it ended (UTC).")
    error: str | None = Field(default=None, description="Why it failed or was skipped.")
