"""Training rules (SageMaker Debugger's built-in ones): each fires on a crafted metric series and
stays quiet on a healthy one; a stop rule ends LightGBM's boosting early; results are recorded
on the run and read back (embedded and through the remote SDK); a fired rule fails a pipeline's
check; class imbalance on skewed data."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import civicml as cm
from civicml.core.errors import InvalidInputError
from civicml.pipelines import ExecutionStatus, StepStatus
from civicml.pipelines import steps as st
from civicml.training import fit_tabular
from civicml.training.rules import (
    ClassImbalance,
    Evidence,
    LossNotDecreasing,
    Overfit,
    Overtraining,
    RuleFiredError,
    RuleMonitor,
    parse_rule,
    parse_rules,
)


def _series(values: list[float], start: int = 1) -> list[tuple[int, float]]:
    return [(start + i, v) for i, v in enumerate(values)]


def _healthy(n: int = 40) -> tuple[list[float], list[float]]:
    """Both losses falling steadily, validation a little above training."""
    train = [1.0 * 0.95**i for i in range(n)]
    valid = [t * 1.05 for t in train]
    return train, valid


# -- each rule on crafted series -------------------------------------------------------------


def test_loss_not_decreasing_fires_on_a_plateau_and_on_a_rise_and_not_on_a_falling_loss() -> None:
    rule = LossNotDecreasing()
    flat = _series([1.0, 0.8, 0.7, 0.65, 0.62, 0.6, 0.6, 0.6, 0.6, 0.6] + [0.6] * 15)
    result = rule.evaluate(Evidence(metrics={"train_loss": flat}))
    assert result.status == "fired" and result.step == 21
    assert "diff_percent=0.1" in result.reason

    rising = _series([1.0 - 0.01 * i for i in range(10)] + [1.1])  # checked at step 11
    result = rule.evaluate(Evidence(metrics={"train_loss": rising}))
    assert result.status == "fired" and "increase_threshold_percent=5" in result.reason

    train, _ = _healthy()
    assert rule.evaluate(Evidence(metrics={"train_loss": _series(train)})).status == "ok"
    short = rule.evaluate(Evidence(metrics={"train_loss": _series(train[:5])}))
    assert short.status == "insufficient_data"


def test_overfit_fires_when_validation_runs_away_from_training_with_patience() -> None:
    train = [1.0 - 0.02 * i for i in range(20)]
    valid = [t * (1.05 if i < 10 else 1.3) for i, t in enumerate(train)]
    evidence = Evidence(metrics={"train_loss": _series(train), "val_loss": _series(valid)})
    fired = Overfit().evaluate(evidence)
    assert fired.status == "fired" and fired.step == 11
    assert fired.details["ratio"] == pytest.approx(0.3)
    assert Overfit(patience=3).evaluate(evidence).step == 13
    assert Overfit(start_step=15).evaluate(evidence).step == 15
    assert Overfit(ratio_threshold=0.5).evaluate(evidence).status == "ok"
    train, valid = _healthy()
    healthy = Evidence(metrics={"train_loss": _series(train), "val_loss": _series(valid)})
    assert Overfit().evaluate(healthy).status == "ok"
    assert Overfit().evaluate(Evidence()).status == "insufficient_data"


def test_overtraining_fires_when_validation_stalls_while_training_improves() -> None:
    train = [1.0 - 0.02 * i for i in range(30)]
    valid = [1.0 - 0.03 * i for i in range(8)] + [0.8 + 0.005 * i for i in range(22)]
    evidence = Evidence(metrics={"train_loss": _series(train), "val_loss": _series(valid)})
    fired = Overtraining().evaluate(evidence)
    assert fired.status == "fired"
    assert fired.step == 8 + 10  # best validation at step 8, patience_validation=10
    train, valid = _healthy()
    healthy = Evidence(metrics={"train_loss": _series(train), "val_loss": _series(valid)})
    assert Overtraining().evaluate(healthy).status == "ok"
    converged = Evidence(
        metrics={"train_loss": _series([0.5] * 30), "val_loss": _series([0.6] * 30)}
    )
    result = Overtraining().evaluate(converged)
    assert result.status == "ok" and "converged" in result.reason


def test_class_imbalance_counts_labels_and_mispredictions() -> None:
    skewed = ["no"] * 950 + ["yes"] * 50
    fired = ClassImbalance().evaluate(Evidence(labels=skewed))
    assert fired.status == "fired" and fired.details["ratio"] == pytest.approx(19.0)
    balanced = ["no"] * 600 + ["yes"] * 400
    assert ClassImbalance().evaluate(Evidence(labels=balanced)).status == "ok"
    confusion = {"labels": ["no", "yes"], "matrix": [[100, 0], [80, 20]]}
    missed = ClassImbalance().evaluate(Evidence(labels=balanced, confusion=confusion))  # type: ignore[typeddict-item]
    assert missed.status == "fired" and "'yes'" in missed.reason
    assert ClassImbalance().evaluate(Evidence(labels=skewed[:100])).status == "insufficient_data"
    assert ClassImbalance().evaluate(Evidence()).status == "insufficient_data"


def test_specs_parse_with_their_types_and_bad_ones_name_the_fix() -> None:
    rule = parse_rule("overfit:ratio_threshold=0.2,patience=3,on_fire=stop")
    assert rule == Overfit(ratio_threshold=0.2, patience=3, on_fire="stop")
    assert parse_rule(rule.spec()) == rule
    assert parse_rule({"rule": "overtraining", "delta": 0.1}) == Overtraining(delta=0.1)
    with pytest.raises(InvalidInputError, match="Unknown training rule 'overfitt'") as err:
        parse_rule("overfitt")
    assert err.value.hint == "Did you mean 'overfit'?"
    with pytest.raises(InvalidInputError, match=re.escape("no parameter 'ratio'")):
        parse_rule("overfit:ratio=0.2")
    with pytest.raises(InvalidInputError, match=re.escape("patience='many' is not a valid int")):
        parse_rule("overfit:patience=many")
    with pytest.raises(InvalidInputError, match="must be positive"):
        parse_rule("overfit:patience=0")
    with pytest.raises(InvalidInputError, match="given twice"):
        parse_rules(["overfit", "overfit:patience=2"])


# -- during training ---------------------------------------------------------------------------


def _frame(rows: int = 800, seed: int = 0, positive: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    z = rng.normal(size=rows)
    cut = np.quantile(x + rng.normal(size=rows), 1 - positive)
    return pd.DataFrame({"x": x, "z": z, "y": ((x + rng.normal(size=rows)) > cut).astype(int)})


def test_a_stop_rule_ends_lightgbm_boosting_early() -> None:
    frame = _frame()
    logged: list[tuple[int, dict[str, float]]] = []
    monitor = RuleMonitor(
        [Overfit(on_fire="stop")], log=lambda step, losses: logged.append((step, losses))
    )
    model = fit_tabular(frame, "y", callbacks=[monitor.lightgbm_callback()])
    rounds = model.pipeline.named_steps["model"].booster_.current_iteration()
    assert monitor.stopped is not None and monitor.stopped.rule == "overfit"
    assert rounds == monitor.stopped.step < 200  # the default n_estimators
    assert [step for step, _ in logged] == list(range(1, rounds + 1))
    assert set(logged[0][1]) == {"train_loss", "val_loss"}
    recording = RuleMonitor([Overfit()])
    full = fit_tabular(frame, "y", callbacks=[recording.lightgbm_callback()])
    assert full.pipeline.named_steps["model"].booster_.current_iteration() == 200
    assert recording.finish()[0].status == "fired"


def test_callbacks_are_for_lightgbm_only() -> None:
    with pytest.raises(InvalidInputError, match="LightGBM callbacks"):
        fit_tabular(_frame(), "y", algorithm="logistic", callbacks=[lambda env: None])


@pytest.fixture
def ml(tmp_path: Path) -> Iterator[Any]:
    client = cm.connect(home=tmp_path / "home", user="rita")
    yield client
    client.close()


def test_cm_train_records_rules_on_the_run_and_the_run_reads_them_back(ml: Any) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame())
    with proj.start_run(experiment="rules") as run:
        cm.train.tabular(
            raw,
            target="y",
            run=run,
            rules=[cm.rules.overfit(on_fire="stop"), cm.rules.class_imbalance()],
        )
    stored = proj.runs.get(run.id)
    assert stored.tags["civicml.rule.overfit"] == "fired"
    assert stored.tags["civicml.rule.class_imbalance"] == "ok"
    stopped_at = int(stored.tags["civicml.rules.stopped"].removeprefix("overfit at step "))
    assert len(run.metric_history("val_loss")) == stopped_at
    assert [m.step for m in run.metric_history("train_loss")] == list(range(1, stopped_at + 1))
    evaluation = json.loads(run.read_artifact("rules/evaluation.json"))
    assert evaluation["fired"] == ["overfit"]
    assert evaluation["stopped"]["step"] == stopped_at

    again = proj.runs.check_rules(run.id, ["overfit", "loss_not_decreasing:metric=val_loss"])
    assert [(r.rule, r.status) for r in again] == [
        ("overfit", "fired"),
        ("loss_not_decreasing", "ok"),  # val_loss still falling when overfit stopped boosting
    ]


def test_rules_after_the_fit_for_other_algorithms_and_on_runs_trained_without_rules(
    ml: Any,
) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame())
    with proj.start_run() as run:
        cm.train.tabular(raw, target="y", run=run, algorithm="random_forest", rules=["overfit"])
    stored = proj.runs.get(run.id)
    assert stored.tags["civicml.rule.overfit"] == "fired"  # a forest's train loss is tiny
    assert {"train_loss", "val_loss"} <= set(stored.metrics)
    with proj.start_run() as plain:
        cm.train.tabular(raw, target="y", run=plain, algorithm="logistic")
    results = {r.rule: r for r in proj.runs.check_rules(plain.id)}
    assert results["overfit"].status == "ok"  # final losses of the stored model, as step 0
    assert results["loss_not_decreasing"].status == "insufficient_data"
    assert proj.runs.get(plain.id).tags["civicml.rule.overfit"] == "ok"


def test_class_imbalance_on_skewed_data_records_or_stops(ml: Any) -> None:
    proj = ml.project("benefits")
    skewed = proj.datasets.ingest("skewed", _frame(rows=900, positive=0.05))
    with proj.start_run() as run:
        cm.train.tabular(
            skewed, target="y", run=run, algorithm="logistic", rules=["class_imbalance"]
        )
    assert proj.runs.get(run.id).tags["civicml.rule.class_imbalance"] == "fired"
    run = proj.start_run()
    with pytest.raises(RuleFiredError, match="threshold_imbalance=10"):
        cm.train.tabular(
            skewed, target="y", run=run, rules=[cm.rules.class_imbalance(on_fire="stop")]
        )
    stored = proj.runs.get(run.id)
    assert stored.status.value == "failed" and not run.list_artifacts("model")
    assert stored.tags["civicml.rule.class_imbalance"] == "fired"


def test_tuning_passes_rules_to_every_trial(ml: Any) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame(rows=400))
    result = cm.train.tune(
        raw,
        target="y",
        project=proj,
        space={"num_leaves": cm.train.tune.int(4, 16)},
        max_trials=2,
        rules=[cm.rules.overfit(on_fire="stop")],
    )
    for trial in result.trials:
        tags = proj.runs.get(trial.run_id).tags
        assert tags["civicml.rule.overfit"] == "fired" and "civicml.rules.stopped" in tags


# -- as a pipeline gate ------------------------------------------------------------------------


@cm.pipeline(name="rules-gate")
def gated(source: str = "", otherwise: str = "fail") -> None:
    data = st.ingest("applications", source)
    trained = st.train(data, "y", algorithm="random_forest")
    ok = st.check_rules(trained, ["overfit"], otherwise=otherwise)
    st.register("gated", st.when(trained, ok))


def test_a_fired_rule_fails_the_pipeline_or_skips_what_follows(ml: Any, tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    _frame(rows=300).to_csv(source, index=False)
    ml.create_project("benefits")
    failed = ml.pipelines.run(gated, project="benefits", params={"source": str(source)})
    assert failed.status is ExecutionStatus.FAILED
    assert failed.step("check_rules").status is StepStatus.FAILED
    assert "overfit" in (failed.step("check_rules").error or "")
    skipped = ml.pipelines.run(
        gated, project="benefits", params={"source": str(source), "otherwise": "skip"}
    )
    assert skipped.status is ExecutionStatus.SUCCEEDED
    assert skipped.step("register").status is StepStatus.SKIPPED
    gate_run = ml.project("benefits").runs.get(skipped.step("check_rules").run_id)
    assert gate_run.tags["civicml.rule.overfit"] == "fired"
