"""The two-class metrics civicml computes itself equal sklearn's, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from civicml.training._metrics import _binary_fast, classification_metrics


def _sklearn(y: Any, pred: Any, proba: Any, classes: list[Any]) -> tuple[dict[str, float], Any]:
    labels = np.asarray(classes)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0, beta=1.0, warn_for=(), average="binary",
        pos_label=classes[1],
    )  # fmt: skip
    expected = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "log_loss": float(skm.log_loss(y, proba, labels=labels)),
    }
    if len(set(np.asarray(y).tolist())) == 2:
        expected["roc_auc"] = float(skm.roc_auc_score(np.asarray(y) == classes[1], proba[:, 1]))
    return dict(sorted(expected.items())), skm.confusion_matrix(y, pred, labels=labels).tolist()


@pytest.mark.parametrize("labels", [(0, 1), ("no", "yes"), (False, True), (1.0, 2.0)])
def test_binary_metrics_equal_sklearns_exactly(labels: tuple[Any, Any]) -> None:
    rng = np.random.default_rng(7)
    names = np.array(labels, dtype=object if isinstance(labels[0], str) else None)
    for case in range(200):
        n = int(rng.integers(2, 500))
        truth = rng.integers(0, 2, n)
        p = rng.random(n)
        if case % 3 == 0:
            p = np.round(p, 1)  # ties in the scores
        if case % 5 == 0:
            p[:2] = [0.0, 1.0]  # clipped by log loss
        if case % 7 == 0:
            truth[:] = 1  # one class absent: no ROC AUC
        predicted = (p >= 0.5).astype(int) if case % 4 else np.zeros(n, dtype=int)
        proba = np.c_[1 - p, p]
        y, pred = names[truth], names[predicted]
        metrics, confusion = classification_metrics(y, pred, proba, list(labels))
        expected, matrix = _sklearn(y, pred, proba, list(labels))
        assert metrics == expected
        assert confusion["matrix"] == matrix


def test_unusual_inputs_are_left_to_sklearn() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert _binary_fast([0, 2], [0, 1], proba, [0, 1]) is None  # a label outside the classes
    assert _binary_fast([0, 1], [0, 1], proba.astype(np.float32), [0, 1]) is None
    assert _binary_fast([0, 1], [0, 1], proba[:, 1], [0, 1]) is None
    assert _binary_fast([0, 1, 2], [0, 1, 2], np.full((3, 3), 1 / 3), [0, 1, 2]) is None
