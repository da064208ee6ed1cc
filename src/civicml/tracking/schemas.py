"""Schemas of tracking that cross a boundary: experiments, runs, metric values."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Experiment",
    "MetricBatchResult",
    "MetricValue",
    "Run",
    "RunStatus",
]


class RunStatus(StrEnum):
    """Lifecycle of a run. ``killed`` is also set when a run is found abandoned."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"


class Experiment(BaseModel):
    """A named group of runs inside a project."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Experiment id.")
    project: str = Field(description="Project name.")
    name: str = Field(description="Experiment name, unique in its project.")
    description: str = Field(default="", description="Free text.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it.")


class MetricValue(BaseModel):
    """One metric observation. NaN and +/-Infinity are kept (JSON: "NaN", "Infinity")."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    key: str = Field(min_length=1, max_length=250, description="Metric name, e.g. 'val_loss'.")
    value: float = Field(description="The value; NaN and +/-Infinity are stored as such.")
    step: int = Field(default=0, ge=0, description="Training step or epoch.")
    timestamp: int | None = Field(
        default=None, ge=0, description="Milliseconds since the epoch; default: when stored."
    )

    @field_validator("value", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("a metric value must be a number, not a boolean")
        return value


class MetricBatchResult(BaseModel):
    """What a metric batch did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stored: int = Field(description="Values stored by this call.")
    duplicate: bool = Field(
        default=False, description="True when the batch id was seen before (nothing stored)."
    )


class Run(BaseModel):
    """A run: one execution with its params, tags, latest metrics and status."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    id: str = Field(description="Run id (32 hex characters).")
    project: str = Field(description="Project name.")
    experiment: str = Field(description="Experiment name.")
    name: str = Field(description="Run name.")
    status: RunStatus = Field(description="running, finished, failed or killed.")
    start_time: datetime = Field(description="When it started (UTC).")
    end_time: datetime | None = Field(default=None, description="When it ended (UTC).")
    created_by: str = Field(description="Who started it.")
    params: dict[str, str] = Field(default_factory=dict, description="Parameters (immutable).")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags (mutable).")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Latest value of each metric (by step, then time)."
    )

    def metric(self, key: str) -> float:
        """The latest value of one metric (NaN when it was NaN)."""
        return self.metrics.get(key, math.nan)
