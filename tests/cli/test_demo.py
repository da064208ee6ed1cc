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
