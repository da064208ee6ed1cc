"""The fields of a model card a person writes, where they sit in SageMaker's card schema, and the
schemas of a card as SDK, REST and CLI see it.

Everything else on the card (model overview, training details, evaluation results, bias and
explanation summaries, approval history, deployments) is filled automatically from the registry,
lineage and reports each time the card is read. The person-written fields are stored as
immutable card versions; ``required`` fields must be written before the card is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CARD_STATUSES",
    "EDITABLE_FIELDS",
    "RISK_RATINGS",
    "CardField",
    "CardStatus",
    "CardVersion",
    "ModelCard",
]

CardStatus = Literal["Draft", "PendingReview", "Approved", "Archived"]
#: SageMaker's ModelCardStatus values, in review order (Archived: read-only, exportable).
CARD_STATUSES: tuple[CardStatus, ...] = ("Draft", "PendingReview", "Approved", "Archived")
RISK_RATINGS = ("High", "Medium", "Low", "Unknown")


@dataclass(frozen=True, slots=True)
class CardField:
    """One person-written field: its dotted path in the card and what it asks for."""

    path: str
    label: str
    prompt: str
    required: bool = True
    choices: tuple[str, ...] = ()


EDITABLE_FIELDS: dict[str, CardField] = {
    f.path: f
    for f in (
        CardField(
            "model_overview.model_description",
            "Model description",
            "What the model does, in a sentence or two a resident could follow.",
        ),
        CardField(
            "model_overview.model_owner",
            "Model owner",
            "The accountable person or unit (name and role).",
        ),
        CardField(
            "business_details.business_problem",
            "Business goal",
            "The public-service problem the model helps with, and the decision it informs.",
        ),
        CardField(
            "business_details.business_stakeholders",
            "Stakeholders",
            "Who is affected or consulted (residents, caseworkers, oversight bodies).",
            required=False,
        ),
        CardField(
            "business_details.line_of_business",
            "Line of business",
            "The service or programme, e.g. 'Housing benefit'.",
            required=False,
        ),
        CardField(
            "business_details.kpis",
            "KPIs",
            "The indicators agreed for the model, e.g. 'recall of eligible applicants >= 0.9'.",
        ),
        CardField(
            "business_details.acceptable_error",
            "Acceptable error",
            "The error agreed as acceptable, and which kind of error costs residents more.",
        ),
        CardField(
            "intended_uses.purpose_of_model",
            "Purpose",
            "Why the model exists and what it must not be used for.",
        ),
        CardField(
            "intended_uses.intended_uses",
            "Intended uses",
            "Who uses the predictions, how, and with what human review.",
        ),
        CardField(
            "intended_uses.factors_affecting_model_efficiency",
            "Factors affecting performance",
            "Conditions under which the model is known to do worse.",
            required=False,
        ),
        CardField(
            "intended_uses.risk_rating",
            "Risk rating",
            "High, Medium or Low ('Unknown' leaves the card incomplete).",
            choices=RISK_RATINGS,
        ),
        CardField(
            "intended_uses.explanations_for_risk_rating",
            "Why this risk rating",
            "The reasoning behind the rating.",
        ),
        CardField(
            "training_details.objective_function",
            "Objective",
            "What the training optimised, if more than the algorithm's default loss.",
            required=False,
        ),
        CardField(
            "additional_information.ethical_considerations",
            "Ethical considerations",
            "Fairness, privacy and autonomy concerns, and how they are handled.",
        ),
        CardField(
            "additional_information.caveats_and_recommendations",
            "Limitations and recommendations",
            "Known limitations, and what users should do about them.",
        ),
        CardField(
            "additional_information.custom_details",
            "Other details",
            "Anything else the organisation records on its cards.",
            required=False,
        ),
    )
}


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CardVersion(_Schema):
    """One immutable version of the person-written fields of a card."""

    version: int = Field(ge=1, description="Card version, from 1.")
    fields: dict[str, Any] = Field(description="The written fields by dotted path.")
    changed: list[str] = Field(description="The fields this version changed.")
    note: str = Field(description="Why the card was edited.")
    created_at: datetime = Field(description="When (UTC).")
    created_by: str = Field(description="Who edited it.")


class ModelCard(_Schema):
    """The card of one model version: SageMaker's sections, filled and written."""

    model: str = Field(description="Registered model name.")
    model_version: int = Field(description="Model version number.")
    model_version_id: str = Field(description="Model version id.")
    status: CardStatus = Field(description="Draft, PendingReview, Approved or Archived.")
    card_version: int = Field(
        ge=0, description="Version of the person-written fields shown; 0: nothing written yet."
    )
    complete: bool = Field(description="Every required field is written.")
    missing: list[str] = Field(description="Required fields not written yet (dotted paths).")
    content: dict[str, Any] = Field(
        description="The card document: model_overview, intended_uses, business_details, "
        "training_details, evaluation_details, additional_information, approval, deployments."
    )
    updated_at: datetime | None = Field(description="Last edit or status change (UTC).")
    updated_by: str | None = Field(description="Who made it.")
