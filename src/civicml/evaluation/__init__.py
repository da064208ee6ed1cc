"""Model evaluation for responsible AI: explanations (SHAP) of tabular models.

``explain_global`` ranks a model's raw input columns by mean |SHAP attribution|,
``explain_local`` explains single predictions, ``partial_dependence`` shows how the prediction
moves with a column, and ``explain`` bundles them into an :class:`ExplanationReport` that
``render_explanation_html`` turns into a self-contained page. Attributions are always expressed
in the signature's columns (one-hot columns summed back); see :mod:`civicml.evaluation.explain`.

Bias metrics as SageMaker Clarify defines them: ``pretraining_bias`` (CI, DPL, KL, JS, LP, TVD,
KS, CDDL on the labels) and ``posttraining_bias`` (DPPL, DI, DCAcc, DAR, DRR, AD, RD, SD, DCR,
TE, CDDPL, FT, GE on a model's predictions) give a :class:`BiasReport` per facet value, which
``render_bias_html`` turns into a self-contained page; see :mod:`civicml.evaluation.bias`.
"""

from civicml.evaluation.bias import posttraining_bias, pretraining_bias
from civicml.evaluation.explain import (
    Attributions,
    ModelExplainer,
    explain,
    explain_global,
    explain_local,
    partial_dependence,
)
from civicml.evaluation.explain_html import render_explanation_html
from civicml.evaluation.explain_schemas import (
    ColumnImportance,
    ExplanationReport,
    GlobalExplanation,
    LocalExplanation,
    OutputAttribution,
    PartialDependence,
    PartialDependenceCurve,
)
from civicml.evaluation.report_html import render_bias_html
from civicml.evaluation.schemas import BiasFacetResult, BiasMetric, BiasReport

__all__ = [
    "Attributions",
    "BiasFacetResult",
    "BiasMetric",
    "BiasReport",
    "ColumnImportance",
    "ExplanationReport",
    "GlobalExplanation",
    "LocalExplanation",
    "ModelExplainer",
    "OutputAttribution",
    "PartialDependence",
    "PartialDependenceCurve",
    "explain",
    "explain_global",
    "explain_local",
    "partial_dependence",
    "posttraining_bias",
    "pretraining_bias",
    "render_bias_html",
    "render_explanation_html",
]
