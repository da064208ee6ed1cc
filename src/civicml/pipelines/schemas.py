"""Schemas of pipelines that cross a boundary: executions and their steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Execution", "ExecutionStatus", "StepExecution", "StepStatus"]


class ExecutionStatus(StrEnum):
    """Where a pipeline execution stands."""

    RUNNING = "running"
    WAITING = "waiting"  # a callback step waits; resume() continues it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """Where one step of an execution stands; ``cached`` reused an earlier execution's outputs."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # a callback step (wait_for_approval) paused the execution
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CACHED = "cached"
    SKIPPED = "skipped"


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepExecution(_Schema):
    """One step of a pipeline execution, with its explicit cache key."""

    step: str = Field(description="The step's name in the pipeline graph.")
    status: StepStatus = Field(
        description="pending, running, waiting, succeeded, failed, cached, skipped."
    )
    cache_key: str | None = Field(
        default=None, description="SHA-256 of the canonical JSON of cache_key_doc."
    )
    cache_key_doc: dict[str, Any] | None = Field(
        default=None,
        description="What the cache key covers: step code hash, parameter values, input "
        "content hashes, output names and the environment.",
    )
    outputs: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Each output's kind, artifact digest, content SHA-256 and size.",
    )
    cached_from: str | None = Field(
        default=None, description="The execution whose outputs a cached step reused."
    )
    run_id: str | None = Field(
        default=None, description="The tracking run of the step (of the reused one if cached)."
    )
    started_at: datetime | None = Field(default=None, description="When it started (UTC).")
    ended_at: datetime | None = Field(default=None, description="When it ended (UTC).")
    error: str | None = Field(default=None, description="Why it failed.")


class Execution(_Schema):
    """One execution of a pipeline version with its parameter values."""

    id: str = Field(description="Execution id.")
    project: str = Field(description="The project it ran in.")
    pipeline: str = Field(description="The pipeline's name.")
    version: str = Field(description="The pipeline's content version (SHA-256 of its graph).")
    parameters: dict[str, Any] = Field(description="Parameter values of this execution.")
    status: ExecutionStatus = Field(description="running, waiting, succeeded, failed or cancelled.")
    started_at: datetime = Field(description="When it (last) started (UTC).")
    ended_at: datetime | None = Field(default=None, description="When it ended (UTC).")
    created_by: str = Field(description="Who started it.")
    steps: list[StepExecution] = Field(description="Its steps in topological order.")
    edges: list[tuple[str, str]] = Field(
        default_factory=list,
        description="The graph's edges: (upstream step, downstream step) pairs.",
    )

    def step(self, name: str) -> StepExecution:
        """The step execution called ``name``."""
        for item in self.steps:
            if item.step == name:
                return item
        raise KeyError(name)
