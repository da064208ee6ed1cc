"""cm.train.auto: a leaderboard of several algorithms as child runs, the time budget kept within
a margin, the chosen model registers and predicts, the choice explained (a simpler model within
one standard deviation wins), the report as JSON and HTML — embedded, and through the real
server on a loopback port."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import civicml as cm
from civicml.core.errors import InvalidInputError
from civicml.training.auto import budget_shares, candidate_order, choose, render_report

#: Slack over the budget for what no deadline can cut: the one fold running when time is up,
#: the final fit, and writing the runs (two shared CPUs in CI).
MARGIN_S = 6.0


def _frame(rows: int = 300, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    z = rng.normal(size=rows)
    region = rng.choice(["North", "South", "East"], rows)
    label = (x + 0.5 * z + 0.6 * rng.normal(size=rows)) > 0
    return pd.DataFrame({"x": x, "z": z, "region": region, "eligible": label})


@pytest.fixture
def ml(tmp_path: Path) -> Iterator[Any]:
    client = cm.connect(home=tmp_path / "home", user="ada")
    yield client
    client.close()


def test_automl_tries_the_algorithms_keeps_the_budget_and_the_winner_registers(ml: Any) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame())
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    result = cm.train.auto(
        raw,
        target="eligible",
        time_budget=8,
        project=proj,
        folds=3,
        register="eligibility-auto",
        progress=events.append,
    )
    elapsed = time.monotonic() - started
    assert elapsed <= 8 + MARGIN_S, elapsed
    board = result.leaderboard
    assert {row["algorithm"] for row in board} == {"logistic", "random_forest", "lightgbm"}
    ranked = [row for row in board if row["rank"] is not None]
    assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
    means = [row["cv_mean"] for row in ranked]
    assert means == sorted(means, reverse=True)  # roc_auc: higher is better
    assert all(len(row["folds"]) == 3 for row in ranked)
    assert {e["event"] for e in events} == {"algorithm", "candidate", "final"}

    children = proj.runs.search(f"tags.`automl.id` = '{result.automl_id}'")
    candidates = [r for r in children if r.tags.get("automl.role") == "candidate"]
    assert len(candidates) == len(board)
    for row in ranked:
        run = proj.runs.get(row["run_id"])
        assert run.metrics["cv_roc_auc_mean"] == pytest.approx(row["cv_mean"])
        assert run.tags["parent_run_id"] == result.automl_id

    assert result.winner["algorithm"] == result.model.algorithm
    assert result.model_version.run_id == result.run_id
    assert result.model.predict(_frame(5, seed=9)).shape == (5,)
    again = proj.models.register("eligibility-auto", result)  # as any cm.train model
    assert again.version == 2
    assert result.winner["algorithm"] in result.explanation

    parent = proj.runs.get(result.automl_id)
    assert parent.tags["automl.model_run_id"] == result.run_id
    document = json.loads(ml.backend.read_artifact(result.automl_id, "automl/leaderboard.json"))
    assert document["winner"]["candidate"] == result.winner["candidate"]
    assert document["explanation"] == result.explanation
    assert {a["algorithm"] for a in document["algorithms"]} == {
        "logistic",
        "random_forest",
        "lightgbm",
    }
    page = ml.backend.read_artifact(result.automl_id, "automl/report.html").decode()
    assert "<svg" in page and "<script" not in page and "style=" not in page
    assert "Candidate definitions" in page and f"#{result.winner['candidate']} " in page


def test_regression_with_chosen_algorithms(ml: Any) -> None:
    proj = ml.project("benefits")
    frame = _frame()
    frame["benefit"] = (
        100 * frame["x"] + 30 * frame["z"] + np.random.default_rng(1).normal(0, 5, len(frame))
    )
    raw = proj.datasets.ingest("benefits", frame.drop(columns=["eligible"]))
    result = cm.train.auto(
        raw, target="benefit", time_budget=5, project=proj, algorithms=["linear", "lightgbm"]
    )
    assert {row["algorithm"] for row in result.leaderboard} == {"linear", "lightgbm"}
    means = [row["cv_mean"] for row in result.leaderboard if row["rank"]]
    assert means == sorted(means)  # rmse: lower is better
    assert result.winner["algorithm"] == "linear"  # the target is linear in the inputs
    assert result.metrics["val_rmse"] < 20


def test_a_simpler_model_within_one_std_of_the_best_is_chosen_and_the_reason_says_so() -> None:
    rows = [
        _row(1, "lightgbm", 0.90, 0.02, 400_000),
        _row(2, "logistic", 0.89, 0.03, 3_000),
        _row(3, "random_forest", 0.80, 0.01, 900_000),
    ]
    choice = choose(rows, metric="cv_roc_auc", direction="maximize")
    assert choice.best["candidate"] == 1 and choice.winner["candidate"] == 2
    assert choice.simpler_within_std
    assert "within one standard deviation" in choice.explanation
    assert "simpler" in choice.explanation
    far = [_row(1, "lightgbm", 0.95, 0.01, 400_000), _row(2, "logistic", 0.89, 0.03, 3_000)]
    choice = choose(far, metric="cv_roc_auc", direction="maximize")
    assert choice.winner["candidate"] == 1 and not choice.simpler_within_std
    assert "no other candidate comes within one standard deviation" in choice.explanation
    low = [_row(1, "linear", 12.0, 1.0, 2_000), _row(2, "lightgbm", 10.0, 0.5, 300_000)]
    assert choose(low, metric="cv_rmse", direction="minimize").winner["candidate"] == 2
    with pytest.raises(InvalidInputError, match="No AutoML candidate finished"):
        choose([], metric="cv_rmse", direction="minimize")


def test_report_is_one_page_without_scripts_and_escapes_values() -> None:
    rows = [_row(1, "logistic", 0.9, 0.01, 3_000, params={"C": "<b>1</b>"})]
    choice = choose(rows, metric="cv_roc_auc", direction="maximize")
    page = render_report(
        {
            "dataset": "apps@v1",
            "target": "eligible",
            "task": "classification",
            "metric": "cv_roc_auc",
            "direction": "maximize",
            "folds": 5,
            "time_budget_s": 10,
            "elapsed_s": 9.5,
            "explanation": choice.explanation,
            "winner": choice.winner,
            "rows": [{**rows[0], "rank": 1}],
            "algorithms": [],
        }
    )
    assert page.startswith("<!doctype html>") and page.count("<svg") == 1
    assert "<b>1</b>" not in page and "&lt;b&gt;1&lt;/b&gt;" in page
    assert "<script" not in page


def test_bad_input_is_refused_with_a_hint(ml: Any) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _frame(60))
    with pytest.raises(InvalidInputError, match=re.escape("time_budget must be a positive")):
        cm.train.auto(raw, target="eligible", time_budget=0, project=proj)
    with pytest.raises(InvalidInputError, match="Algorithm 'linear' does not do classification"):
        cm.train.auto(raw, target="eligible", project=proj, algorithms=["linear"])
    with pytest.raises(InvalidInputError, match=r"exactly one of project= .* or run="):
        cm.train.auto(raw, target="eligible")
    with pytest.raises(InvalidInputError, match="Target column 'nope'"):
        cm.train.auto(raw, target="nope", project=proj)
    assert candidate_order("regression") == ["linear", "lightgbm", "random_forest"]
    assert budget_shares(20, ["linear"]) == (17.0, 3.0)


def test_the_leaderboard_reads_through_the_real_server(tmp_path: Path) -> None:
    from civicml.server.app import create_app
    from tests.server.helpers import API, isolated_settings, serve

    settings = isolated_settings(tmp_path)
    with serve(create_app(settings)) as url:
        with cm.connect(url, user="ada") as remote:
            proj = remote.project("benefits")
            raw = proj.datasets.ingest("applications", _frame(200))
            result = cm.train.auto(
                raw, target="eligible", time_budget=4, project=proj, algorithms=["logistic"]
            )
        with httpx.Client(base_url=url, headers={"x-civicml-user": "ada"}) as api:
            listed = api.get(f"{API}/runs/{result.automl_id}/artifacts")
            assert listed.status_code == 200, listed.text
            paths = {a["path"] for a in listed.json()}
            assert {"automl/leaderboard.json", "automl/report.html"} <= paths
            board = api.get(f"{API}/runs/{result.automl_id}/artifacts/automl/leaderboard.json")
            assert board.status_code == 200
            assert board.json()["winner"]["run_id"] == result.winner["run_id"]
            run = api.get(f"{API}/runs/{result.run_id}")
            assert run.json()["tags"]["automl.role"] == "model"


def _row(
    candidate: int,
    algorithm: str,
    mean: float,
    std: float,
    size: int,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "candidate": candidate,
        "algorithm": algorithm,
        "state": "complete",
        "cv_mean": mean,
        "cv_std": std,
        "folds": [mean],
        "fit_time_s": 0.01,
        "model_size_bytes": size,
        "interpretability": "",
        "params": params or {},
        "run_id": f"run-{candidate}",
    }
