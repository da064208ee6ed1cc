"""What one execution of each monitor type computes, on frames already read (no database).

Each ``check_*`` function takes the window (:class:`~civicml.monitors.window.CapturedWindow`),
the ground truth where the type needs it, the baseline and the constraints, and returns an
:class:`Outcome`: the status, the figures that form the monitor's time series, the violations,
and the details its report shows. The matching ``baseline_*`` functions compute what a baseline
dataset suggests (the figures and the constraints).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.monitoring.constraints import check_constraints, compute_statistics, suggest_baseline
from civicml.monitoring.drift import drift_report
from civicml.monitoring.schemas import BaselineConstraints, DatasetStatistics
from civicml.monitors.attribution import global_attributions, ndcg
from civicml.monitors.bias_drift import LABEL, PREDICTED, bias_values, judge_bias
from civicml.monitors.quality import (
    check_quality,
    labeled_frame,
    match_labels,
    quality_metrics,
    suggest_quality_constraints,
)
from civicml.monitors.schemas import (
    AttributionConstraints,
    BiasDriftConstraints,
    ExecutionStatus,
    ModelQualityConstraints,
    MonitorViolation,
)
from civicml.monitors.window import CapturedWindow

__all__ = [
    "Outcome",
    "baseline_attribution",
    "baseline_bias",
    "baseline_quality",
    "check_attribution",
    "check_bias",
    "check_data_quality",
    "check_quality_window",
    "problem_type",
]


@dataclass
class Outcome:
    """What an execution found."""

    status: ExecutionStatus
    records: int
    labeled: int | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    violations: list[MonitorViolation] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


def _judged(records: int, violations: list[MonitorViolation], **kwargs: Any) -> Outcome:
    status = ExecutionStatus.COMPLETED_WITH_VIOLATIONS if violations else ExecutionStatus.COMPLETED
    return Outcome(status, records, violations=violations, **kwargs)


def no_data(records: int, why: str, labeled: int | None = None) -> Outcome:
    """An execution with nothing (or too little) to judge."""
    return Outcome(ExecutionStatus.NO_DATA, records, labeled, note=why)


def problem_type(task: str, n_classes: int) -> str:
    """Model Monitor's problem type of a model."""
    if task == "regression":
        return "Regression"
    return "BinaryClassification" if n_classes == 2 else "MulticlassClassification"


# Data quality ----------------------------------------------------------------------------------
def check_data_quality(
    window: CapturedWindow,
    reference: pd.DataFrame,
    statistics: DatasetStatistics,
    constraints: BaselineConstraints,
    *,
    columns: list[str],
    drift_share: float,
    min_rows: int,
) -> Outcome:
    """The drift engine on the window's inputs vs the baseline, with the monitor's (editable)
    Model Monitor constraints checked against the baseline's statistics."""
    if window.rows == 0:
        return no_data(0, "No captured records in the window.")
    current = window.inputs
    shared = [c for c in columns if c in current.columns and c in reference.columns]
    report = drift_report(
        reference[shared],
        current[shared],
        columns=shared,
        check_constraints=False,
        drift_share=drift_share,
        min_rows=min_rows,
    )
    found = check_constraints(constraints, compute_statistics(current), baseline=statistics)
    if report.insufficient_data is not None:  # a distribution distance is a drift verdict
        found = [v for v in found if v.constraint_check_type != "baseline_drift_check"]
    report = report.model_copy(update={"violations": found})
    violations = [
        MonitorViolation(
            constraint_check_type=v.constraint_check_type,
            feature_name=v.feature_name,
            description=v.description,
        )
        for v in found
    ]
    metrics: dict[str, float | None] = {
        "violations": float(len(violations)),
        "share_drifted": report.share_drifted,
        "n_drifted": float(report.n_drifted),
    }
    for column in report.columns:
        metrics[f"drift_score/{column.column}"] = column.drift_score
    return _judged(
        window.rows,
        violations,
        metrics=metrics,
        details={"drift": report.model_dump(mode="json")},
        note=report.insufficient_data,
    )


# Model quality ---------------------------------------------------------------------------------
def _encode(
    window: CapturedWindow, labels: pd.DataFrame, classes: list[Any], problem: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], pd.DataFrame, int]:
    """Window positions with a usable label, their true and predicted values (class indices for
    a classifier), the label rows, and how many labels matched no class."""
    positions, rows = labeled_frame(window.ids, labels)
    predictions = np.asarray(window.predictions, dtype=object)[positions]
    if problem == "Regression":
        y_true = pd.to_numeric(rows["label"], errors="coerce").to_numpy(dtype=np.float64)
        y_pred = pd.to_numeric(pd.Series(predictions, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64
        )
        ok = np.isfinite(y_true) & np.isfinite(y_pred)
    else:
        y_true = match_labels(rows["label"].to_numpy(dtype=object), classes)
        y_pred = match_labels(predictions, classes)
        ok = (y_true >= 0) & (y_pred >= 0)
    unmatched = int((~ok).sum())
    return positions[ok], y_true[ok], y_pred[ok], rows[ok].reset_index(drop=True), unmatched


def baseline_quality(
    model: Any, reference: pd.DataFrame, tolerance: float
) -> tuple[str, dict[str, float | None], ModelQualityConstraints]:
    """Problem type, the model's metrics on the baseline data and the suggested constraints."""
    classes = list(getattr(model, "classes_", []) or [])
    problem = problem_type(model.task, len(classes))
    truth = reference[model.target]
    keep = truth.notna().to_numpy()
    frame = reference[keep]
    if problem == "Regression":
        metrics, _ = quality_metrics(
            problem,
            frame[model.target].to_numpy(dtype=np.float64),
            np.asarray(model.predict(frame), dtype=np.float64),
        )
    else:
        proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
        metrics, _ = quality_metrics(
            problem,
            match_labels(frame[model.target].tolist(), classes),
            proba.argmax(axis=1),
            proba,
            n_classes=len(classes),
            positive=1,
        )
    return problem, metrics, suggest_quality_constraints(problem, metrics, tolerance)


def positive_index(classes: list[Any], positive: Any) -> int:
    """The class index of the positive label (default the second class)."""
    if positive is None:
        return 1
    found = int(match_labels([positive], classes)[0])
    return found if found >= 0 else 1


def check_quality_window(
    window: CapturedWindow,
    labels: pd.DataFrame,
    constraints: ModelQualityConstraints,
    *,
    classes: list[Any],
    positive: Any,
    min_rows: int,
) -> Outcome:
    """Metrics of the window's labeled predictions against the thresholds."""
    if window.rows == 0:
        return no_data(0, "No captured records in the window.")
    problem = constraints.problem_type
    known = window.classes or classes
    positions, y_true, y_pred, _, unmatched = _encode(window, labels, known, problem)
    labeled = len(positions)
    if labeled < min_rows:
        return no_data(
            window.rows,
            f"Only {labeled} of {window.rows} captured records have ground truth (at least "
            f"{min_rows} needed); upload labels for their inference ids.",
            labeled,
        )
    proba = None
    if problem != "Regression" and window.probabilities is not None:
        proba = window.probabilities[positions]
    metrics, deviations = quality_metrics(
        problem,
        y_true,
        y_pred,
        proba,
        n_classes=len(known),
        positive=positive_index(known, positive),
    )
    violations = check_quality(constraints, metrics)
    return _judged(
        window.rows,
        violations,
        labeled=labeled,
        metrics={**metrics, "labeled": float(labeled)},
        details={
            "problem_type": problem,
            "standard_deviation": deviations,
            "unmatched_labels": unmatched,
            "constraints": constraints.model_dump(mode="json"),
        },
    )


# Bias drift ------------------------------------------------------------------------------------
def _bias_frame(
    window: CapturedWindow, labels: pd.DataFrame, classes: list[Any]
) -> tuple[pd.DataFrame, int]:
    positions, y_true, y_pred, rows, _ = _encode(window, labels, classes, "Classification")
    frame = window.inputs.iloc[positions].reset_index(drop=True)
    for column in rows.columns:
        if column not in ("inference_id", "label") and column not in frame.columns:
            frame[column] = rows[column].to_numpy()
    frame[LABEL] = y_true
    frame[PREDICTED] = y_pred
    return frame, len(positions)


def baseline_bias(
    model: Any, reference: pd.DataFrame, constraints: BiasDriftConstraints, positive: Any
) -> dict[str, float | None]:
    """The checked metrics of the model's predictions on the baseline data."""
    classes = list(model.classes_)
    frame = reference.copy()
    frame[LABEL] = match_labels(reference[model.target].tolist(), classes)
    frame[PREDICTED] = match_labels(list(model.predict(reference)), classes)
    frame = frame[frame[LABEL] >= 0]
    facets = list(dict.fromkeys(c.facet for c in constraints.checks if c.facet in frame))
    codes = sorted({c.metric for c in constraints.checks})
    found = bias_values(frame, facets, codes, positive_index(classes, positive))
    return {f"{code} {facet}={value}": v for (code, facet, value), v in found.items()}


def check_bias(
    window: CapturedWindow,
    labels: pd.DataFrame,
    constraints: BiasDriftConstraints,
    *,
    classes: list[Any],
    positive: Any,
    min_rows: int,
) -> Outcome:
    """The bias metrics of the window's labeled predictions against the allowed ranges."""
    if window.rows == 0:
        return no_data(0, "No captured records in the window.")
    known = window.classes or classes
    frame, labeled = _bias_frame(window, labels, known)
    if labeled < min_rows:
        return no_data(
            window.rows,
            f"Only {labeled} of {window.rows} captured records have ground truth (at least "
            f"{min_rows} needed); upload labels for their inference ids.",
            labeled,
        )
    findings, violations = judge_bias(frame, constraints, positive_index(known, positive))
    metrics: dict[str, float | None] = {f.key: f.value for f in findings}
    metrics["labeled"] = float(labeled)
    return _judged(
        window.rows,
        violations,
        labeled=labeled,
        metrics=metrics,
        details={
            "findings": [
                {
                    "metric": f.metric,
                    "facet": f.facet,
                    "facet_value": f.facet_value,
                    "value": f.value,
                    "interval": [f.low, f.high],
                    "allowed": f.allowed,
                    "violated": f.violated,
                }
                for f in findings
            ],
            "confidence": constraints.confidence,
            "bootstrap": constraints.bootstrap,
            "source": constraints.source,
        },
    )


# Attribution drift -----------------------------------------------------------------------------
def baseline_attribution(explainer: Any, reference: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Global attributions of the baseline rows, per output label."""
    return global_attributions(explainer, reference)


def check_attribution(
    window: CapturedWindow,
    explainer: Any,
    baseline: Mapping[str, Mapping[str, float]],
    constraints: AttributionConstraints,
    *,
    rows: int,
    min_rows: int,
) -> Outcome:
    """NDCG of the window's attribution ranking per output against the baseline's."""
    if window.rows < max(min_rows, 1):
        if window.rows == 0:
            return no_data(0, "No captured records in the window.")
        return no_data(
            window.rows, f"Only {window.rows} captured records (at least {min_rows} needed)."
        )
    sample = window.inputs
    if len(sample) > rows:
        sample = sample.sample(n=rows, random_state=0).sort_index()
    current = global_attributions(explainer, sample)
    metrics: dict[str, float | None] = {}
    violations: list[MonitorViolation] = []
    per_label: dict[str, Any] = {}
    for label, base in baseline.items():
        live = current.get(label, {})
        score = ndcg(base, live, constraints.top_k)
        metrics[f"ndcg/{label}" if len(baseline) > 1 else "ndcg"] = score
        per_label[label] = {"ndcg": score, "baseline": dict(base), "current": live}
        if score is not None and score < constraints.ndcg_threshold:
            violations.append(
                MonitorViolation(
                    constraint_check_type="feature_attribution_drift_check",
                    metric_name="shap",
                    label=label,
                    value=score,
                    description=f"Feature attribution drift for label {label}: NDCG {score:.4g} "
                    f"is below the threshold {constraints.ndcg_threshold:g}.",
                )
            )
    return _judged(
        window.rows,
        violations,
        metrics=metrics,
        details={"labels": per_label, "rows_explained": len(sample), "explainer": explainer.kind},
    )


def suggest_data_quality(reference: pd.DataFrame) -> tuple[DatasetStatistics, BaselineConstraints]:
    """Model Monitor's baselining job on the baseline's input columns."""
    return suggest_baseline(reference)
