"""cm.train.tune: strategies, child runs, grid coverage, pruning, time budget, warm start,
registration and permissions, on the embedded platform with tiny data and few trials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

import civicml as cm
from civicml.core import InvalidInputError
from civicml.core.errors import PermissionDeniedError
from civicml.core.identity import Principal
from civicml.sdk.client import Client
from civicml.sdk.embedded import EmbeddedBackend
from civicml.training.tune import categorical, float_range, int_range, run_study

FAST = {"n_estimators": 20}
SEED_PICKING_THE_BAD_RATE = 0


def _frame(rows: int = 240, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    z = rng.normal(size=rows)
    return pd.DataFrame({"x": x, "z": z, "y": ((x + 0.4 * rng.normal(size=rows)) > 0).astype(int)})


@pytest.fixture
def ml(tmp_path: Path):  # type: ignore[no-untyped-def]
    client = cm.connect(home=tmp_path / "home", user="tuner")
    yield client
    client.close()


@pytest.fixture
def proj(ml):  # type: ignore[no-untyped-def]
    return ml.project("benefits")


@pytest.fixture
def raw(proj):  # type: ignore[no-untyped-def]
    return proj.datasets.ingest("applications", _frame())


def _children(proj: Any, tuning_id: str) -> list[Any]:
    runs = proj.runs.search(f"tags.`tuning.id` = '{tuning_id}'")
    return [r for r in runs if r.tags.get("tuning.role") == "trial"]


@pytest.mark.parametrize("strategy", ["random", "tpe", "hyperband"])
def test_each_strategy_records_child_runs(proj, raw, strategy: str) -> None:  # type: ignore[no-untyped-def]
    result = cm.train.tune(
        raw,
        target="y",
        project=proj,
        experiment="tune",
        space={
            "num_leaves": cm.train.tune.int(4, 16),
            "learning_rate": cm.train.tune.float(0.01, 0.3, log=True),
        },
        params=FAST,
        strategy=strategy,
        max_trials=4,
    )
    assert result.metric == "val_roc_auc" and result.direction == "maximize"
    children = _children(proj, result.tuning_id)
    assert len(children) == 4 == len(result.trials)
    for child in children:
        assert child.experiment == "tune"
        assert child.tags["parent_run_id"] == result.tuning_id
        assert {"tuning.trial", "tuning.state"} <= set(child.tags)
    best = proj.runs.get(result.best_run_id)
    assert best.metrics["val_roc_auc"] == pytest.approx(result.best_value)
    assert best.params["model.num_leaves"] == str(result.best_params["num_leaves"])
    parent = proj.runs.get(result.tuning_id)
    assert parent.status.value == "finished"
    assert parent.metrics["best_val_roc_auc"] == pytest.approx(result.best_value)
    assert parent.params["best.num_leaves"] == str(result.best_params["num_leaves"])
    board = json.loads(proj._backend.read_artifact(result.tuning_id, "tuning/leaderboard.json"))
    assert [r["trial"] for r in board["rows"]] == [r["trial"] for r in result.leaderboard]
    assert result.leaderboard[0]["value"] == pytest.approx(result.best_value)


def test_grid_covers_its_grid_and_threads_share_the_store(proj, raw) -> None:  # type: ignore[no-untyped-def]
    result = cm.train.tune(
        raw,
        target="y",
        project=proj,
        algorithm="logistic",
        space={
            "C": cm.train.tune.categorical([0.01, 0.1, 1.0]),
            "fit_intercept": categorical([True, False]),
        },
        strategy="grid",
        max_trials=50,
        max_parallel=2,
    )
    seen = {(t.params["C"], t.params["fit_intercept"]) for t in result.trials}
    assert seen == {(c, f) for c in (0.01, 0.1, 1.0) for f in (True, False)}
    assert result.stopped == "grid_exhausted"
    assert len(_children(proj, result.tuning_id)) == 6


def test_grid_refuses_a_continuous_range(proj, raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match="a grid needs finite values"):
        cm.train.tune(
            raw,
            target="y",
            project=proj,
            algorithm="logistic",
            space={"C": float_range(0.01, 1.0, log=True)},
            strategy="grid",
        )


def test_median_stopping_prunes_lightgbm_trials_that_are_clearly_worse(proj, raw) -> None:  # type: ignore[no-untyped-def]
    # Three good learning rates first (the median's start-up trials), then hopeless ones.
    good = [{"learning_rate": 0.3}, {"learning_rate": 0.2}, {"learning_rate": 0.25}]
    result = run_study(
        lambda ctx: _curve(ctx, proj, raw),
        space={"learning_rate": float_range(1e-6, 0.3, log=True)},
        tuning_id="t",
        metric="val_log_loss",
        direction="minimize",
        strategy="random",
        max_trials=6,
        early_stopping="median",
        warm_start=[*good, {"learning_rate": 1e-6}, {"learning_rate": 2e-6}],
    )
    states = [t.state for t in result.trials]
    assert states[:3] == ["complete"] * 3
    assert "pruned" in states[3:5]
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert all(t.last_step is not None and t.last_step < FAST["n_estimators"] for t in pruned)


def _curve(ctx: Any, proj: Any, raw: Any) -> float:
    from civicml.training.tune import lightgbm_curve

    return lightgbm_curve(
        proj.datasets.to_pandas(raw),
        "y",
        metric="val_log_loss",
        report=ctx.report,
        params={**FAST, **ctx.params},
        every=2,
    )


def test_median_stopping_through_the_sdk_ends_pruned_runs_killed(proj, raw) -> None:  # type: ignore[no-untyped-def]
    rates = cm.train.tune.categorical([0.3, 0.2, 0.25, 1e-6])
    first = cm.train.tune(
        raw,
        target="y",
        project=proj,
        metric="val_log_loss",
        params=FAST,
        space={"learning_rate": rates},
        strategy="grid",
    )
    assert first.direction == "minimize"
    # the three good rates run first (warm start), then the median rule judges the others
    later = cm.train.tune(
        raw,
        target="y",
        project=proj,
        metric="val_log_loss",
        params=FAST,
        space={"learning_rate": rates},
        strategy="random",
        seed=SEED_PICKING_THE_BAD_RATE,
        early_stopping="median",
        max_trials=5,
        warm_start=first.tuning_id,
    )
    assert [t.params["learning_rate"] for t in later.trials[:3]] == [0.2, 0.25, 0.3]
    assert "pruned" in [t.state for t in later.trials[3:]]
    runs = {r.id: r for r in _children(proj, later.tuning_id)}
    for trial in later.trials:
        run = runs[trial.run_id]
        if trial.state == "pruned":
            assert run.status.value == "killed" and run.tags["tuning.state"] == "pruned"
        else:
            assert run.status.value == "finished"


def test_pruner_wiring_with_a_deterministic_objective() -> None:
    def objective(ctx: Any) -> float:
        for step in range(1, 6):
            ctx.report(step, ctx.params["level"] * step)
        return float(ctx.params["level"] * 5)

    result = run_study(
        objective,
        space={"level": int_range(0, 10)},
        tuning_id="fake",
        metric="val_accuracy",
        direction="maximize",
        strategy="random",
        max_trials=5,
        early_stopping="median",
        warm_start=[{"level": 9}, {"level": 8}, {"level": 10}, {"level": 0}, {"level": 1}],
    )
    states = {t.params["level"]: t.state for t in result.trials}
    assert states == {9: "complete", 8: "complete", 10: "complete", 0: "pruned", 1: "pruned"}
    assert result.best_params == {"level": 10}


def test_time_budget_stops_early() -> None:
    import time

    def objective(ctx: Any) -> float:
        time.sleep(0.05)
        return float(ctx.params["x"])

    result = run_study(
        objective,
        space={"x": float_range(0, 1)},
        tuning_id="budget",
        metric="val_accuracy",
        direction="maximize",
        strategy="random",
        max_trials=1000,
        time_budget_s=0.3,
    )
    assert 1 <= len(result.trials) < 1000
    assert result.stopped == "time_budget"


def test_warm_start_evaluates_the_earlier_best_first(proj, raw) -> None:  # type: ignore[no-untyped-def]
    space = {"C": cm.train.tune.float(0.001, 10.0, log=True)}
    first = cm.train.tune(
        raw,
        target="y",
        project=proj,
        algorithm="logistic",
        space=space,
        strategy="random",
        max_trials=4,
        seed=3,
    )
    second = cm.train.tune(
        raw,
        target="y",
        project=proj,
        algorithm="logistic",
        space=space,
        strategy="tpe",
        max_trials=4,
        seed=3,
        warm_start=first.tuning_id,
    )
    assert second.trials[0].params == first.best_params
    assert second.trials[0].value == pytest.approx(first.best_value)
    ranked = [r["C"] for r in first.leaderboard[:3]]
    assert [t.params["C"] for t in second.trials[:3]] == ranked
    assert proj.runs.get(second.tuning_id).tags["tuning.warm_start"] == first.tuning_id
    with pytest.raises(InvalidInputError, match="is not a finished tuning"):
        cm.train.tune(raw, target="y", project=proj, space=space, warm_start="0" * 32)


def test_register_registers_the_best_trial(proj, raw) -> None:  # type: ignore[no-untyped-def]
    result = cm.train.tune(
        raw,
        target="y",
        project=proj,
        algorithm="logistic",
        space={"C": cm.train.tune.categorical([0.001, 1.0])},
        strategy="grid",
        register="eligibility",
    )
    mv = result.model_version
    assert mv is not None and mv.run_id == result.best_run_id
    assert proj.models.version("eligibility", mv.version).run_id == result.best_run_id


def test_a_viewer_cannot_tune(ml, proj, raw) -> None:  # type: ignore[no-untyped-def]
    viewer = Principal(user="vera", roles=frozenset({"viewer"}))
    with Client(EmbeddedBackend(ml.backend.settings, viewer)) as vera:
        seen = vera.project("benefits")
        dv = seen.datasets.version("applications")
        with pytest.raises(PermissionDeniedError):
            cm.train.tune(
                dv, target="y", project=seen, space={"num_leaves": int_range(4, 8)}, max_trials=1
            )
    assert not [r for r in proj.runs.list() if r.created_by == "vera"]


def test_bad_input_is_refused_with_a_hint(proj, raw) -> None:  # type: ignore[no-untyped-def]
    space = {"num_leaves": int_range(4, 8)}
    with pytest.raises(InvalidInputError, match="Unknown tuning metric 'val_auc'"):
        cm.train.tune(raw, target="y", project=proj, space=space, metric="val_auc")
    with pytest.raises(InvalidInputError, match="Unknown tuning strategy 'bayes'"):
        cm.train.tune(raw, target="y", project=proj, space=space, strategy="bayes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="exactly one of project="):
        cm.train.tune(raw, target="y", space=space)
    with pytest.raises(InvalidInputError, match="hyperband"):
        cm.train.tune(
            raw,
            target="y",
            project=proj,
            space=space,
            strategy="hyperband",
            early_stopping="median",
        )
    with pytest.raises(InvalidInputError, match="Invalid integer range"):
        int_range(8, 4)


def test_optuna_storage_stays_in_memory(proj, raw, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cm.train.tune(
        raw,
        target="y",
        project=proj,
        algorithm="logistic",
        space={"C": categorical([1.0])},
        strategy="grid",
    )
    assert not [p for p in tmp_path.rglob("*") if "optuna" in p.name.lower()]
    assert optuna.__version__


@pytest.mark.parametrize("keep", ["improving", "all"])
def test_model_files_are_kept_for_improving_trials_or_all(proj, raw, keep: str) -> None:  # type: ignore[no-untyped-def]
    result = cm.train.tune(
        raw,
        target="y",
        project=proj,
        algorithm="logistic",
        space={"C": cm.train.tune.categorical([0.001, 0.01, 0.1, 1.0, 10.0])},
        strategy="grid",
        keep_models=keep,
        register="eligibility",
    )
    value = {t.number: t.value for t in result.trials}
    kept = {}
    for child in _children(proj, result.tuning_id):
        files = {a.path for a in proj._backend.list_artifacts(child.id)}
        trial = int(child.tags["tuning.trial"])
        kept[trial] = any(p.startswith("model/") for p in files)
        assert child.tags["tuning.model_files"] == str(kept[trial]).lower()
        assert "val_roc_auc" in child.metrics  # every trial records its metrics either way
    if keep == "all":
        assert all(kept.values())
    else:
        # Kept exactly when at least as good as every trial finished before it (one at a time).
        expected = {n: all(value[n] >= value[m] for m in value if m < n) for n in value}
        assert kept == expected
        assert not all(kept.values()), value  # the data makes some trials worse than earlier ones
    assert kept[result.best_trial]  # the best always has its files: it registers
    mv = result.model_version
    assert mv is not None and mv.run_id == result.best_run_id
