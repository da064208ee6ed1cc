"""Data quality (the drift engine with editable Model Monitor constraints), bias drift (checked
against the bias engine), attribution drift (checked against ``shap`` and NDCG computed here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shap

from civicml.core import FrozenClock, InvalidInputError, Principal
from civicml.evaluation.bias import posttraining_bias
from civicml.governance.audit import AuditTrail
from civicml.monitoring.constraints import check_constraints, compute_statistics, suggest_baseline
from civicml.monitoring.drift import drift_report
from civicml.monitors import ExecutionStatus, MonitorService
from civicml.monitors.attribution import ndcg
from civicml.oversight.approvals import ApprovalService
from civicml.serving import ModelHost
from civicml.store import Context
from civicml.training import TabularModel
from tests.monitors.helpers import ENDPOINT, deploy, inputs, labels_for, monitor
from tests.serving.helpers import MODEL, PROJECT, training_frame


def test_data_quality_is_the_drift_engine_with_the_monitors_constraints(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    created = monitor(ctx, host, "inputs", "data_quality", min_rows=30)
    assert created.config.columns == ["age", "income", "region"]
    assert created.constraints["features"][2]["domains"] == ["east", "north", "south", "west"]
    clock.advance(minutes=5)
    rows = inputs(60, income_scale=3.0, region="nowhere")
    host.invoke(PROJECT, ENDPOINT, rows)
    svc = MonitorService(ctx, host.capture)
    execution = svc.run(PROJECT, "inputs")

    reference = training_frame()[["age", "income", "region"]]
    current = pd.DataFrame(rows)
    expected = drift_report(reference, current, check_constraints=False, min_rows=30)
    stats, constraints = suggest_baseline(reference)
    violations = check_constraints(constraints, compute_statistics(current), baseline=stats)
    assert execution.status is ExecutionStatus.COMPLETED_WITH_VIOLATIONS
    assert [(v.feature_name, v.constraint_check_type) for v in execution.violations] == [
        (v.feature_name, v.constraint_check_type) for v in violations
    ]
    assert {"baseline_drift_check", "categorical_values_check"} <= {
        v.constraint_check_type for v in execution.violations
    }
    assert execution.metrics["share_drifted"] == expected.share_drifted
    assert execution.metrics["drift_score/income"] == expected.columns[1].drift_score
    assert [f.path for f in execution.files] == ["drift.html", "report.html", "report.json"]

    # Edited constraints: no drift comparison, every category allowed.
    edited = dict(created.constraints)
    edited["monitoring_config"] = {
        **edited["monitoring_config"],
        "distribution_constraints": {"perform_comparison": "Disabled"},
        "domain_content_threshold": 1.0,
    }
    changed = svc.set_constraints(PROJECT, "inputs", edited)
    assert changed.constraints_version == 2
    again = svc.run(PROJECT, "inputs")
    assert again.status is ExecutionStatus.COMPLETED and again.violations == []
    actions = [e.action for e in AuditTrail(ctx).list(project=PROJECT)]
    assert actions.count("monitor.executed") == 2 and "monitor.constraints_changed" in actions
    with pytest.raises(InvalidInputError, match="monitoring_config"):
        svc.set_constraints(PROJECT, "inputs", {"features": [], "monitoring_config": 3})


def _bias_frame(answer: dict[str, object], labels: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["label"] = labels["label"].to_numpy()
    frame["predicted"] = np.asarray(answer["predictions"])
    frame["sex"] = labels["sex"].to_numpy()
    return frame


def test_bias_drift_equals_the_bias_engine_and_judges_by_interval(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    checks = [
        {"metric": "DPPL", "facet": "sex", "max_abs": 0.0001},
        {"metric": "DI", "facet": "region", "value": "north", "min": 0.0, "max": 100.0},
    ]
    monitor(
        ctx,
        host,
        "fairness",
        "bias_drift",
        constraints={"checks": checks, "bootstrap": 0},
        positive_label=True,
    )
    clock.advance(minutes=5)
    rows = inputs(200)
    answer = host.invoke(PROJECT, ENDPOINT, rows)
    labels = labels_for(answer, flip=0.2)
    svc = MonitorService(ctx, host.capture)
    svc.upload_ground_truth(PROJECT, ENDPOINT, labels)  # 'sex' comes with the labels
    execution = svc.run(PROJECT, "fairness")

    frame = _bias_frame(answer, labels, rows)
    engine = posttraining_bias(
        frame,
        label="label",
        positive_label=True,
        facet="sex",
        predicted="predicted",
        metrics=["DPPL", "DI"],
    )
    for value in ("female", "male"):
        expected = engine.result("sex", value).metric("DPPL").value
        assert execution.metrics[f"DPPL sex={value}"] == pytest.approx(expected, abs=1e-12)
    by_region = posttraining_bias(
        frame,
        label="label",
        positive_label=True,
        facet="region",
        predicted="predicted",
        metrics=["DPPL", "DI"],
    )
    assert execution.metrics["DI region=north"] == pytest.approx(
        by_region.result("region", "north").metric("DI").value, abs=1e-12
    )
    assert "DI region=south" not in execution.metrics  # the check names one value
    # bootstrap 0: the interval is the value, so any DPPL off 0 breaks |x| <= 0.0001
    assert {(v.facet, v.facet_value) for v in execution.violations} == {
        ("sex", "female"),
        ("sex", "male"),
    }
    assert {v.constraint_check_type for v in execution.violations} == {"bias_drift_check"}

    # With a bootstrap the interval is wide on a small window: no violation of a loose range.
    svc.set_constraints(
        PROJECT,
        "fairness",
        {"checks": [{"metric": "DPPL", "facet": "sex", "max_abs": 0.5}], "bootstrap": 30},
    )
    loose = svc.run(PROJECT, "fairness")
    assert loose.status is ExecutionStatus.COMPLETED
    report = svc.open_file(PROJECT, "fairness", loose.id, "report.json").read().decode()
    assert '"interval"' in report and '"bootstrap": 30' in report


def test_bias_ranges_come_from_the_approval_policy(
    ctx: Context, project: str, host: ModelHost, model_dir: Path
) -> None:
    deploy(ctx, host, model_dir)
    with pytest.raises(InvalidInputError, match="no approval policy"):
        monitor(ctx, host, "fairness", "bias_drift")
    reviewer = ApprovalService(ctx.as_principal(Principal(user="reviewer")))
    reviewer.set_policy(
        PROJECT,
        MODEL,
        {
            "bias": [
                {"metric": "DI", "facet": "region", "min": 0.8, "max": 1.25},
                {"metric": "CI", "facet": "region", "max_abs": 0.5},
            ]
        },
    )
    created = monitor(ctx, host, "fairness", "bias_drift")
    assert created.constraints["source"] == "policy"
    assert [c["metric"] for c in created.constraints["checks"]] == ["DI"]  # CI: pre-training
    assert set(created.baseline.metrics) == {
        f"DI region={r}" for r in ("east", "north", "south", "west")
    }


def _independent_ndcg(model: TabularModel, baseline: pd.DataFrame, window: pd.DataFrame) -> float:
    """NDCG from shap.LinearExplainer on the model's own matrix, summed to raw columns here."""
    pre, estimator = model.pipeline[:-1], model.pipeline[-1]
    background = pre.transform(model.validate(baseline[model.feature_names]))
    explainer = shap.LinearExplainer(estimator, np.asarray(background, dtype=float))
    names = list(pre.get_feature_names_out())

    def mean_abs(frame: pd.DataFrame) -> dict[str, float]:
        values = explainer.shap_values(pre.transform(model.validate(frame[model.feature_names])))
        out: dict[str, float] = {}
        for raw in model.feature_names:  # one-hot dummies summed back to their column
            cols = [k for k, n in enumerate(names) if n.split("__")[-1].startswith(raw)]
            out[raw] = float(np.abs(values[:, cols].sum(axis=1)).mean())
        return out

    base, live = mean_abs(baseline), mean_abs(window)
    ideal = sorted(base, key=lambda f: -base[f])
    ranked = sorted(live, key=lambda f: -live[f])
    dcg = sum(base[f] / math.log2(i + 2) for i, f in enumerate(ranked))
    idcg = sum(base[f] / math.log2(i + 2) for i, f in enumerate(ideal))
    return dcg / idcg


def test_attribution_drift_ndcg_equals_an_independent_shap_computation(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    created = monitor(ctx, host, "attributions", "attribution_drift")
    assert created.constraints == {"version": 0, "ndcg_threshold": 0.9, "top_k": None}
    svc = MonitorService(ctx, host.capture)
    model = TabularModel.load(model_dir)
    baseline = training_frame()
    mean = float(baseline["income"].mean())
    for income, violated in ((None, False), (mean, True)):  # as trained; every income average
        clock.advance(hours=2)
        rows = inputs(80, seed=4, income=income)
        host.invoke(PROJECT, ENDPOINT, rows)
        execution = svc.run(PROJECT, "attributions")
        expected = _independent_ndcg(model, baseline, pd.DataFrame(rows))
        assert execution.metrics["ndcg"] == pytest.approx(expected, rel=1e-9)
        assert (expected < 0.9) is violated
        assert execution.status is (
            ExecutionStatus.COMPLETED_WITH_VIOLATIONS if violated else ExecutionStatus.COMPLETED
        )
        if violated:
            (violation,) = execution.violations
            assert violation.constraint_check_type == "feature_attribution_drift_check"
            assert violation.metric_name == "shap"


def test_ndcg_follows_model_monitors_definition() -> None:
    base = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert ndcg(base, {"a": 9, "b": 5, "c": 1}) == pytest.approx(1.0)
    swapped = ndcg(base, {"a": 0.1, "b": 0.3, "c": 0.2})  # ranking b, c, a
    idcg = 0.5 + 0.3 / math.log2(3) + 0.2 / 2
    dcg = 0.3 + 0.2 / math.log2(3) + 0.5 / 2
    assert swapped == pytest.approx(dcg / idcg)
    assert ndcg(base, {"a": 0.1, "b": 0.3, "c": 0.2}, top_k=1) == pytest.approx(0.3 / 0.5)
    assert ndcg({"a": 0.0}, {"a": 1.0}) is None
