"""Schemas of tracking that cross a boundary: experiments, runs, metric values."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from civicml.core.types import MetricNumber, NonNegativeInt64

__all__ = [
    "Experiment",
    "MetricBatchResult",
    "MetricHistory",
    "MetricValue",
    "Run",
    "RunPage",
    "RunStatus",
    "SearchWarning",
]

# Limits of one REST request (the remote SDK splits larger calls into several requests).
#: Most metric values in one request (over all its batches).
MAX_VALUES_PER_REQUEST = 10_000
#: Most batches in one request to ``/metrics/batches``.
MAX_BATCHES_PER_REQUEST = 1_000
#: Most parameters, and most tags, in one request.
MAX_KEYS_PER_REQUEST = 100
#: Most runs in one page of a search.
MAX_RUNS_PAGE = 1_000
#: Most metric values in one page of a metric's history.
MAX_HISTORY_PAGE = 10_000


class SearchWarning(UserWarning):
    """A run search names a metric, parameter or tag that no run of the project has."""


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
    value: MetricNumber = Field(
        description='The value: a number, or "NaN", "Infinity" or "-Infinity" (stored as such).'
    )
    step: NonNegativeInt64 = Field(default=0, description="Training step or epoch.")
    timestamp: NonNegativeInt64 | None = Field(
        default=None, description="Milliseconds since the epoch; default: when stored."
    )


class MetricHistory(BaseModel):
    """One page of a metric's values, by step, then time."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    key: str = Field(description="Metric name.")
    values: list[MetricValue] = Field(description="Values of this page.")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as 'after' to fetch the next page; null on the last page.",
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


class MetricBatchResult(BaseModel):
    """What a batch (metric values, parameters, the end of the run) did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stored: int = Field(description="Values stored by this call.")
    duplicate: bool = Field(
        default=False, description="True when the batch id was seen before (nothing stored)."
    )
    run: Run | None = Field(
        default=None, description="The run as it ended, when the batch ended it."
    )


class RunPage(BaseModel):
    """One page of a run search, and what the search could not match."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    runs: list[Run] = Field(description="Runs of this page, in the requested order.")
    next_offset: int | None = Field(
        default=None, description="Offset of the next page; null on the last page."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="One per metric, parameter or tag named in the filter or order_by that no "
        "run of the project has, naming the keys that exist.",
    )
