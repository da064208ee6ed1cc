"""``civicml demo`` ends with commands that run as printed: the path of the civicml that is
running (not a bare ``civicml`` the shell may not find) and a complete ``--record``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from civicml.cli.demo import civicml_command
from civicml.cli.main import main


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone whose virtual environment is not activated: civicml is not on PATH."""
    _script(tmp_path / ".venv" / "bin" / "civicml")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return tmp_path


def test_the_venv_script_is_shown_relative_to_the_clone(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [".venv/bin/civicml", "demo"])
    assert civicml_command() == ".venv/bin/civicml"
    monkeypatch.setattr(sys, "argv", [str(clone / ".venv" / "bin" / "civicml"), "demo"])
    assert civicml_command() == ".venv/bin/civicml"


def test_bare_civicml_only_when_path_finds_this_one(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [str(clone / ".venv" / "bin" / "civicml"), "demo"])
    other = _script(clone / "elsewhere" / "civicml")
    monkeypatch.setenv("PATH", str(other.parent))
    assert civicml_command() == ".venv/bin/civicml"
    monkeypatch.setenv("PATH", os.pathsep.join([str(clone / ".venv" / "bin"), str(other.parent)]))
    assert civicml_command() == "civicml"


def test_outside_the_current_directory_the_path_is_absolute(
    clone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = clone / ".venv" / "bin" / "civicml"
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    (clone / "work dir").mkdir()
    monkeypatch.chdir(clone / "work dir")
    assert civicml_command() == str(script)
    monkeypatch.setattr(sys, "argv", [str(clone / "with space" / "civicml"), "demo"])
    assert civicml_command() == shlex.quote(str(clone / "with space" / "civicml"))


def test_started_as_a_module_without_a_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "main.py"), "demo"])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python3"))
    assert civicml_command() == f"{tmp_path / 'bin' / 'python3'} -m civicml.cli.main"
    _script(tmp_path / "bin" / "civicml")  # the venv's entry point beside its interpreter
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert civicml_command() == "bin/civicml"  # below the current directory (tmp_path)


def test_demo_prints_commands_that_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run the demo, then the Predict and Verify commands it printed, as a user would paste
    them into a shell (a subprocess, not this process)."""
    home = tmp_path / "demo"
    assert main(["demo", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    printed = dict(re.findall(r"^  (Predict|Verify audit|Record fields):\s+(.+)$", out, re.M))
    predict = shlex.split(printed["Predict"])
    program = predict[0]
    assert program == "civicml" or Path(program).is_file(), program
    assert "{...}" not in printed["Predict"]
    record = json.loads(predict[predict.index("--record") + 1])
    for column in (
        "income",
        "household_size",
        "age",
        "region",
        "employment_status",
        "months_at_address",
        "prior_claims",
        "sex",
    ):
        assert column in record and f"{column} (" in printed["Record fields"]
    for command in (printed["Predict"], printed["Verify audit"]):
        argv = shlex.split(command)
        argv[0] = argv[0] if argv[0] != "civicml" else str(Path(sys.executable).parent / "civicml")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "p(1)" in done.stdout or "OK" in done.stdout
    _the_loop_closed(home)


def _the_loop_closed(home: Path) -> None:
    """What the demo's loop left behind, read back from its platform: the monitor's violation,
    the alert, the pipeline it started, the approved candidate and the two rollouts."""
    import civicml as cm
    from civicml.cli import demo_loop
    from civicml.cli.demo import OFFICER, PROJECT

    with cm.connect(home=home, user=OFFICER) as ml:
        proj = ml.project(PROJECT)
        (execution,) = proj.monitors.executions(demo_loop.MONITOR)
        assert execution.status.value == "completed_with_violations" and execution.violations
        (alert,) = proj.alerts.list(rule=demo_loop.RULE)
        assert alert.subject == demo_loop.MONITOR
        (firing,) = ml.schedules.firings(demo_loop.SCHEDULE, project=PROJECT)
        assert firing.status.value == "succeeded"
        assert firing.parameters["alert"] == alert.id
        run = ml.pipelines.get(firing.execution_id)
        assert run.status.value == "succeeded"
        versions = {v.version: v for v in proj.models.versions("eligibility")}
        assert versions[2].approval_status.value == "Approved"
        assert versions[2].approval_by == OFFICER
        assert alert.id in versions[2].description
        endpoint = proj.endpoints.get("eligibility")
        assert [(v.model_version, v.weight) for v in endpoint.variants()] == [(2, 1.0)]
        outcomes = [(r.model_version, r.status.value) for r in endpoint.rollout.list()]
        assert sorted(outcomes) == [(1, "rolled_back"), (2, "succeeded")]
        board = {r.version: r for r in proj.models.dashboard().rows}
        assert board[2].monitors == {demo_loop.MONITOR: "completed_with_violations"}
        assert ml.verify_audit().ok
