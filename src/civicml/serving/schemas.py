"""Schemas of serving that cross a boundary: SDK, REST and ``civicml endpoints --json``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from civicml.evaluation.explain_schemas import LocalExplanation

__all__ = [
    "CaptureConfig",
    "EndpointInfo",
    "EndpointMode",
    "EndpointModel",
    "EndpointStats",
    "EndpointStatus",
    "InvocationResult",
    "ModelCacheStats",
    "RolloutInfo",
    "RolloutStatus",
    "RolloutStrategy",
    "VariantInfo",
    "VariantRole",
    "VariantStats",
]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EndpointStatus(StrEnum):
    """Where an endpoint stands (SageMaker's ``EndpointStatus`` words).

    Deploy and update load and verify the model before they commit, so a recorded endpoint is
    always ``InService``; the other states arrive with asynchronous rollouts.
    """

    IN_SERVICE = "InService"


class EndpointMode(StrEnum):
    """How an endpoint picks the model that answers a request.

    ``single-model``: its variants answer by traffic weight (or the pinned one).
    ``multi-model``: it holds many approved versions and each request names the one it wants
    (``X-Civicml-Target-Model: MODEL[/VERSION]``; SageMaker's multi-model endpoints), loaded
    on first use and unloaded least-recently-used first under a memory limit.
    """

    SINGLE_MODEL = "single-model"
    MULTI_MODEL = "multi-model"


class EndpointModel(_Schema):
    """One approved model version a multi-model endpoint serves."""

    id: str = Field(description="Id of the endpoint's entry for it.")
    model_name: str = Field(description="The registered model.")
    model_version: int = Field(ge=1, description="The version number.")
    model_version_id: str = Field(description="Id of the model version.")
    ref: str = Field(
        description="The version as it was given when added: a number or an alias (resolved "
        "then; add it again to follow an alias that moved)."
    )
    target: str = Field(
        description="How a request addresses it: 'MODEL/VERSION' (or just 'MODEL' for the "
        "newest version of that model the endpoint holds)."
    )
    size_bytes: int = Field(
        ge=0, description="Size of its model files: what it counts against the cache limit."
    )
    created_at: datetime = Field(description="When it was added (UTC).")
    created_by: str = Field(description="Who added it.")


class ModelCacheStats(_Schema):
    """The loaded models of a multi-model endpoint in the process that answered (each serving
    process keeps its own cache; counters since it started serving the endpoint)."""

    limit_bytes: int = Field(ge=0, description="The memory limit (model files' size).")
    used_bytes: int = Field(ge=0, description="Sum of the sizes of the models loaded now.")
    loaded: list[str] = Field(
        description="Targets loaded now, least recently used first (the next to be unloaded)."
    )
    hits: int = Field(ge=0, description="Requests whose model was already loaded.")
    loads: int = Field(ge=0, description="Models loaded (verified first), on first use.")
    evictions: int = Field(ge=0, description="Models unloaded to stay under the limit.")
    load_failures: int = Field(
        ge=0,
        description="Loads refused: files failing their hash check, a version no longer "
        "Approved, a bad signature (the request is refused, never answered by that model).",
    )


class VariantRole(StrEnum):
    """What a variant does: answer its share of live traffic, or shadow it."""

    LIVE = "live"
    SHADOW = "shadow"


class VariantInfo(_Schema):
    """One model version an endpoint serves under a name (SageMaker's ``ProductionVariant``,
    Azure ML's deployment): a live variant answers ``share`` of the requests that do not pin
    a variant; the shadow receives a sampled copy of live requests and is never answered."""

    id: str = Field(description="Variant id.")
    name: str = Field(description="Variant name, unique within the endpoint, e.g. 'blue'.")
    role: VariantRole = Field(description="'live' (answers traffic) or 'shadow' (never answers).")
    model_name: str = Field(description="The registered model it serves.")
    model_version: int = Field(ge=1, description="The version number it serves.")
    model_version_id: str = Field(description="Id of the model version it serves.")
    weight: float = Field(
        ge=0,
        description="Traffic weight of a live variant; its share is weight / sum of live "
        "weights. 0: it answers only requests that pin it. Always 0 for the shadow.",
    )
    share: float = Field(
        ge=0, le=1, description="weight / sum of the live weights (0 for the shadow)."
    )
    shadow_percent: float = Field(
        ge=0,
        le=100,
        description="For the shadow: the share of live requests copied to it, 0-100; 0 for a "
        "live variant.",
    )
    created_at: datetime = Field(description="When it was added (UTC).")
    created_by: str = Field(description="Who added it.")
    updated_at: datetime = Field(description="When it last changed (UTC).")
    updated_by: str = Field(description="Who last changed it.")


class CaptureConfig(_Schema):
    """Which share of requests and responses an endpoint records (SageMaker's
    ``DataCaptureConfig``: ``EnableCapture`` and ``InitialSamplingPercentage``)."""

    enabled: bool = Field(description="Whether requests and responses are captured at all.")
    percent: float = Field(
        ge=0, le=100, description="Share of requests captured, 0-100 (each request in whole)."
    )


class EndpointStats(_Schema):
    """What the process serving an endpoint counted since it started serving it (a server's
    counters reset when it restarts; each server of several counts its own requests)."""

    since: datetime = Field(description="When this process's model host started (UTC).")
    invocations: int = Field(ge=0, description="Requests answered with predictions.")
    input_errors: int = Field(
        ge=0,
        description="Requests refused for their input (422: a missing, wrong or non-finite value).",
    )
    output_errors: int = Field(
        ge=0,
        description="Requests failed because the model returned a non-finite value (502).",
    )
    shadow_dropped: int = Field(
        default=0,
        ge=0,
        description="Copies for the shadow variant dropped because its queue was full or it is "
        "marked failed (the live answer is never held up for the shadow).",
    )
    shadow_failure: str | None = Field(
        default=None,
        description="Why the shadow variant's worker process was marked failed after failing "
        "several times in a row (its copies are dropped until another version becomes the "
        "shadow or the server restarts); null when it is not.",
    )


class RolloutStrategy(StrEnum):
    """How a guarded update shifts traffic to the new version (SageMaker's deployment
    guardrails): every step is baked, and an alarm at any step rolls back."""

    ALL_AT_ONCE = "all_at_once"
    CANARY = "canary"
    LINEAR = "linear"


class RolloutStatus(StrEnum):
    """Where a guarded update stands."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


class VariantStats(_Schema):
    """A variant's requests as every serving process flushed them (over a rollout: since it
    started)."""

    requests: int = Field(ge=0, description="Requests it answered, refused or failed.")
    invocations: int = Field(ge=0, description="Requests it answered.")
    errors_4xx: int = Field(ge=0, description="Requests refused for their input (4xx).")
    errors_5xx: int = Field(ge=0, description="Requests its model failed (5xx).")
    p50_ms: float | None = Field(
        description="Median model latency (ms; the upper bound of its histogram bucket)."
    )
    p99_ms: float | None = Field(
        description="99th percentile model latency (ms; the upper bound of its bucket, at most "
        "26% above the true value); null before any answer."
    )


class AlarmReading(_Schema):
    """One alarm as the last evaluation found it."""

    alarm: str = Field(description="The alarm, e.g. 'p99_ms>50' or 'monitor:income-drift'.")
    value: float | None = Field(
        description="The new variant's value (a rate 0-1, or ms); 1/0 for a monitor "
        "(violating or not); null when there is nothing to judge yet."
    )
    fired: bool = Field(description="Whether the alarm fired.")


class RolloutInfo(_Schema):
    """A guarded update: the new variant's traffic per step, the bake time and the alarms,
    and where it stands."""

    id: str = Field(description="Rollout id.")
    project: str = Field(description="Project name.")
    endpoint: str = Field(description="Endpoint name.")
    strategy: RolloutStrategy = Field(description="all_at_once, canary or linear.")
    status: RolloutStatus = Field(
        description="in_progress, succeeded, rolled_back (an alarm fired) or cancelled."
    )
    new_variant: str = Field(description="The variant that receives the new version.")
    model_name: str = Field(description="The registered model of the new version.")
    model_version: int = Field(ge=1, description="The new version.")
    old_weights: dict[str, float] = Field(
        description="The live variants that carried the traffic before, with their weights "
        "(restored on rollback; removed on success)."
    )
    steps: list[float] = Field(
        description="Percent of the traffic on the new variant at each step, e.g. [10, 100]."
    )
    current_step: int = Field(ge=0, description="Index in steps of the step now baking.")
    current_percent: float = Field(description="Percent of the traffic on the new variant now.")
    bake_s: float = Field(ge=0, description="How long each step is watched (seconds).")
    alarms: list[str] = Field(description="The alarms, e.g. ['p99_ms>50', 'error_rate>0.01'].")
    step_started_at: datetime = Field(description="When the current step began (UTC).")
    reason: str | None = Field(
        description="Why it ended: the alarm that fired and its value, who cancelled it, or "
        "that every step baked without an alarm; null while in progress."
    )
    created_at: datetime = Field(description="When it started (UTC).")
    created_by: str = Field(description="Who started it.")
    finished_at: datetime | None = Field(description="When it ended (UTC); null in progress.")
    new_variant_stats: VariantStats | None = Field(
        default=None,
        description="The new variant's requests since the rollout started (flushed counters "
        "of every serving process).",
    )
    readings: list[AlarmReading] = Field(
        default_factory=list, description="Each alarm as this read of the rollout found it."
    )


class EndpointInfo(_Schema):
    """A real-time endpoint: a name that serves approved model versions as variants.

    ``model_name``, ``model_version`` and ``model_version_id`` name its primary variant: the
    live variant with the most weight (the only one of a single-version endpoint).
    """

    id: str = Field(description="Endpoint id.")
    project: str = Field(description="Name of the owning project.")
    name: str = Field(description="Endpoint name, unique within the project, e.g. 'eligibility'.")
    model_name: str = Field(description="The registered model of its primary variant.")
    model_version: int = Field(ge=1, description="The version number of its primary variant.")
    model_version_id: str = Field(description="Id of the model version of its primary variant.")
    status: EndpointStatus = Field(description="InService once deployed.")
    capture: CaptureConfig = Field(description="Data capture settings.")
    created_at: datetime = Field(description="When it was deployed (UTC).")
    created_by: str = Field(description="Who deployed it.")
    updated_at: datetime = Field(description="When it last changed (UTC).")
    updated_by: str = Field(description="Who last changed it.")
    variants: list[VariantInfo] = Field(
        default_factory=list,
        description="Its variants, live ones first (by name), then the shadow, if any.",
    )
    stats: EndpointStats | None = Field(
        default=None,
        description="Counters of the process that answered (a server's, since it started "
        "serving the endpoint); null where that process does not serve it.",
    )
    rollout: RolloutInfo | None = Field(
        default=None,
        description="The guarded update in progress, if any (see GET .../rollout for the last "
        "one whatever its status).",
    )
    mode: EndpointMode = Field(
        default=EndpointMode.SINGLE_MODEL,
        description="'single-model' (variants answer) or 'multi-model' (each request names "
        "its model; see `models`).",
    )
    models: list[EndpointModel] = Field(
        default_factory=list,
        description="A multi-model endpoint's models, by name and version ([] otherwise).",
    )
    model_cache_mb: float | None = Field(
        default=None,
        description="A multi-model endpoint's own cache limit in MB; null: the server's "
        "serving_model_cache_mb.",
    )
    model_cache: ModelCacheStats | None = Field(
        default=None,
        description="A multi-model endpoint's loaded models and cache counters in the process "
        "that answered; null where that process does not serve it.",
    )


class InvocationResult(_Schema):
    """What an endpoint answers: one prediction (and probability row) per input record."""

    predictions: list[Any] = Field(description="Predicted label or value, one per record.")
    probabilities: list[list[float]] | None = Field(
        default=None,
        description="Class probabilities per record, columns in `classes` order; "
        "None for regression models.",
    )
    classes: list[Any] = Field(
        default_factory=list,
        description="Class labels (probability column order); [] for regression.",
    )
    model_version: int = Field(description="The model version that answered.")
    variant: str | None = Field(
        default=None,
        description="The variant that answered (also the `civicml-variant` response header).",
    )
    target_model: str | None = Field(
        default=None,
        description="A multi-model endpoint: the model that answered, 'MODEL/VERSION' (also "
        "the `x-civicml-target-model` response header); null otherwise.",
    )
    inference_ids: list[str] = Field(
        description="One id per record; captured records carry the same id (eventId), so "
        "ground truth can be joined to them later."
    )
    explanations: list[LocalExplanation] | None = Field(
        default=None,
        description="With explain=true: per record, SHAP attributions in the model's raw input "
        "columns, per explained output (the positive class of a binary classifier, every class "
        "of a multiclass one, the value of a regression): base_value + sum(attributions) == "
        "output. Absent otherwise.",
    )
