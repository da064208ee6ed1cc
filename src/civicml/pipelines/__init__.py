"""Pipelines: ``@step`` functions composed in a ``@pipeline`` function, versioned by content,
run with caching, resume and independent steps in parallel.

>>> from civicml.pipelines import pipeline, step
>>> @step
... def double(x: int) -> int:
...     return 2 * x
>>> @pipeline(name="doubling")
... def doubling(x: int = 2) -> None:
...     double(double(x))
>>> [node for node in doubling.graph().nodes]
['double', 'double-2']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from civicml.pipelines.dsl import (
    BoundPipeline,
    OutputRef,
    ParamRef,
    Pipeline,
    Step,
    StepContext,
    StepWaiting,
    current,
    pipeline,
    step,
)
from civicml.pipelines.schedule_schemas import (
    Firing,
    FiringStatus,
    Schedule,
    ScheduleCreate,
    TriggerKind,
)
from civicml.pipelines.schemas import Execution, ExecutionStatus, StepExecution, StepStatus

if TYPE_CHECKING:
    from civicml.pipelines.scheduler import Scheduler
    from civicml.pipelines.schedules import ScheduleService
    from civicml.pipelines.service import PipelineService

__all__ = [
    "BoundPipeline",
    "Execution",
    "ExecutionStatus",
    "Firing",
    "FiringStatus",
    "OutputRef",
    "ParamRef",
    "Pipeline",
    "PipelineService",
    "Schedule",
    "ScheduleCreate",
    "ScheduleService",
    "Scheduler",
    "Step",
    "StepContext",
    "StepExecution",
    "StepStatus",
    "StepWaiting",
    "TriggerKind",
    "current",
    "pipeline",
    "step",
]


def __getattr__(name: str) -> Any:
    """Load the runner and the scheduler (SQLAlchemy, tracking) only when used."""
    if name == "PipelineService":
        return importlib.import_module("civicml.pipelines.service").PipelineService
    if name == "ScheduleService":
        return importlib.import_module("civicml.pipelines.schedules").ScheduleService
    if name == "Scheduler":
        return importlib.import_module("civicml.pipelines.scheduler").Scheduler
    raise AttributeError(f"module 'civicml.pipelines' has no attribute {name!r}")
