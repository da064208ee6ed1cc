"""Pydantic schemas of explanations: global importance, local attributions, partial dependence.

Every attribution is expressed in the model's *raw input columns* (the signature's columns): the
attributions of the transformed columns a column becomes (one-hot dummies, scaled numbers) are
summed back to it. ``output_space`` says what the attributions add up to:

* ``"margin"``: the model's raw score before the link function — log-odds of the positive class
  for a binary LightGBM or logistic model, the per-class softmax scores for a multiclass one;
* ``"probability"``: class probabilities (random forests, whose trees average leaf frequencies,
  and the kernel explainer on classifiers);
* ``"value"``: the predicted value of a regression model.

``base_value + sum(attributions) == output`` for every row and explained output, to float
precision (the kernel explainer: to its sampling error).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ColumnImportance",
    "ExplainerKind",
    "ExplanationReport",
    "GlobalExplanation",
    "Label",
    "LocalExplanation",
    "OutputAttribution",
    "OutputSpace",
    "PartialDependence",
    "PartialDependenceCurve",
]

ExplainerKind = Literal["tree", "linear", "kernel"]
OutputSpace = Literal["margin", "probability", "value"]
#: A class label, a target value or an input value, as JSON has it.
Label = bool | int | float | str


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnImportance(_Schema):
    """How much one raw input column moves the model's output, over the explained rows."""

    column: str = Field(description="Raw input column (a signature column).")
    importance: float = Field(
        description="Mean absolute attribution over the explained rows (and, for a multiclass "
        "model, over the classes), in the explanation's output space.",
        ge=0,
    )
    share: float = Field(
        description="This column's importance divided by the sum over all columns (0 to 1).",
        ge=0,
        le=1,
    )
    by_output: list[float] = Field(
        description="Mean absolute attribution per explained output, in the order of "
        "GlobalExplanation.outputs.",
    )


class GlobalExplanation(_Schema):
    """Global feature importance of a model on a dataset: mean |SHAP| per raw input column."""

    task: Literal["classification", "regression"] = Field(description="The model's task.")
    algorithm: str = Field(description="The model's algorithm, e.g. 'lightgbm'.")
    explainer: ExplainerKind = Field(
        description="SHAP explainer used: 'tree' (TreeExplainer, path-dependent), 'linear' "
        "(LinearExplainer, interventional, background = the explained rows) or 'kernel' "
        "(KernelExplainer on a small background sample)."
    )
    output_space: OutputSpace = Field(
        description="What attributions add up to: 'margin' (log-odds / softmax scores), "
        "'probability' or 'value' (regression)."
    )
    outputs: list[Label | None] = Field(
        description="The explained outputs: [positive class] for binary classification, every "
        "class for multiclass, [null] for regression."
    )
    base_values: list[float] = Field(
        description="Expected model output (the SHAP base value) per explained output."
    )
    columns: list[str] = Field(description="The raw input columns, in signature order.")
    importance: list[ColumnImportance] = Field(
        description="One entry per raw column, most important first."
    )
    rows_total: int = Field(description="Rows in the data given.", ge=0)
    rows_explained: int = Field(
        description="Rows explained: all of them, or a seeded random sample of max_rows.", ge=0
    )
    seed: int = Field(description="Seed of the row sample and of the kernel explainer.")
    target: str | None = Field(
        default=None,
        description="The column the model predicts, e.g. 'eligible' (null in explanations "
        "stored before it was recorded).",
    )
    classes: list[Label] = Field(
        default_factory=list,
        description="Every class of a classifier, in the model's order ([] for regression): "
        "with outputs, which class the attributions of a binary classifier explain and which "
        "one they do not.",
    )


class OutputAttribution(_Schema):
    """Attributions of one row towards one explained output (a class, or the regression value)."""

    label: Label | None = Field(
        description="The explained class (the positive class of a binary model); null for "
        "regression."
    )
    base_value: float = Field(description="Expected model output over the background.")
    output: float = Field(
        description="The model's output for this row in the output space; equals base_value "
        "plus the sum of attributions."
    )
    attributions: dict[str, float] = Field(
        description="SHAP attribution per raw input column, in signature order."
    )


class LocalExplanation(_Schema):
    """Why the model made one prediction: per-column attributions for one input row."""

    row: int = Field(description="Position of the row in the input (0-based).", ge=0)
    explainer: ExplainerKind = Field(description="SHAP explainer used.")
    output_space: OutputSpace = Field(description="What the attributions add up to.")
    prediction: Label = Field(description="The predicted label or value for the row.")
    values: dict[str, Label | None] = Field(
        description="The row's raw input values (timestamps as ISO 8601 strings, missing as null)."
    )
    outputs: list[OutputAttribution] = Field(
        description="Attributions per explained output: one for binary classification (the "
        "positive class) and regression, one per class for multiclass."
    )


class PartialDependenceCurve(_Schema):
    """The average model output as one column sweeps its grid, for one output."""

    label: Label | None = Field(
        description="The class whose probability is shown; null for regression."
    )
    average: list[float] = Field(description="Average predicted output at each grid value.")


class PartialDependence(_Schema):
    """Partial dependence of the model's prediction on one raw input column."""

    column: str = Field(description="The raw input column varied.")
    kind: Literal["numeric", "categorical"] = Field(
        description="'numeric': an evenly spaced grid between the 5th and 95th percentiles (or "
        "the distinct values if fewer); 'categorical': the most frequent values."
    )
    grid: list[Label] = Field(description="The values the column was set to.")
    output_space: Literal["probability", "value"] = Field(
        description="'probability' of each class (classification) or predicted 'value'."
    )
    curves: list[PartialDependenceCurve] = Field(
        description="One curve per explained output: the positive class (binary), every class "
        "(multiclass) or the value (regression)."
    )
    rows: int = Field(description="Rows averaged over (a seeded sample of the data).", ge=1)


class ExplanationReport(_Schema):
    """Everything the explanation report shows: global importance, partial dependence, examples."""

    global_explanation: GlobalExplanation = Field(description="Global feature importance.")
    partial_dependence: list[PartialDependence] = Field(
        description="Partial dependence of the most important columns."
    )
    local: list[LocalExplanation] = Field(description="Local explanations of example rows.")
