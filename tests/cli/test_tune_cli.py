"""``civicml tune run``: the search space from the command line, trials as runs, the best
registered on request; bad specs are exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import civicml as cm
from civicml.cli.tune import parse_space
from civicml.core.errors import InvalidInputError
from tests.cli.training import PROJECT, cli, home_with_applications


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return home_with_applications(tmp_path)


def test_tune_from_the_command_line_records_trials_and_registers_the_best(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        home,
        capsys,
        "tune", "run", "applications", "-t", "eligible", "-p", PROJECT,
        "--algorithm", "logistic", "--strategy", "random", "--max-trials", "3",
        "--space", "C=float:0.01:10:log", "--space", "max_iter=choice:100,200",
        "--register", "eligibility", "--json",
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)
    assert len(found["leaderboard"]) == 3 and found["metric"] == "val_roc_auc"
    assert set(found["best_params"]) == {"C", "max_iter"}
    assert found["model_version"] == 1
    with cm.connect(home=home, user="tess") as ml:
        runs = ml.project(PROJECT).runs.search(experiments=["tuning"])
        trials = [r for r in runs if r.tags.get("tuning.role") == "trial"]
        assert len(trials) == 3
        assert {r.tags["tuning.id"] for r in trials} == {found["tuning_id"]}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("C", "is not NAME=KIND"),
        ("C=float:a:b", "not a number"),
        ("C=uniform:1:2", "unknown kind"),
        ("C=float:1:2:linear", "unknown kind"),
    ],
)
def test_bad_space_entries_are_refused(spec: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        parse_space([spec])


def test_a_bad_space_on_the_command_line_is_exit_2_with_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        home, capsys, "tune", "run", "applications", "-t", "eligible", "-p", PROJECT,
        "--space", "C=uniform:1:2",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.startswith("Error: The search-space entry 'C=uniform:1:2'")
