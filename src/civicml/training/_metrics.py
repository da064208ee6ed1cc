"""Evaluation metrics on the validation set, computed with ``sklearn.metrics``.

Classification: ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc``, ``log_loss`` and a
confusion matrix. For two classes precision, recall and F1 are those of the *positive class*, the
larger label in sorted order (``1`` of ``0/1``, ``True`` of booleans, ``"yes"`` of
``"no"/"yes"``); ROC AUC scores the positive class's probability. For more classes they are macro
averages and ROC AUC is one-vs-rest, macro. Regression: ``rmse``, ``mae``, ``r2``.

Every metric is a plain ``float`` so it can be logged to a run as is. A metric that is undefined
on the validation set (ROC AUC when a class is absent from it) is left out rather than NaN.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
from sklearn import metrics as skm  # type: ignore[import-untyped]

__all__ = ["ConfusionMatrix", "classification_metrics", "regression_metrics"]


class ConfusionMatrix(TypedDict):
    """Counts of validation rows, ``matrix[i][j]``: true ``labels[i]`` predicted ``labels[j]``."""

    labels: list[Any]
    matrix: list[list[int]]


def classification_metrics(
    y_true: Any, y_pred: Any, proba: Any, classes: list[Any]
) -> tuple[dict[str, float], ConfusionMatrix]:
    """Metrics of predictions ``y_pred`` and class probabilities ``proba`` (columns = classes).

    Returns:
        The scalar metrics and the confusion matrix in ``classes`` order.
    """
    fast = _binary_fast(y_true, y_pred, proba, classes)
    if fast is not None:
        return fast
    labels = np.asarray(classes)
    binary = len(classes) == 2
    average_kwargs: dict[str, Any] = (
        {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    )
    # One pass for the three: precision_score, recall_score and f1_score each call this same
    # function (F1 is its beta=1 F-score) and keep one of its results.
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0, beta=1.0, warn_for=(), **average_kwargs
    )
    result = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)),
    }
    present = set(np.unique(np.asarray(y_true)).tolist())
    if present == set(labels.tolist()):
        if binary:
            truth = np.asarray(y_true) == classes[1]
            result["roc_auc"] = float(skm.roc_auc_score(truth, proba[:, 1]))
        else:
            result["roc_auc"] = float(
                skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
            )
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    confusion: ConfusionMatrix = {
        "labels": [_plain(label) for label in classes],
        "matrix": [[int(count) for count in row] for row in matrix],
    }
    return dict(sorted(result.items())), confusion


def _binary_fast(
    y_true: Any, y_pred: Any, proba: Any, classes: list[Any]
) -> tuple[dict[str, float], ConfusionMatrix] | None:
    """Two classes: the same figures as ``sklearn.metrics`` — bit for bit, with its arithmetic
    — from one confusion count, without its input validation, which costs several times the
    arithmetic on a validation set of a few hundred rows (a tuning trial pays it each time).
    None when the inputs are not the plain case (labels outside ``classes``, probabilities
    not one float64 column per class): then sklearn computes them."""
    if len(classes) != 2:
        return None
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    proba = np.asarray(proba)
    n = truth.shape[0]
    if (
        n == 0
        or truth.ndim != 1
        or predicted.shape != truth.shape
        or proba.dtype != np.float64
        or proba.shape != (n, 2)
    ):
        return None
    negative, positive = classes
    true_pos, pred_pos = truth == positive, predicted == positive
    if not isinstance(true_pos, np.ndarray) or not isinstance(pred_pos, np.ndarray):
        return None  # a comparison NumPy could not make elementwise
    if not (np.all(true_pos | (truth == negative)) and np.all(pred_pos | (predicted == negative))):
        return None
    tp = int(np.count_nonzero(true_pos & pred_pos))
    fp = int(np.count_nonzero(pred_pos)) - tp
    fn = int(np.count_nonzero(true_pos)) - tp
    tn = n - tp - fp - fn
    pred_sum, true_sum = tp + fp, tp + fn
    denom = float(true_sum) + float(pred_sum)
    # log_loss as sklearn computes it: clip, x * log(p) with 0 where x is 0, row sums, mean.
    eps = np.finfo(np.float64).eps
    onehot = np.stack([~true_pos, true_pos], axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = onehot * np.log(np.clip(proba, eps, 1 - eps))
    terms = np.where(onehot == 0.0, 0.0, terms)
    result = {
        "accuracy": float(np.average(truth == predicted)),
        "precision": tp / pred_sum if pred_sum else 0.0,
        "recall": tp / true_sum if true_sum else 0.0,
        "f1": 2.0 * tp / denom if denom else 0.0,
        "log_loss": float(np.average(-np.sum(terms, axis=1))),
    }
    if 0 < true_sum < n:  # both classes present: ROC AUC is defined
        result["roc_auc"] = float(skm.roc_auc_score(true_pos, proba[:, 1]))
    confusion: ConfusionMatrix = {
        "labels": [_plain(label) for label in classes],
        "matrix": [[tn, fp], [fn, tp]],
    }
    return dict(sorted(result.items())), confusion


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """RMSE, MAE and R² of predictions ``y_pred``."""
    return {
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
    }


def _plain(value: Any) -> Any:
    """A JSON-ready Python scalar from a NumPy scalar."""
    return value.item() if isinstance(value, np.generic) else value
