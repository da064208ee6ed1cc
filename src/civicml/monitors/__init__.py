"""Scheduled monitors: SageMaker Model Monitor's four types on an endpoint's captured traffic.

A monitor watches one endpoint on a schedule (cron or an interval) over a window of captured
records, against a baseline suggested from the training data of the model version it serves,
with editable constraints:

* ``data_quality``: the drift engine and Model Monitor's constraints on the captured inputs;
* ``model_quality``: accuracy, precision, recall, F1 and ROC AUC (or RMSE, MAE, R²) of the
  captured predictions against ground truth uploaded later, joined by inference id;
* ``bias_drift``: Clarify's post-training bias metrics on the labeled window, against the
  ranges of the model's approval policy, with bootstrap intervals;
* ``attribution_drift``: SHAP attributions of the window vs the baseline, compared by NDCG.

Each execution stores a report (JSON and HTML), a status and its violations, an audit event, and
a ``reports`` row the alert engine's ``monitoring`` rules read. :class:`MonitorService` is the
service; :class:`MonitorLoop` runs due monitors from the scheduler.
"""

from civicml.monitors.runner import MonitorLoop, MonitorRunner
from civicml.monitors.schemas import (
    Execution,
    ExecutionStatus,
    GroundTruthUpload,
    Monitor,
    MonitorCreate,
    MonitorType,
    MonitorUpdate,
    MonitorViolation,
)
from civicml.monitors.service import MonitorService

__all__ = [
    "Execution",
    "ExecutionStatus",
    "GroundTruthUpload",
    "Monitor",
    "MonitorCreate",
    "MonitorLoop",
    "MonitorRunner",
    "MonitorService",
    "MonitorType",
    "MonitorUpdate",
    "MonitorViolation",
]
