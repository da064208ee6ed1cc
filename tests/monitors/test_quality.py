"""Model quality with delayed ground truth: labels joined by inference id, metrics checked
against scikit-learn computed here, thresholds, text labels, regression, no data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from civicml.core import FrozenClock, InvalidInputError
from civicml.data import DatasetService
from civicml.monitors import ExecutionStatus, MonitorService
from civicml.monitors.quality import label_key, match_labels
from civicml.serving import EndpointService, ModelHost
from civicml.store import Context
from civicml.training import fit_tabular
from tests.monitors.helpers import ENDPOINT, deploy, inputs, labels_for, monitor
from tests.serving.helpers import PROJECT, register, training_frame


def test_model_quality_metrics_equal_scikit_learns(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    created = monitor(ctx, host, "quality", "model_quality")
    suggested = created.constraints["metrics"]
    assert created.constraints["problem_type"] == "BinaryClassification"
    assert set(suggested) == {"accuracy", "precision", "recall", "f1", "auc"}
    base = created.baseline.metrics
    assert suggested["accuracy"] == {
        "threshold": pytest.approx(base["accuracy"] * 0.8, rel=1e-5),
        "comparison_operator": "LessThanThreshold",
    }
    clock.advance(minutes=5)
    answer = host.invoke(PROJECT, ENDPOINT, inputs(120))
    labels = labels_for(answer, flip=0.35)
    labels = labels.iloc[:100]  # 20 predictions get no label (yet)
    clock.advance(minutes=10)  # labels come later
    svc = MonitorService(ctx, host.capture)
    upload = svc.upload_ground_truth(PROJECT, ENDPOINT, labels)
    assert (upload.rows, upload.columns) == (100, ["inference_id", "label", "sex"])
    execution = svc.run(PROJECT, "quality")

    y_true = labels["label"].to_numpy()
    y_pred = np.asarray(answer["predictions"][:100])
    score = np.asarray(answer["probabilities"])[:100, 1]
    expected = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred),
        "recall": recall_score(y_true, y_pred),
        "f1": f1_score(y_true, y_pred),
        "auc": roc_auc_score(y_true, score),
    }
    assert (execution.records, execution.labeled) == (120, 100)
    for name, value in expected.items():
        assert execution.metrics[name] == pytest.approx(value, abs=1e-12), name
    breached = {n for n, v in expected.items() if v < suggested[n]["threshold"]}
    assert breached, "the flipped labels should break some thresholds"
    assert {v.metric_name for v in execution.violations} == breached
    assert {v.constraint_check_type for v in execution.violations} == {"LessThanThreshold"}
    assert execution.status is ExecutionStatus.COMPLETED_WITH_VIOLATIONS
    report = svc.open_file(PROJECT, "quality", execution.id, "report.json").read()
    assert b'"standard_deviation"' in report and b'"unmatched_labels": 0' in report


def test_labels_match_by_text_and_too_few_are_no_data(
    ctx: Context,
    project: str,
    host: ModelHost,
    model_dir: Path,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "quality", "model_quality", min_rows=30)
    svc = MonitorService(ctx, host.capture)
    clock.advance(minutes=5)
    answer = host.invoke(PROJECT, ENDPOINT, inputs(40))
    few = labels_for(answer).iloc[:10]
    csv = tmp_path / "truth.csv"
    few.assign(label=few["label"].map({True: "TRUE", False: "false"})).rename(
        columns={"inference_id": "id", "label": "outcome"}
    ).to_csv(csv, index=False)
    svc.upload_ground_truth(PROJECT, ENDPOINT, csv, inference_id="id", label="outcome")
    thin = svc.run(PROJECT, "quality")
    assert thin.status is ExecutionStatus.NO_DATA
    assert (thin.records, thin.labeled) == (40, 10)
    assert "Only 10 of 40" in (thin.error or "")

    rest = labels_for(answer).iloc[10:]
    svc.upload_ground_truth(
        PROJECT,
        ENDPOINT,
        [
            {"inference_id": i, "label": int(v)}
            for i, v in zip(rest.inference_id, rest.label, strict=True)
        ],
    )
    full = svc.run(PROJECT, "quality")
    assert full.labeled == 40  # "TRUE"/"false" and 1/0 all met the classes True/False
    truth = labels_for(answer)["label"].to_numpy()
    assert full.metrics["accuracy"] == pytest.approx(
        accuracy_score(truth, np.asarray(answer["predictions"]))
    )


def test_regression_quality_equals_scikit_learns(
    ctx: Context, project: str, host: ModelHost, tmp_path: Path, clock: FrozenClock
) -> None:
    data = training_frame(200).drop(columns="eligible")
    fitted = fit_tabular(data, "income", algorithm="linear", seed=0)
    fitted.save(tmp_path / "reg")
    register(ctx, tmp_path / "reg")
    DatasetService(ctx).ingest(PROJECT, "incomes", data, progress=False)
    EndpointService(ctx, host).deploy(PROJECT, ENDPOINT, "eligibility", 1, capture_percent=100)
    created = monitor(ctx, host, "errors", "model_quality", baseline_dataset="incomes")
    assert created.constraints["problem_type"] == "Regression"
    assert created.constraints["metrics"]["rmse"]["comparison_operator"] == "GreaterThanThreshold"
    clock.advance(minutes=1)
    rows = [{"age": r["age"], "region": r["region"]} for r in inputs(50)]
    answer = host.invoke(PROJECT, ENDPOINT, rows)
    truth = np.random.default_rng(1).normal(1500, 500, 50)
    svc = MonitorService(ctx, host.capture)
    svc.upload_ground_truth(
        PROJECT, ENDPOINT, pd.DataFrame({"inference_id": answer["inference_ids"], "label": truth})
    )
    execution = svc.run(PROJECT, "errors")
    predicted = np.asarray(answer["predictions"], dtype=float)
    assert execution.metrics["rmse"] == pytest.approx(
        np.sqrt(mean_squared_error(truth, predicted)), rel=1e-12
    )
    assert execution.metrics["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert execution.metrics["r2"] == pytest.approx(r2_score(truth, predicted))


def test_bad_ground_truth_is_refused_with_a_hint(
    ctx: Context, project: str, host: ModelHost, model_dir: Path
) -> None:
    deploy(ctx, host, model_dir)
    svc = MonitorService(ctx, host.capture)
    cases = [
        (pd.DataFrame({"id": ["a"], "label": [1]}), "no inference id column 'inference_id'"),
        (pd.DataFrame({"inference_id": ["a"], "label": [None]}), "have no label"),
        (pd.DataFrame({"inference_id": [None], "label": [1]}), "have no inference id"),
        (pd.DataFrame({"inference_id": ["x" * 65], "label": [1]}), "longer than 64"),
        (pd.DataFrame({"inference_id": [], "label": []}), "has no rows"),
    ]
    for frame, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            svc.upload_ground_truth(PROJECT, ENDPOINT, frame)


def test_label_keys_meet_classes_by_text() -> None:
    assert [label_key(v) for v in (True, "TRUE ", 1, 1.0, "1.0", "north", None)] == [
        "true",
        "true",
        "1",
        "1",
        "1",
        "north",
        None,
    ]
    assert match_labels([True, "false", "1", "0", "maybe"], [False, True]).tolist() == [
        1,
        0,
        1,
        0,
        -1,
    ]
    assert match_labels(["2", 3.0, "a"], [1, 2, 3]).tolist() == [1, 2, -1]


def test_the_metrics_engine_equals_scikit_learn_with_ties_and_many_classes() -> None:
    from civicml.monitors.quality import classification_metrics, quality_metrics

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 2000)
    y_pred = np.where(rng.random(2000) < 0.7, y_true, rng.integers(0, 3, 2000))
    raw = rng.random((2000, 3)).round(1)  # coarse scores: many ties
    proba = raw / raw.sum(axis=1, keepdims=True)
    found = classification_metrics(y_true, y_pred, proba, 3)
    assert found["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    for name, fn in (
        ("weighted_precision", precision_score),
        ("weighted_recall", recall_score),
        ("weighted_f1", f1_score),
    ):
        assert found[name] == pytest.approx(fn(y_true, y_pred, average="weighted"), abs=1e-12)
    assert found["auc"] == pytest.approx(
        roc_auc_score(y_true, proba, multi_class="ovr", average="weighted"), abs=1e-12
    )
    binary_true, binary_pred = y_true == 1, y_pred == 1
    tied = np.column_stack([1 - raw[:, 0], raw[:, 0]])
    metrics, deviations = quality_metrics(
        "BinaryClassification",
        binary_true.astype(int),
        binary_pred.astype(int),
        tied,
        n_classes=2,
        positive=1,
    )
    assert metrics["auc"] == pytest.approx(roc_auc_score(binary_true, raw[:, 0]), abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(binary_true, binary_pred), abs=1e-12)
    assert all(v is not None and v > 0 for v in deviations.values())  # 2,000 rows: resampled
