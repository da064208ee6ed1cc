"""Model quality against delayed ground truth: labels joined to captured predictions, metrics
per window, and Model Monitor style constraints on them.

Labels arrive later, as ``(inference_id, label)`` rows; they are matched to the prediction's
classes *by their text* (``"1"``, ``1`` and ``1.0`` are the class ``1``; ``"True"`` and ``"1"``
the class ``True``), so a CSV column read as text still meets the model's own labels. Both sides
are then class indices and scikit-learn computes the metrics:

* binary classification (positive class: the model's second class unless named): accuracy,
  precision, recall, F1 and ROC AUC (from the captured probability of the positive class);
* multiclass: accuracy and the ``weighted_`` precision, recall and F1 (Model Monitor's names),
  and one-vs-rest weighted ROC AUC;
* regression: MSE, RMSE, MAE and R².

As Model Monitor does, each metric gets a ``standard_deviation`` when the window holds at least
200 labeled records: the metric on five seeded samples of 80 % of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.monitors.schemas import MetricConstraint, ModelQualityConstraints, MonitorViolation

__all__ = [
    "DEFAULT_METRICS",
    "HIGHER_IS_BETTER",
    "check_quality",
    "classification_metrics",
    "label_key",
    "labeled_frame",
    "match_labels",
    "quality_metrics",
    "regression_metrics",
    "suggest_quality_constraints",
]

#: The metrics a suggested baseline constrains, per problem type.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "BinaryClassification": ("accuracy", "precision", "recall", "f1", "auc"),
    "MulticlassClassification": (
        "accuracy",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
    ),
    "Regression": ("rmse", "mae", "r2"),
}
#: Metrics where a larger value is better (the rest are errors).
HIGHER_IS_BETTER = frozenset(
    {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "weighted_precision",
        "weighted_recall",
        "weighted_f1",
        "r2",
    }
)
_SD_MIN_ROWS, _SD_SAMPLES, _SD_SHARE = 200, 5, 0.8


def label_key(value: Any) -> str | None:
    """The text a label is matched by: ``True``/``"true"``/``"TRUE"`` → ``"true"``, ``1``/
    ``1.0``/``"1"`` → ``"1"``, ``"North "`` → ``"north"``; None for a missing value."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return text.lower()


def match_labels(values: Any, classes: Sequence[Any]) -> np.ndarray[Any, Any]:
    """Class index of each value (-1 where it is none of the classes); each distinct value is
    keyed once, so a million labels of two classes cost two lookups."""
    index: dict[str, int] = {}
    for k, cls in enumerate(classes):
        key = label_key(cls)
        if key is not None:
            index.setdefault(key, k)
    if all(isinstance(c, bool | np.bool_) for c in classes):
        index.setdefault("1", index.get("true", -1))
        index.setdefault("0", index.get("false", -1))
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object), dtype=object))
    lookup = np.asarray(
        [index.get(label_key(u) or "\0", -1) for u in uniques] + [-1], dtype=np.int64
    )
    found: np.ndarray[Any, Any] = lookup[codes]  # a missing value's -1 picks the trailing -1
    return found


def _safe(num: float, den: float) -> float:
    return num / den if den else 0.0


def score_groups(score: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], int]:
    """Each score's rank among the distinct scores (one sort), reused by every AUC on a subset
    of the same rows."""
    distinct, groups = np.unique(score, return_inverse=True)
    return groups, len(distinct)


def _auc(positive: np.ndarray[Any, Any], groups: tuple[np.ndarray[Any, Any], int]) -> float | None:
    """ROC AUC as the Mann-Whitney statistic, ties counted half (what scikit-learn's
    trapezoidal ROC AUC equals), from the rows' score groups; None unless both classes are
    present."""
    rank, size = groups
    pos = np.bincount(rank[positive], minlength=size).astype(np.float64)
    neg = np.bincount(rank[~positive], minlength=size).astype(np.float64)
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.cumsum(neg) - neg  # negatives with a lower score than each group
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def classification_metrics(
    y_true: np.ndarray[Any, Any],
    y_pred: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    n_classes: int,
    positive: int = 1,
    groups: list[tuple[np.ndarray[Any, Any], int]] | None = None,
) -> dict[str, float | None]:
    """Metrics of class indices ``y_true`` vs ``y_pred`` (see the module docstring), from the
    confusion matrix (scikit-learn's definitions, ``zero_division=0``); ``groups`` are the
    probability columns' :func:`score_groups` for these rows (computed when not given)."""
    if probabilities is not None and groups is None:
        groups = [score_groups(probabilities[:, c]) for c in range(probabilities.shape[1])]
    k = n_classes
    matrix = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)
    n = float(matrix.sum())
    tp = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(k), where=both > 0)
    out: dict[str, float | None] = {"accuracy": _safe(float(tp.sum()), n)}
    if k == 2:
        out.update(
            precision=float(precision[positive]),
            recall=float(recall[positive]),
            f1=float(f1[positive]),
        )
        out["auc"] = None if groups is None else _auc(y_true == positive, groups[positive])
        return out
    weights = actual / n if n else actual
    out.update(
        weighted_precision=float((precision * weights).sum()),
        weighted_recall=float((recall * weights).sum()),
        weighted_f1=float((f1 * weights).sum()),
    )
    auc: float | None = None
    if groups is not None and (actual > 0).all():
        per_class = [_auc(y_true == c, groups[c]) for c in range(k)]
        if all(a is not None for a in per_class):
            auc = float(sum(float(a or 0.0) * w for a, w in zip(per_class, weights, strict=True)))
    out["auc"] = auc
    return out


def regression_metrics(
    y_true: np.ndarray[Any, Any], y_pred: np.ndarray[Any, Any]
) -> dict[str, float | None]:
    """MSE, RMSE, MAE and R² (R² needs two distinct true values)."""
    error = y_true - y_pred
    mse = float(np.mean(error**2))
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else None,
    }


def quality_metrics(
    problem: str,
    y_true: np.ndarray[Any, Any],
    y_pred: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None = None,
    *,
    n_classes: int = 0,
    positive: int = 1,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """The metrics of one window and their standard deviations (None below 200 rows)."""

    groups: list[tuple[np.ndarray[Any, Any], int]] | None = None
    if probabilities is not None and problem != "Regression":
        columns = [positive] if n_classes == 2 else range(n_classes)
        empty: tuple[np.ndarray[Any, Any], int] = (np.zeros(0, dtype=np.int64), 0)
        groups = [empty] * probabilities.shape[1]
        for c in columns:  # a binary AUC needs the positive column only
            groups[c] = score_groups(probabilities[:, c])

    def compute(idx: np.ndarray[Any, Any] | None) -> dict[str, float | None]:
        t = y_true if idx is None else y_true[idx]
        p = y_pred if idx is None else y_pred[idx]
        if problem == "Regression":
            return regression_metrics(t, p)
        subset = (
            groups
            if groups is None or idx is None
            else [(g[idx] if n else g, n) for g, n in groups]  # n = 0: a column not needed
        )
        return classification_metrics(t, p, probabilities, n_classes, positive, subset)

    metrics = compute(None)
    deviations: dict[str, float | None] = dict.fromkeys(metrics)
    n = len(y_true)
    if n >= _SD_MIN_ROWS:
        rng = np.random.default_rng(0)
        size = int(_SD_SHARE * n)
        samples = [compute(rng.permutation(n)[:size]) for _ in range(_SD_SAMPLES)]
        for name in metrics:
            found = [v for s in samples if (v := s[name]) is not None]
            deviations[name] = float(np.std(found, ddof=1)) if len(found) > 1 else None
    return metrics, deviations


def suggest_quality_constraints(
    problem: str, baseline: Mapping[str, float | None], tolerance: float
) -> ModelQualityConstraints:
    """Thresholds a baseline suggests: each default metric's baseline value less ``tolerance``
    of it (accuracy 0.90 with 0.2 → violated below 0.72), or plus it for errors (RMSE)."""
    found: dict[str, MetricConstraint] = {}
    for name in DEFAULT_METRICS[problem]:
        value = baseline.get(name)
        if value is None or not math.isfinite(value):
            continue
        if name in HIGHER_IS_BETTER:
            threshold = value - tolerance * abs(value)
            operator = "LessThanThreshold"
        else:
            threshold = value + tolerance * abs(value)
            operator = "GreaterThanThreshold"
        found[name] = MetricConstraint(
            threshold=float(f"{threshold:.6g}"), comparison_operator=operator
        )
    return ModelQualityConstraints.model_validate({"problem_type": problem, "metrics": found})


def check_quality(
    constraints: ModelQualityConstraints, metrics: Mapping[str, float | None]
) -> list[MonitorViolation]:
    """One violation per breached threshold (a metric the window cannot compute is skipped)."""
    found = []
    for name, rule in constraints.metrics.items():
        value = metrics.get(name)
        if value is None or not rule.breached(value):
            continue
        found.append(
            MonitorViolation(
                constraint_check_type=rule.comparison_operator,
                metric_name=name,
                value=value,
                description=f"Metric {name} with {value:.4g} was {rule.comparison_operator} "
                f"'{rule.threshold:g}'.",
            )
        )
    return found


def labeled_frame(ids: Any, labels: pd.DataFrame) -> tuple[np.ndarray[Any, Any], pd.DataFrame]:
    """Positions of the window's records that have a label, and those labels' rows (in the
    same order): a hash join of the label ids with the window's ids (pyarrow, in C++)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    if labels.empty or len(ids) == 0:
        return np.asarray([], dtype=np.int64), labels.iloc[0:0]
    if not isinstance(ids, pa.Array | pa.ChunkedArray):
        ids = pa.array([str(i) for i in ids], pa.string())
    window = pa.table(
        {"inference_id": ids, "_position": pa.array(np.arange(len(ids), dtype=np.int64))}
    )
    label_ids = pa.array(labels["inference_id"], pa.string())  # zero-copy when Arrow-backed
    wanted = pa.table(
        {"inference_id": label_ids, "_row": pa.array(np.arange(len(labels), dtype=np.int64))}
    )
    joined = wanted.join(window, "inference_id", join_type="inner")
    rows = joined.column("_row").to_numpy()
    order = np.argsort(rows, kind="stable")
    positions = joined.column("_position").to_numpy()[order]
    return positions.astype(np.int64), labels.iloc[rows[order]].reset_index(drop=True)
