"""Platform records of the evaluation stage: a stored bias or explanation report.

:mod:`civicml.evaluation.schemas` and :mod:`civicml.evaluation.explain_schemas` hold the engines'
own output (:class:`~civicml.evaluation.schemas.BiasReport`,
:class:`~civicml.evaluation.explain_schemas.ExplanationReport`); this module holds what the
platform records around it: which dataset version and model version were evaluated, the options,
the figures in brief, and the files stored with it (``report.json``, ``report.html``).

The ``summary`` of an evaluation is machine-readable on purpose — approval gates, model cards
and the model dashboard read it:

* bias (``bias_pre_training`` / ``bias_post_training``): :class:`BiasSummary`,
  ``{"label", "positive_label", "facets", "values", "stage"}`` where ``values`` is
  ``{facet column: {facet value label: {metric code: float | null}}}``. A facet value label is
  the one the bias report uses: the value as text (``"female"``), several values analysed
  together joined by ``","`` (``"north,east"``), or for a continuous facet with a threshold
  Clarify's interval ``"(threshold, max]"`` (``"(40, 90]"``: the rows above 40).
  With a model the evaluation is ``bias_post_training`` and ``values`` holds both the
  pre-training codes (CI, DPL, KL, JS, LP, TVD, KS, CDDL) and the post-training ones (DPPL, DI,
  DCAcc, DAR, DRR, AD, RD, SD, DCR, TE, CDDPL, FT, GE); without one, only the pre-training codes.
  CDDL and CDDPL are null unless a ``group`` column was given.
* explanation: :class:`ExplanationSummary`,
  ``{"output", "output_space", "explainer", "top_features", "n_rows", "pd_columns"}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from civicml.core.types import FiniteFloat
from civicml.monitoring.records import DatasetVersionRef
from civicml.store.schemas import ArtifactInfo

__all__ = [
    "KINDS",
    "BiasInputs",
    "BiasSummary",
    "DatasetVersionRef",
    "Evaluation",
    "EvaluationKind",
    "ExplanationInputs",
    "ExplanationSummary",
    "FacetSpec",
    "FeatureImportance",
    "ModelVersionRef",
    "Scalar",
]

EvaluationKind = Literal["bias_pre_training", "bias_post_training", "explanation"]
#: Every evaluation kind, in the order they are documented.
KINDS: tuple[EvaluationKind, ...] = ("bias_pre_training", "bias_post_training", "explanation")
#: A label or facet value as JSON carries it.
Scalar: TypeAlias = bool | int | float | str


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelVersionRef(_Schema):
    """The model version an evaluation used, e.g. ``eligibility v3``."""

    name: str = Field(description="Registered model name, e.g. 'eligibility'.")
    version: int = Field(ge=1, description="Version number (an alias is resolved when run).")
    id: str = Field(description="Id of the model version (its lineage node's ref).")


class FacetSpec(_Schema):
    """One facet (protected attribute) to measure bias for, and which of its values.

    ``{"column": "sex"}`` analyses every value of ``sex`` in turn against the rest of the rows;
    ``values`` analyses only those (an inner list analyses several values together); a
    ``threshold`` makes the facet continuous: facet d is the rows with a value above it.
    """

    column: str = Field(min_length=1, description="The facet column, e.g. 'sex' or 'age'.")
    threshold: FiniteFloat | None = Field(
        default=None,
        description="For a continuous facet: facet d is the rows above this value, e.g. 40.",
    )
    values: list[Scalar | list[Scalar]] | None = Field(
        default=None,
        description="Facet values to analyse, each against the rest, e.g. ['female']; an inner "
        "list is analysed as one group, e.g. [['north', 'east']]. Null: every value.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> FacetSpec:
        if self.threshold is not None and self.values is not None:
            raise ValueError(
                f"facet {self.column!r} has both a threshold and values; give one: a "
                "threshold for a continuous facet, values for a categorical one"
            )
        if self.values is not None and not self.values:
            raise ValueError(f"values of facet {self.column!r} is empty; leave it out for all")
        return self


class BiasInputs(_Schema):
    """The options of a bias evaluation."""

    label: str = Field(description="The observed label column, e.g. 'eligible'.")
    positive_label: list[Scalar] = Field(
        description="Label values that are the favourable outcome, e.g. [1]."
    )
    facets: list[FacetSpec] = Field(description="The facets measured.")
    group: str | None = Field(
        default=None, description="Column of strata for CDDL / CDDPL; null when none."
    )


class ExplanationInputs(_Schema):
    """The options of an explanation."""

    rows: int = Field(ge=1, description="Most rows explained (a seeded sample beyond).")
    seed: int = Field(ge=0, description="Seed of the row sample.")
    top_k: int = Field(ge=1, description="Partial dependence of this many top columns.")


class BiasSummary(_Schema):
    """Every bias figure, by facet, facet value and metric code (the details in report.json)."""

    stage: Literal["pre_training", "post_training"] = Field(
        description="'pre_training': labels only; 'post_training': a model's predictions too "
        "(values then holds the pre- and the post-training codes)."
    )
    label: str = Field(description="The observed label column.")
    positive_label: list[str] = Field(
        description="Label values counted as the positive outcome, as text."
    )
    facets: list[str] = Field(description="The facet columns, in the order given.")
    values: dict[str, dict[str, dict[str, float | None]]] = Field(
        description="{facet column: {facet value label: {metric code: value}}}; a facet value "
        "label is the value as text ('female'), values joined by ',' ('north,east'), or for a "
        "threshold Clarify's interval '(threshold, max]' ('(40, 90]'); null: undefined for "
        "these rows (report.json says why)."
    )


class FeatureImportance(_Schema):
    """One raw input column and its global importance."""

    column: str = Field(description="Raw input column (a signature column).")
    importance: float = Field(
        ge=0, description="Mean absolute SHAP attribution, in the output space."
    )


class ExplanationSummary(_Schema):
    """The global explanation in brief (attributions and curves in report.json)."""

    output: str = Field(
        description="The explained output: the positive class of a binary classifier ('1'), "
        "the classes joined by ',' for a multiclass one, 'value' for a regression model."
    )
    output_space: Literal["margin", "probability", "value"] = Field(
        description="What the attributions add up to: 'margin' (log-odds), 'probability' or "
        "'value' (regression)."
    )
    explainer: Literal["tree", "linear", "kernel"] = Field(description="SHAP explainer used.")
    top_features: list[FeatureImportance] = Field(
        description="Every input column, most important first."
    )
    n_rows: int = Field(ge=0, description="Rows explained.")
    pd_columns: list[str] = Field(description="Columns with a partial dependence curve.")


class Evaluation(_Schema):
    """A stored evaluation: the record, what it evaluated, its figures in brief, its files."""

    id: str = Field(description="Evaluation id.")
    project: str = Field(description="Project name.")
    kind: EvaluationKind = Field(
        description="'bias_pre_training' (a dataset's labels), 'bias_post_training' (a model's "
        "predictions on a dataset, with the pre-training figures too) or 'explanation'."
    )
    title: str = Field(description="Heading of the report.")
    model: ModelVersionRef | None = Field(
        description="The model version evaluated; null for pre-training bias."
    )
    dataset: DatasetVersionRef = Field(description="The dataset version evaluated on.")
    created_at: datetime = Field(description="When it was made (UTC).")
    created_by: str = Field(description="Who made it.")
    summary: BiasSummary | ExplanationSummary = Field(
        description="The figures in brief, machine-readable (see the module docstring)."
    )
    inputs: BiasInputs | ExplanationInputs = Field(description="The options it was made with.")
    files: list[ArtifactInfo] = Field(
        description="Stored files: 'report.json' (the BiasReport or ExplanationReport) and "
        "'report.html' (self-contained page)."
    )
