"""Approval policies: the evidence a model version must show before someone may approve it.

A policy is a small declarative file per registered model, TOML (or the same structure as
JSON)::

    description = "Benefit eligibility: evidence before approval"

    [metrics]                       # the version's validation metrics
    roc_auc = { min = 0.80 }
    log_loss = { max = 0.60 }

    [[bias]]                        # the latest post-training bias report of the version
    metric = "DI"
    facet = "sex"                   # every value of the facet unless `value` names one
    min = 0.80
    max = 1.25

    [[bias]]
    metric = "DPPL"
    facet = "sex"
    max_abs = 0.10

    [explanation]
    required = true                 # a stored explanation report of the version

    [card]
    complete = true                 # every field a person must write is written
    status = "PendingReview"        # optional: the card has at least this status

    [data]                          # the training dataset version(s), found through lineage
    min_rows = 1000
    max_missing_fraction = 0.2      # per column
    no_drift = true                 # the latest drift report against it found no drift

    [evidence]                      # which evaluations count as bias/explanation evidence
    holdout = "applications-holdout"  # besides the training data: this dataset's version
    holdout_version = 2             # optional; default: its latest version when the gate runs

    [override]
    roles = ["risk_officer"]        # who may approve despite a failed gate, with a justification

    [aliases]
    require_approved = ["production", "champion"]  # may only point at an Approved version

Bounds follow MLflow's ``MetricThreshold``: a value passes when it is ``>= min`` and
``<= max`` (and ``|value| <= max_abs``). Unknown keys are errors, so a typo cannot silently
drop a check. Without ``[override]`` no one can override a failed gate. Without ``[aliases]``
(or without any policy) ``production`` is the one alias that requires an Approved version;
``require_approved = []`` lets every alias point at any version.

Bias and explanation evaluations count as evidence only when they were computed on the
version's training data (the dataset versions its training run consumed) or on the holdout
dataset version ``[evidence]`` names, after the policy version was set; see
:mod:`civicml.oversight.approvals`.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from civicml.core.errors import InvalidInputError
from civicml.core.ids import NAME_PATTERN
from civicml.evaluation.schemas import POSTTRAINING_CODES, PRETRAINING_CODES
from civicml.registry.schemas import PROTECTED_ALIASES

__all__ = [
    "AliasRule",
    "ApprovalPolicy",
    "BiasCheck",
    "Bound",
    "CardRule",
    "DataRule",
    "EvidenceRule",
    "ExplanationRule",
    "OverrideRule",
    "parse_policy",
]

CardStatus = Literal["Draft", "PendingReview", "Approved"]
_BIAS_CODES = frozenset(PRETRAINING_CODES) | frozenset(POSTTRAINING_CODES)


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Bound(_Rule):
    """Limits on one figure: ``min <= value <= max`` and ``|value| <= max_abs``."""

    min: float | None = Field(default=None, description="Smallest passing value.")
    max: float | None = Field(default=None, description="Largest passing value.")
    max_abs: float | None = Field(default=None, ge=0, description="Largest passing |value|.")

    @model_validator(mode="after")
    def _some_limit(self) -> Bound:
        if self.min is None and self.max is None and self.max_abs is None:
            raise ValueError("give at least one of min, max, max_abs")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def admits(self, value: float) -> bool:
        """Whether ``value`` is within every limit."""
        return (
            (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
            and (self.max_abs is None or abs(value) <= self.max_abs)
        )

    def describe(self) -> str:
        """The limits in words, e.g. ``">= 0.8 and <= 1.25"``."""
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.max_abs is not None:
            parts.append(f"|x| <= {self.max_abs:g}")
        return " and ".join(parts)


class BiasCheck(Bound):
    """A limit on one Clarify bias metric for one facet (every facet value, or one)."""

    metric: str = Field(description="Clarify metric code, e.g. 'DI' or 'DPPL'.")
    facet: str = Field(min_length=1, description="Facet column, e.g. 'sex'.")
    value: str | None = Field(
        default=None, description="One facet value label, e.g. 'F'; default: every value."
    )

    @model_validator(mode="after")
    def _known_metric(self) -> BiasCheck:
        if self.metric not in _BIAS_CODES:
            raise ValueError(
                f"unknown bias metric {self.metric!r}; use one of {', '.join(sorted(_BIAS_CODES))}"
            )
        return self


class ExplanationRule(_Rule):
    required: bool = Field(default=True, description="An explanation report must exist.")


class CardRule(_Rule):
    complete: bool = Field(default=True, description="Every required card field is written.")
    status: CardStatus | None = Field(
        default=None,
        description="The card has at least this status (Draft < PendingReview < Approved).",
    )


class DataRule(_Rule):
    min_rows: int | None = Field(default=None, ge=0, description="Rows in the training data.")
    max_missing_fraction: float | None = Field(
        default=None, ge=0, le=1, description="Largest share of missing values in any column."
    )
    no_drift: bool = Field(
        default=False,
        description="The latest drift report with the training data as baseline found no drift.",
    )


class EvidenceRule(_Rule):
    """The datasets whose evaluations count as evidence, besides the training data."""

    holdout: str | None = Field(
        default=None,
        description="A holdout dataset whose version counts too, e.g. 'applications-holdout'.",
    )
    holdout_version: int | None = Field(
        default=None,
        ge=1,
        description="The holdout's version; default: its latest version when the gate runs.",
    )

    @model_validator(mode="after")
    def _holdout_name(self) -> EvidenceRule:
        if self.holdout is not None and not NAME_PATTERN.fullmatch(self.holdout):
            raise ValueError(f"{self.holdout!r} is not a dataset name, e.g. 'applications'")
        if self.holdout is None and self.holdout_version is not None:
            raise ValueError("holdout_version needs holdout, the dataset it is a version of")
        return self


class OverrideRule(_Rule):
    roles: list[str] = Field(
        default_factory=list, description="Roles that may approve despite a failed gate."
    )
    min_justification_chars: int = Field(
        default=20, ge=1, description="The shortest written justification accepted."
    )


class AliasRule(_Rule):
    require_approved: list[str] = Field(
        default_factory=lambda: list(PROTECTED_ALIASES),
        max_length=100,
        description="Aliases that may only point at an Approved version (default: production).",
    )

    @model_validator(mode="after")
    def _alias_names(self) -> AliasRule:
        for alias in self.require_approved:
            if not NAME_PATTERN.fullmatch(alias):
                raise ValueError(f"{alias!r} is not an alias name, e.g. 'production'")
        return self


class ApprovalPolicy(_Rule):
    """The parsed policy of one registered model."""

    description: str = Field(default="", max_length=2000, description="What the policy is for.")
    metrics: dict[str, Bound] = Field(
        default_factory=dict, description="Limits on the version's metrics, by metric name."
    )
    bias: list[BiasCheck] = Field(default_factory=list, description="Limits on bias metrics.")
    explanation: ExplanationRule | None = Field(default=None)
    card: CardRule | None = Field(default=None)
    data: DataRule | None = Field(default=None)
    evidence: EvidenceRule | None = Field(
        default=None,
        description="Datasets whose evaluations count as evidence, besides the training data.",
    )
    override: OverrideRule = Field(default_factory=OverrideRule)
    aliases: AliasRule | None = Field(
        default=None, description="Aliases that require an Approved version."
    )

    def n_checks(self) -> int:
        """How many rules the policy has (each bias rule may check several facet values)."""
        return (
            len(self.metrics)
            + len(self.bias)
            + int(self.explanation is not None and self.explanation.required)
            + int(self.card is not None)
            + int(self.data is not None)
        )


def parse_policy(source: str | dict[str, Any], *, what: str = "the policy") -> ApprovalPolicy:
    """Parse a policy from TOML or JSON text, or from its parsed form.

    Raises:
        InvalidInputError: The text is neither TOML nor JSON, or a key or value is not valid
            (the message names it).
    """
    if isinstance(source, dict):
        data: Any = source
    else:
        text = source.strip()
        if not text:
            raise InvalidInputError(
                f"{what} is empty.",
                hint="Write at least one rule, e.g. [metrics] roc_auc = "
                "{ min = 0.8 }; see docs/governance.md.",
            )
        try:
            data = json.loads(text) if text.startswith("{") else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as err:
            raise InvalidInputError(
                f"{what} is not valid TOML or JSON: {err}.",
                hint="See the policy format in docs/governance.md.",
            ) from err
    try:
        policy = ApprovalPolicy.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise InvalidInputError(
            f"{what}: {where}: {first['msg']}.",
            hint="See the policy format in docs/governance.md.",
            details=[
                {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                for e in err.errors()
            ],
        ) from err
    if policy.n_checks() == 0 and policy.aliases is None:
        raise InvalidInputError(
            f"{what} has no rule, so it would pass every version.",
            hint="Add a [metrics], [[bias]], [explanation], [card], [data] or [aliases] rule.",
        )
    return policy
