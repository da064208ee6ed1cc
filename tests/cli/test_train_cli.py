"""``civicml train auto`` and ``civicml runs rules``: AutoML and training rules from the command
line; bad input is exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import civicml as cm
from tests.cli.training import PROJECT, cli, home_with_applications


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return home_with_applications(tmp_path)


def test_train_auto_prints_the_leaderboard_and_registers(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        home, capsys,
        "train", "auto", "applications", "--target", "eligible", "--time-budget", "5",
        "-p", PROJECT, "-a", "logistic", "-a", "lightgbm", "--folds", "3",
        "--register", "eligibility", "--json",
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)
    assert {row["algorithm"] for row in found["leaderboard"]} == {"logistic", "lightgbm"}
    assert found["model_version"] == 1 and found["explanation"]
    code, out, err = cli(
        home, capsys,
        "train", "auto", "applications", "-t", "eligible", "--time-budget", "3",
        "-p", PROJECT, "-a", "logistic",
    )  # fmt: skip
    assert code == 0, err
    assert "AutoML" in out and "logistic" in out and "chosen" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time-budget", "0"], "Error: time_budget must be a positive number of seconds"),
        (["-a", "linear"], "Error: Algorithm 'linear' does not do classification."),
        (["--folds", "1"], "Error: folds must be at least 2, not 1."),
    ],
)
def test_train_auto_bad_input_is_exit_2_with_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _out, err = cli(
        home, capsys, "train", "auto", "applications", "-t", "eligible", "-p", PROJECT, *args
    )
    assert code == 2
    assert err.splitlines()[0].startswith(message), err
    assert "Traceback" not in err


def test_runs_rules_evaluates_records_and_fails_on_fire(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cm.connect(home=home, user="tess") as ml:
        proj = ml.project(PROJECT)
        with proj.start_run() as run:
            cm.train.tabular(
                proj.datasets.version("applications"),
                target="eligible",
                run=run,
                algorithm="random_forest",
                params={"n_estimators": 20},
            )
    code, out, err = cli(home, capsys, "runs", "rules", run.id, "--json")
    assert code == 0, err
    statuses = {r["rule"]: r["status"] for r in json.loads(out)}
    assert statuses == {
        "loss_not_decreasing": "insufficient_data",
        "overfit": "fired",
        "overtraining": "insufficient_data",
        "class_imbalance": "insufficient_data",  # 300 labels < samples=500
    }
    code, out, err = cli(
        home, capsys, "runs", "rules", run.id, "-r", "class_imbalance:samples=100",
        "-r", "overfit:ratio_threshold=1000", "--fail-on-fire",
    )  # fmt: skip
    assert code == 0, err
    assert "No rule fired." in out
    code, out, _ = cli(home, capsys, "runs", "rules", run.id, "-r", "overfit", "--fail-on-fire")
    assert code == 1 and "Fired: overfit." in out
    with cm.connect(home=home, user="tess") as ml:
        assert ml.project(PROJECT).runs.get(run.id).tags["civicml.rule.overfit"] == "fired"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("overfitt", "Error: Unknown training rule 'overfitt'."),
        ("overfit:ratio=1", "Error: Rule 'overfit' has no parameter 'ratio'."),
        ("overfit:patience", "Error: Rule parameter 'patience' in 'overfit:patience' is not"),
    ],
)
def test_runs_rules_bad_spec_is_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    code, _out, err = cli(home, capsys, "runs", "rules", "some-run", "-r", spec)
    assert code == 2
    assert err.splitlines()[0].startswith(message), err
    assert err.splitlines()[1].startswith("Hint: ")
