"""Experiment tracking: experiments, runs, params, metrics, tags and artifacts."""

from civicml.tracking.schemas import (
    Experiment,
    MetricBatchResult,
    MetricHistory,
    MetricValue,
    Run,
    RunPage,
    RunStatus,
    SearchWarning,
)
from civicml.tracking.service import MetricBatch, TrackingService
from civicml.tracking.writer import MetricWriter

__all__ = [
    "Experiment",
    "MetricBatch",
    "MetricBatchResult",
    "MetricHistory",
    "MetricValue",
    "MetricWriter",
    "Run",
    "RunPage",
    "RunStatus",
    "SearchWarning",
    "TrackingService",
]
