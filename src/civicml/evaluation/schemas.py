"""Schemas of the bias report that cross a boundary (SDK, REST, CLI ``--json``).

A :class:`BiasReport` holds, for every facet column and every facet value analysed (facet *d*,
compared with the rest of the rows, facet *a*), one :class:`BiasMetric` per SageMaker Clarify
metric code (``../shared/reference/anchors.md`` B1). Values are plain floats or ``null`` — never
``Infinity`` or ``NaN`` — and a ``null`` always comes with a ``note`` saying why.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "POSTTRAINING_CODES",
    "PRETRAINING_CODES",
    "BiasFacetKind",
    "BiasFacetResult",
    "BiasMetric",
    "BiasMetricCode",
    "BiasPredictionSource",
    "BiasReport",
    "BiasStage",
]

BiasStage = Literal["pre_training", "post_training"]
BiasFacetKind = Literal["categorical", "continuous"]
BiasPredictionSource = Literal["column", "probability", "model"]
BiasMetricCode = Literal[
    "CI",
    "DPL",
    "KL",
    "JS",
    "LP",
    "TVD",
    "KS",
    "CDDL",
    "DPPL",
    "DI",
    "DCAcc",
    "DAR",
    "DRR",
    "AD",
    "RD",
    "SD",
    "DCR",
    "TE",
    "CDDPL",
    "FT",
    "GE",
]
#: Clarify's pre-training (data) metric codes, in report order.
PRETRAINING_CODES: tuple[BiasMetricCode, ...] = (
    "CI",
    "DPL",
    "KL",
    "JS",
    "LP",
    "TVD",
    "KS",
    "CDDL",
)
#: Clarify's post-training (model) metric codes, in report order (``DCAcc`` is Clarify's ``DCA``).
POSTTRAINING_CODES: tuple[BiasMetricCode, ...] = (
    "DPPL",
    "DI",
    "DCAcc",
    "DAR",
    "DRR",
    "AD",
    "RD",
    "SD",
    "DCR",
    "TE",
    "CDDPL",
    "FT",
    "GE",
)


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BiasMetric(_Schema):
    """One bias metric for one facet value, e.g. ``DPPL = 0.12`` for ``sex = F``."""

    code: BiasMetricCode = Field(description="Clarify's metric code, e.g. 'DPL' or 'DI'.")
    name: str = Field(description="Full name, e.g. 'Difference in Proportions of Labels'.")
    value: float | None = Field(
        description="The metric; null when it is undefined for these rows (see note)."
    )
    description: str = Field(description="The formula, in Clarify's notation (facet a vs d).")
    interpretation: str = Field(
        description="How to read the value, e.g. '0 = parity; positive means facet d is "
        "disadvantaged'."
    )
    range: str = Field(description="Range of possible values, e.g. '[-1, 1]'.")
    parity: float = Field(
        description="The value meaning no measured bias: 1 for DI, 0 for every other metric."
    )
    n_a: int = Field(description="Rows in facet a (every analysed row not in facet d).")
    n_d: int = Field(description="Rows in facet d (the facet value analysed).")
    note: str | None = Field(
        default=None, description="Why the value is null, or a caveat about it; null if none."
    )


class BiasFacetResult(_Schema):
    """Every metric of one facet value (facet d) against the rest of the rows (facet a)."""

    facet: str = Field(description="The facet (protected attribute) column, e.g. 'sex'.")
    facet_value: str = Field(
        description="Facet d as text: a value ('F'), values joined by ',' ('north,east') or, for "
        "a continuous facet, Clarify's interval '(threshold, max]'."
    )
    facet_kind: BiasFacetKind = Field(
        description="'categorical' (facet d = rows with the value) or 'continuous' (facet d = "
        "rows above the threshold)."
    )
    n_a: int = Field(description="Rows in facet a.")
    n_d: int = Field(description="Rows in facet d.")
    metrics: list[BiasMetric] = Field(description="One entry per metric computed.")

    def metric(self, code: str) -> BiasMetric:
        """The metric with this code; ``KeyError`` if it was not computed."""
        for m in self.metrics:
            if m.code == code:
                return m
        raise KeyError(code)


class BiasReport(_Schema):
    """Pre- or post-training bias metrics per facet value, as SageMaker Clarify defines them."""

    stage: BiasStage = Field(
        description="'pre_training' (labels) or 'post_training' (predictions)."
    )
    label: str = Field(description="The observed label column.")
    positive_label: list[str] = Field(
        description="Label values counted as the positive (favourable) outcome, as text."
    )
    predicted: str | None = Field(
        description="The predicted-label column, 'model' or the probability column it was "
        "derived from; null for pre-training reports."
    )
    prediction_source: BiasPredictionSource | None = Field(
        description="Where predicted labels came from: a 'column' of labels, a 'probability' "
        "column above probability_threshold, or a 'model' callable; null for pre-training."
    )
    probability_threshold: float | None = Field(
        description="Scores above this are positive predictions (Clarify's default 0.5); null "
        "unless prediction_source is 'probability'."
    )
    group: str | None = Field(description="Column of strata for CDDL/CDDPL, if one was given.")
    n_rows: int = Field(description="Rows in the data frame analysed.")
    facets: list[BiasFacetResult] = Field(description="One entry per facet column and value.")
    notes: list[str] = Field(
        description="Caveats about the whole analysis, e.g. rows left out for a missing facet."
    )

    def result(self, facet: str, facet_value: str) -> BiasFacetResult:
        """The result of one facet value; ``KeyError`` if that value was not analysed."""
        for r in self.facets:
            if r.facet == facet and r.facet_value == facet_value:
                return r
        raise KeyError((facet, facet_value))
