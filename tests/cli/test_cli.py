"""CLI journeys on the embedded platform: exit codes, --json, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from civicml.cli.main import main


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    home = tmp_path / "cli-home"

    def run(*args: str, user: str = "carol") -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "--user", user, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_tracking_and_registry_journey(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("projects", "create", "elig")[0] == 0
    code, out, _ = cli("runs", "create", "-p", "elig", "-e", "base", "--param", "lr=0.1", "--json")
    assert code == 0
    run_id = json.loads(out)["id"]
    assert cli("runs", "log-metric", run_id, "auc", "0.91", "--step", "3")[0] == 0
    assert cli("runs", "log-param", run_id, "depth", "4")[0] == 0
    assert cli("runs", "set-tag", run_id, "team", "benefits")[0] == 0
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    assert cli("runs", "log-artifact", run_id, str(model), "--path", "model/model.bin")[0] == 0
    code, out, _ = cli("runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["params"] == {"lr": "0.1", "depth": "4"}
    assert shown["metrics"] == {"auc": 0.91}
    assert shown["tags"] == {"team": "benefits"}
    code, out, _ = cli("runs", "list", "-p", "elig", "-f", "metrics.auc > 0.9", "--json")
    assert [r["id"] for r in json.loads(out)] == [run_id]
    code, out, _ = cli("models", "register", "eligibility", "-p", "elig", "--run", run_id, "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    code, out, _ = cli(
        "models",
        "approve",
        "eligibility",
        "1",
        "-p",
        "elig",
        "-m",
        "meets policy",
        "--json",
        user="risk-officer",
    )
    approved = json.loads(out)
    assert (approved["approval_status"], approved["approval_by"]) == ("Approved", "risk-officer")
    assert cli("models", "alias", "eligibility", "production", "1", "-p", "elig")[0] == 0
    code, out, _ = cli("models", "show", "eligibility", "production", "-p", "elig", "--json")
    assert json.loads(out)["aliases"] == ["production"]
    assert cli("runs", "end", run_id)[0] == 0
    code, out, _ = cli("lineage", "show", "run", run_id, "--json")
    assert {n["kind"] for n in json.loads(out)["nodes"]} == {"run", "model_version"}
    code, out, _ = cli("audit", "list", "--json")
    assert "model_version.approval_changed" in [e["action"] for e in json.loads(out)]
    code, out, _ = cli("audit", "verify")
    assert code == 0 and "audit events verified" in out
    code, out, _ = cli(
        "runs", "download", run_id, "model/model.bin", "-o", str(tmp_path / "back.bin")
    )
    assert (tmp_path / "back.bin").read_bytes() == b"weights"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("projects", "show", "nope"), "Project 'nope' does not exist."),
        (("projects", "create", "bad name"), "Project name 'bad name' is not valid."),
        (("runs", "show", "f" * 32), "does not exist"),
        (("runs", "list", "-p", "default", "-f", "metrics.x >"), "Incomplete clause"),
        (("runs", "create", "--param", "novalue"), "is not KEY=VALUE"),
        (("models", "register", "m"), "Say what the model is"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    cli,
    args: tuple[str, ...],  # type: ignore[no-untyped-def]
    message: str,
) -> None:
    cli("projects", "create", "default")
    code, _out, err = cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: ") and message in lines[0]
    assert all(line.startswith(("Error: ", "Hint: ")) for line in lines)
    assert "Traceback" not in err


def test_usage_errors_exit_2(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("runs", "list", "-n", "many")[0] == 2
    assert cli("no-such-command")[0] == 2


def test_version_and_help(cli) -> None:  # type: ignore[no-untyped-def]
    import civicml

    assert cli("version")[1].strip() == civicml.__version__
    code, out, _ = cli("--help")
    assert code == 0 and "models" in out


def test_demo_runs_to_the_end(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("demo", "--home", str(tmp_path / "demo"))
    assert code == 0
    assert "Approved by model-risk-officer" in out
    assert "events verified, ok=True" in out


def test_lazy_groups_and_commands_run_when_invoked(cli) -> None:  # type: ignore[no-untyped-def]
    """The root imports a group only when it is invoked (issue 8): nested groups still work."""
    code, out, _ = cli("models", "policy", "--help")
    assert code == 0 and "set" in out and "show" in out
    code, out, _ = cli("server", "--help")
    assert code == 0 and "--port" in out
    code, _, err = cli("models", "no-such-command")
    assert code == 2 and "no-such-command" in err
