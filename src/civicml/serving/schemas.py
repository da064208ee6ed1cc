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
    "EndpointStats",
    "EndpointStatus",
    "InvocationResult",
]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EndpointStatus(StrEnum):
    """Where an endpoint stands (SageMaker's ``EndpointStatus`` words).

    Deploy and update load and verify the model before they commit, so a recorded endpoint is
    always ``InService``; the other states arrive with asynchronous rollouts.
    """

    IN_SERVICE = "InService"


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


class EndpointInfo(_Schema):
    """A real-time endpoint: a name that serves one approved model version."""

    id: str = Field(description="Endpoint id.")
    project: str = Field(description="Name of the owning project.")
    name: str = Field(description="Endpoint name, unique within the project, e.g. 'eligibility'.")
    model_name: str = Field(description="The registered model it serves.")
    model_version: int = Field(ge=1, description="The version number it serves.")
    model_version_id: str = Field(description="Id of the model version it serves.")
    status: EndpointStatus = Field(description="InService once deployed.")
    capture: CaptureConfig = Field(description="Data capture settings.")
    created_at: datetime = Field(description="When it was deployed (UTC).")
    created_by: str = Field(description="Who deployed it.")
    updated_at: datetime = Field(description="When it last changed (UTC).")
    updated_by: str = Field(description="Who last changed it.")
    stats: EndpointStats | None = Field(
        default=None,
        description="Counters of the process that answered (a server's, since it started "
        "serving the endpoint); null where that process does not serve it.",
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
