"""Experiment tracking: experiments, runs, params, metrics, tags and artifacts."""

from civicml.tracking.schemas import Experiment, MetricBatchResult, MetricValue, Run, RunStatus
from civicml.tracking.service import MetricBatch, TrackingService
from civicml.tracking.writer import MetricWriter

__all__ = [
    "Experiment",
    "MetricBatch",
    "MetricBatchResult",
    "MetricValue",
    "MetricWriter",
    "Run",
    "RunStatus",
    "TrackingService",
]
