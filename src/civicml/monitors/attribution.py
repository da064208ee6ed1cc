"""Feature-attribution drift: the window's SHAP ranking of the features against the training
baseline's, compared by NDCG as SageMaker Model Monitor (Clarify) does.

Global attribution of a feature is its mean |SHAP value| over the rows explained, per explained
output (the positive class of a binary classifier, each class of a multiclass one, the value of a
regression), in the raw input columns (:class:`civicml.evaluation.explain.ModelExplainer`; one
explainer, with the baseline's rows as background, serves both sides). With F the features
sorted by baseline attribution, G sorted by the window's and a(f) the *baseline* attribution::

    NDCG = DCG / iDCG
    DCG  = Σ_{i=1..m} a(G_i) / log2(i + 1)
    iDCG = Σ_{i=1..m} a(F_i) / log2(i + 1)

(anchors B2). NDCG is 1 when the window ranks the features as the baseline does; an execution
is in violation when it falls below the threshold (0.90) for an output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

__all__ = ["global_attributions", "ndcg", "ranking"]


def ranking(attributions: Mapping[str, float]) -> list[str]:
    """Features by attribution, largest first (ties by name, so the order is stable)."""
    return sorted(attributions, key=lambda f: (-attributions[f], f))


def ndcg(
    baseline: Mapping[str, float], current: Mapping[str, float], top_k: int | None = None
) -> float | None:
    """Model Monitor's NDCG of ``current``'s ranking against ``baseline``'s (None when every
    baseline attribution is 0: there is no ranking to keep)."""
    features = [f for f in baseline if f in current]
    m = len(features) if top_k is None else min(top_k, len(features))
    ideal = ranking({f: baseline[f] for f in features})[:m]
    live = ranking({f: current[f] for f in features})[:m]
    idcg = sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(ideal))
    if idcg <= 0:
        return None
    dcg = sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(live))
    return dcg / idcg


def global_attributions(explainer: Any, frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean |SHAP| of each feature per explained output label (``"value"`` for regression)."""
    found = explainer.attributions(frame)
    means = np.abs(found.values).mean(axis=0)  # (columns, outputs)
    out: dict[str, dict[str, float]] = {}
    for k, label in enumerate(found.outputs):
        name = "value" if label is None else str(label)
        out[name] = {c: float(means[j, k]) for j, c in enumerate(found.columns)}
    return out
