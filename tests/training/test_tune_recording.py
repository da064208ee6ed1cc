"""cm.train.tune records each trial while the next one trains: when it returns every trial run
is recorded and ended, with its usage and lineage; a store that fails while recording fails the
tuning and leaves no trial run running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import civicml as cm
from civicml.sdk import train as sdk_train


def _frame(rows: int = 240, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    return pd.DataFrame({"x": x, "z": rng.normal(size=rows), "y": (x > 0).astype(int)})


@pytest.fixture
def ml(tmp_path: Path):  # type: ignore[no-untyped-def]
    client = cm.connect(home=tmp_path / "home", user="tuner")
    yield client
    client.close()


def _trials(proj: Any, tuning_id: str) -> list[Any]:
    runs = proj.runs.search(f"tags.`tuning.id` = '{tuning_id}'")
    return [r for r in runs if r.tags.get("tuning.role") == "trial"]


def test_every_trial_is_recorded_and_ended_when_tune_returns(ml) -> None:  # type: ignore[no-untyped-def]
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame())
    result = cm.train.tune(
        raw,
        target="y",
        project=proj,
        space={"num_leaves": cm.train.tune.int(4, 16)},
        params={"n_estimators": 10},
        max_trials=5,
        keep_models="all",
    )

    trials = _trials(proj, result.tuning_id)
    assert sorted(int(r.tags["tuning.trial"]) for r in trials) == list(range(5))
    for run in trials:
        assert run.status.value == "finished"
        assert run.tags["tuning.state"] == "complete"
        assert run.tags["tuning.model_files"] == "true"
        assert run.params["dataset"] == "applications@v1"
        assert run.metrics["val_roc_auc"] == pytest.approx(
            next(t.value for t in result.trials if t.run_id == run.id)
        )
        files = {a.path for a in proj._backend.list_artifacts(run.id)}
        assert {"model/model.skops", "model/civicml-model.json"} <= files
        upstream = ml.lineage("run", run.id, direction="upstream")
        assert any(n.kind == "dataset_version" and n.ref == raw.id for n in upstream.nodes)
    usage = {line.id: line for line in ml.costs.report(proj.name, by="run").lines}
    assert all(usage[r.id].cpu_s > 0 for r in trials)  # each trial's training, measured


def test_a_store_failing_while_recording_fails_the_tuning(  # type: ignore[no-untyped-def]
    ml, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame())

    def full(run: Any, model: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(sdk_train, "log_model_files", full)

    with pytest.raises(OSError, match="No space left"):
        cm.train.tune(
            raw,
            target="y",
            project=proj,
            space={"num_leaves": cm.train.tune.int(4, 16)},
            params={"n_estimators": 10},
            max_trials=4,
            keep_models="all",
        )

    runs = proj.runs.search("tags.`tuning.role` = 'parent'")
    assert [r.status.value for r in runs] == ["failed"]
    trials = _trials(proj, runs[0].id)
    assert trials and all(r.status.value != "running" for r in trials)
    assert any(r.status.value == "failed" for r in trials)
