"""Schemas of scheduled monitors that cross a boundary (SDK, REST, CLI ``--json``).

A :class:`Monitor` watches one endpoint's captured traffic on a schedule, as one of SageMaker
Model Monitor's four types (``../shared/reference/anchors.md`` B2); each run is an
:class:`Execution` with a status, its metrics and its :class:`MonitorViolation` s. The
*constraints* of a monitor are editable documents, one shape per type:

* ``data_quality``: Model Monitor's ``constraints.json``
  (:class:`~civicml.monitoring.schemas.BaselineConstraints`);
* ``model_quality``: :class:`ModelQualityConstraints` — per metric a threshold and Model
  Monitor's comparison operator (``LessThanThreshold``: a value below it is a violation);
* ``bias_drift``: :class:`BiasDriftConstraints` — allowed ranges per Clarify metric and facet;
* ``attribution_drift``: :class:`AttributionConstraints` — the NDCG floor (0.90).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from civicml.store.schemas import ArtifactInfo

__all__ = [
    "AttributionConstraints",
    "BiasCheck",
    "BiasDriftConstraints",
    "DatasetRef",
    "Execution",
    "ExecutionStatus",
    "GroundTruthRecord",
    "GroundTruthRecords",
    "GroundTruthUpload",
    "MetricConstraint",
    "ModelQualityConstraints",
    "ModelRef",
    "Monitor",
    "MonitorBaseline",
    "MonitorConfig",
    "MonitorCreate",
    "MonitorType",
    "MonitorUpdate",
    "MonitorViolation",
]

#: Most ground-truth records in one JSON request (files take up to the upload limit).
MAX_RECORDS = 100_000


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MonitorType(StrEnum):
    """Model Monitor's four monitor types."""

    DATA_QUALITY = "data_quality"
    MODEL_QUALITY = "model_quality"
    BIAS_DRIFT = "bias_drift"
    ATTRIBUTION_DRIFT = "attribution_drift"


class ExecutionStatus(StrEnum):
    """How an execution ended (``running`` while it runs)."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_VIOLATIONS = "completed_with_violations"
    FAILED = "failed"
    NO_DATA = "no_data"


# Constraints -----------------------------------------------------------------------------------
Comparison = Literal[
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
    "GreaterThanThreshold",
    "GreaterThanOrEqualToThreshold",
]


class MetricConstraint(_Schema):
    """One model-quality metric's limit, as Model Monitor writes it."""

    threshold: float = Field(description="The limit, e.g. 0.72.")
    comparison_operator: Comparison = Field(
        description="When the window's value compared with the threshold this way holds, it is "
        "a violation: 'LessThanThreshold' for accuracy-like metrics, 'GreaterThanThreshold' for "
        "errors such as rmse."
    )

    def breached(self, value: float) -> bool:
        """Whether ``value`` violates the constraint."""
        return {
            "LessThanThreshold": value < self.threshold,
            "LessThanOrEqualToThreshold": value <= self.threshold,
            "GreaterThanThreshold": value > self.threshold,
            "GreaterThanOrEqualToThreshold": value >= self.threshold,
        }[self.comparison_operator]


class ModelQualityConstraints(_Schema):
    """The model-quality constraints of a monitor (Model Monitor's ``constraints.json`` of a
    model-quality baseline): per metric, a threshold and operator."""

    version: int = Field(default=0, description="Format version (Model Monitor: 0).")
    problem_type: Literal["BinaryClassification", "MulticlassClassification", "Regression"] = Field(
        description="What the model predicts."
    )
    metrics: dict[str, MetricConstraint] = Field(
        max_length=32,
        description="Per metric name (accuracy, precision, recall, f1, auc; weighted_* for "
        "multiclass; rmse, mae, mse, r2 for regression) its constraint.",
    )


class BiasCheck(_Schema):
    """An allowed range A for one Clarify post-training metric on one facet."""

    metric: str = Field(min_length=1, max_length=16, description="Clarify code, e.g. 'DPPL'.")
    facet: str = Field(min_length=1, max_length=256, description="Facet column, e.g. 'sex'.")
    value: str | None = Field(
        default=None, max_length=256, description="One facet value; default every value."
    )
    min: float | None = Field(default=None, description="Smallest allowed value.")
    max: float | None = Field(default=None, description="Largest allowed value.")
    max_abs: float | None = Field(default=None, ge=0, description="Largest allowed |value|.")

    @model_validator(mode="after")
    def _some_limit(self) -> BiasCheck:
        if self.min is None and self.max is None and self.max_abs is None:
            raise ValueError("give at least one of min, max, max_abs")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def interval(self) -> tuple[float, float]:
        """The allowed range as ``[low, high]``."""
        low = -float("inf") if self.min is None else self.min
        high = float("inf") if self.max is None else self.max
        if self.max_abs is not None:
            low, high = max(low, -self.max_abs), min(high, self.max_abs)
        return low, high

    def describe(self) -> str:
        """The range in words, e.g. ``">= 0.8 and <= 1.25"``."""
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.max_abs is not None:
            parts.append(f"|x| <= {self.max_abs:g}")
        return " and ".join(parts)


class BiasDriftConstraints(_Schema):
    """Bias-drift constraints: ranges per metric and facet, and the bootstrap that gives each
    window's value a confidence interval C (a violation only when C and the range do not meet,
    as Clarify's bias-drift monitor does)."""

    version: int = Field(default=0, description="Format version.")
    source: Literal["policy", "monitor"] = Field(
        description="'policy': copied from the model's approval policy ([[bias]] rules); "
        "'monitor': the monitor's own."
    )
    checks: list[BiasCheck] = Field(min_length=1, max_length=64, description="The ranges.")
    confidence: float = Field(
        default=0.95, gt=0, lt=1, description="Level of the normal bootstrap interval."
    )
    bootstrap: int = Field(
        default=30, ge=0, le=1000, strict=True, description="Resamples (0: the value alone)."
    )


class AttributionConstraints(_Schema):
    """Feature-attribution drift: alert when NDCG of the window's SHAP ranking falls below
    the threshold (Model Monitor: 0.90)."""

    version: int = Field(default=0, description="Format version.")
    ndcg_threshold: float = Field(default=0.9, gt=0, le=1, description="Violation below this.")
    top_k: int | None = Field(
        default=None, ge=1, le=1000, strict=True, description="Rank only the top k features."
    )


# Monitors --------------------------------------------------------------------------------------
class MonitorConfig(_Schema):
    """What a monitor needs besides schedule and constraints (filled in at creation)."""

    columns: list[str] = Field(
        default_factory=list, description="Input columns compared (the model's features)."
    )
    drift_share: float = Field(default=0.5, gt=0, le=1, description="Data quality: drift share.")
    min_rows: int = Field(
        ge=1,
        description="Fewest records (labeled ones for model quality and "
        "bias drift) a window needs to be judged.",
    )
    problem_type: str | None = Field(default=None, description="Model quality: the problem.")
    positive_label: JsonValue = Field(
        default=None, description="Binary model quality and bias drift: the positive class."
    )
    tolerance: float = Field(default=0.2, ge=0, lt=1, description="Suggested thresholds' margin.")
    shap_rows: int = Field(default=1000, ge=10, description="Attribution drift: rows explained.")
    classes: list[JsonValue] = Field(
        default_factory=list, description="The model's classes (empty for regression)."
    )
    anchor: datetime | None = Field(
        default=None, description="An interval's instants are this plus whole intervals."
    )


class DatasetRef(_Schema):
    """A dataset version, e.g. ``applications v3``."""

    dataset: str = Field(description="Dataset name.")
    version: int = Field(ge=1, description="Version number.")
    id: str = Field(description="Id of the dataset version.")
    digest: str = Field(description="SHA-256 of its Parquet file.")
    rows: int = Field(ge=0, description="Rows.")


class ModelRef(_Schema):
    """A model version, e.g. ``eligibility v2``."""

    name: str = Field(description="Registered model name.")
    version: int = Field(ge=1, description="Version number.")
    id: str = Field(description="Id of the model version.")


class MonitorBaseline(_Schema):
    """The baseline a monitor compares with, suggested from training data."""

    dataset: DatasetRef = Field(description="The baseline dataset version.")
    model: ModelRef = Field(description="The model version whose data it is.")
    source: Literal["training_data", "named"] = Field(
        description="'training_data': the version's training data, found through lineage; "
        "'named': a dataset version given by the user."
    )
    version: int = Field(default=1, ge=1, description="1 at creation, +1 per new baseline.")
    computed_at: datetime = Field(description="When it was computed (UTC).")
    computed_by: str = Field(description="Who computed it.")
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="Figures of the baseline: model-quality metrics, bias values, or the mean "
        "|SHAP| of each feature ('<label>/<feature>').",
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        description="Stored files by name (statistics.json, constraints.json, baseline.json) "
        "and their SHA-256.",
    )


class MonitorCreate(_Schema):
    """A new monitor on an endpoint."""

    name: str = Field(min_length=1, max_length=128, description="Unique in the project.")
    endpoint: str = Field(min_length=1, max_length=128, description="The endpoint watched.")
    type: MonitorType = Field(
        description="data_quality, model_quality, bias_drift or attribution_drift."
    )
    cron: str | None = Field(
        default=None,
        max_length=128,
        description="Five-field cron (UTC), e.g. '0 * * * *', or @hourly/@daily.",
    )
    every: str | None = Field(
        default=None,
        max_length=32,
        description="An interval instead of cron: '30m', '1h', '1d' (at least 1 minute).",
    )
    window: str | None = Field(
        default=None,
        max_length=32,
        description="Captured records of the last this long are checked, e.g. '1h'; default "
        "the interval, or 1 hour with cron.",
    )
    baseline_dataset: str | None = Field(
        default=None,
        max_length=128,
        description="A dataset to baseline with; default the training data of the model "
        "version (lineage).",
    )
    baseline_version: int | str | None = Field(
        default=None, description="Its version (a number or 'latest'; default latest)."
    )
    model_version: int | None = Field(
        default=None,
        ge=1,
        description="The model version to baseline; default the endpoint's primary variant's.",
    )
    min_rows: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        strict=True,
        description="Fewest records a window needs; default the setting drift_min_rows.",
    )
    drift_share: float = Field(default=0.5, gt=0, le=1, description="Data quality: drift share.")
    positive_label: JsonValue = Field(
        default=None,
        description="Binary model quality / bias drift: the positive class "
        "(default the model's second class).",
    )
    tolerance: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Model quality: suggested thresholds are the baseline value less (or, for "
        "errors, plus) this share of it.",
    )
    facets: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Bias drift: facet columns; default the facets of the policy's rules.",
    )
    constraints: dict[str, Any] | None = Field(
        default=None, description="The type's constraints instead of the suggested ones."
    )
    description: str = Field(default="", max_length=1024, description="What it is for.")
    enabled: bool = Field(default=True, strict=True, description="False: created paused.")

    @model_validator(mode="after")
    def _one_schedule(self) -> MonitorCreate:
        if self.cron is not None and self.every is not None:
            raise ValueError("give cron or every, not both")
        return self


class MonitorUpdate(_Schema):
    """A change to a monitor: any field left out stays as it is."""

    cron: str | None = Field(default=None, max_length=128, description="A new cron schedule.")
    every: str | None = Field(default=None, max_length=32, description="A new interval.")
    window: str | None = Field(default=None, max_length=32, description="A new window.")
    enabled: bool | None = Field(default=None, strict=True, description="Resume or pause.")
    description: str | None = Field(default=None, max_length=1024, description="New text.")

    @model_validator(mode="after")
    def _one_schedule(self) -> MonitorUpdate:
        if self.cron is not None and self.every is not None:
            raise ValueError("give cron or every, not both")
        return self


class ExecutionBrief(_Schema):
    """The latest execution of a monitor, in brief."""

    id: str = Field(description="Execution id.")
    status: ExecutionStatus = Field(description="How it ended.")
    started_at: datetime = Field(description="When it started (UTC).")
    n_violations: int = Field(description="Violations found.")


class Monitor(_Schema):
    """A scheduled monitor."""

    id: str = Field(description="Monitor id.")
    project: str = Field(description="Project name.")
    name: str = Field(description="Unique in the project.")
    description: str = Field(description="What it is for.")
    type: MonitorType = Field(description="The monitor type.")
    endpoint: str = Field(description="The endpoint watched.")
    cron: str | None = Field(description="Cron schedule (UTC), or null.")
    every_s: int | None = Field(description="Interval in seconds, or null.")
    window_s: int = Field(description="Seconds of captured records each execution checks.")
    enabled: bool = Field(description="False: paused.")
    next_run_at: datetime = Field(description="When it runs next (UTC).")
    config: MonitorConfig = Field(description="Type options.")
    baseline: MonitorBaseline = Field(description="The baseline.")
    constraints: dict[str, Any] = Field(description="The editable constraints (see the type).")
    constraints_version: int = Field(description="Bumped by every edit.")
    latest: ExecutionBrief | None = Field(default=None, description="The latest execution.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it (scheduled runs act as them).")
    updated_at: datetime = Field(description="When it last changed (UTC).")
    updated_by: str = Field(description="Who last changed it.")


class MonitorViolation(_Schema):
    """One violation, in Model Monitor's ``constraint_violations.json`` shape."""

    constraint_check_type: str = Field(
        description="Data quality: data_type_check, completeness_check, baseline_drift_check, "
        "missing_column_check, extra_column_check, categorical_values_check; model quality: "
        "the comparison operator (e.g. LessThanThreshold); bias_drift_check; "
        "feature_attribution_drift_check."
    )
    description: str = Field(description="What was found, in words.")
    feature_name: str | None = Field(default=None, description="The feature, if any.")
    metric_name: str | None = Field(default=None, description="The metric, if any.")
    facet: str | None = Field(default=None, description="Bias drift: the facet.")
    facet_value: str | None = Field(default=None, description="Bias drift: the facet value.")
    label: str | None = Field(default=None, description="Attribution drift: the output label.")
    value: float | None = Field(default=None, description="The window's value, if a number.")


class Execution(_Schema):
    """One run of a monitor over a window of captured records."""

    id: str = Field(description="Execution id (also the id of its report row).")
    project: str = Field(description="Project name.")
    monitor: str = Field(description="Monitor name.")
    type: MonitorType = Field(description="The monitor type.")
    trigger: Literal["schedule", "manual"] = Field(description="Scheduled or run by hand.")
    status: ExecutionStatus = Field(
        description="running, completed, completed_with_violations, failed or no_data."
    )
    window_start: datetime = Field(description="Records inferred at or after this (UTC) ...")
    window_end: datetime = Field(description="... and before this.")
    started_at: datetime = Field(description="When it started (UTC).")
    ended_at: datetime | None = Field(description="When it ended (UTC).")
    records: int | None = Field(description="Captured records in the window.")
    labeled: int | None = Field(description="Of them, with ground truth (model quality, bias).")
    metrics: dict[str, float | None] = Field(description="The execution's figures.")
    violations: list[MonitorViolation] = Field(description="What broke the constraints.")
    error: str | None = Field(description="Why it failed, or why there was no data.")
    created_by: str = Field(description="Who ran it (a scheduled run: the monitor's creator).")
    files: list[ArtifactInfo] = Field(
        default_factory=list, description="report.json and report.html."
    )


# Ground truth ----------------------------------------------------------------------------------
class GroundTruthRecord(_Schema):
    """One label for one captured prediction."""

    inference_id: str = Field(min_length=1, max_length=64, description="The prediction's id.")
    label: JsonValue = Field(description="The true label or value.")
    attributes: dict[str, JsonValue] | None = Field(
        default=None,
        max_length=20,
        description="Extra columns, e.g. a facet such as 'sex' that the model does not see.",
    )


class GroundTruthRecords(_Schema):
    """Labels as JSON records."""

    records: list[GroundTruthRecord] = Field(
        min_length=1, max_length=MAX_RECORDS, description="The labels."
    )


class GroundTruthUpload(_Schema):
    """A stored upload of labels."""

    id: str = Field(description="Upload id.")
    project: str = Field(description="Project name.")
    endpoint: str = Field(description="The endpoint whose predictions they label.")
    rows: int = Field(description="Labels stored (the last one of a repeated id counts).")
    columns: list[str] = Field(description="Stored columns: inference_id, label, attributes.")
    digest: str = Field(description="SHA-256 of the stored Parquet file.")
    uploaded_at: datetime = Field(description="When (UTC).")
    uploaded_by: str = Field(description="Who.")
