"""``civicml evaluate`` on the embedded platform: reports, --json, exports, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from civicml.cli.main import main
from civicml.sdk.client import connect
from tests.evaluation.helpers import PROJECT, publish

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    home = tmp_path / "cli-home"
    with connect(home=home, user="data-scientist") as ml:
        publish(ml)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "--user", "reviewer", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_bias_explain_list_show_export(cli: Cli, tmp_path: Path) -> None:
    page = tmp_path / "bias.html"
    code, out, err = cli(
        "evaluate", "bias", "applications", "-p", PROJECT, "-l", "eligible",
        "--positive-label", "1", "-f", "sex", "-f", "age>60", "-f", "region=north,east",
        "--model", "eligibility", "-o", str(page),
    )  # fmt: skip
    assert code == 0, err
    assert "Bias: eligibility v1 on applications v1 (bias_post_training" in out
    assert "Facet sex" in out and "Facet region" in out and "DPPL" in out
    assert "HTML report written to" in out
    assert page.read_text().startswith("<!doctype html>")

    code, out, err = cli(
        "evaluate", "bias", "applications", "-p", PROJECT, "-l", "eligible",
        "--positive-label", "1", "-f", "sex", "--json",
    )  # fmt: skip
    assert code == 0, err
    pre = json.loads(out)
    assert pre["kind"] == "bias_pre_training" and pre["model"] is None
    assert pre["created_by"] == "reviewer"
    assert set(pre["summary"]["values"]["sex"]) == {"female", "male"}

    code, out, err = cli(
        "evaluate", "explain", "eligibility", "-d", "applications", "-p", PROJECT,
        "--rows", "150", "--top-k", "2", "--json",
    )  # fmt: skip
    assert code == 0, err
    why = json.loads(out)
    assert why["kind"] == "explanation" and why["summary"]["n_rows"] == 150
    assert why["inputs"] == {"rows": 150, "seed": 0, "top_k": 2}

    code, out, _ = cli("evaluate", "list", "-p", PROJECT, "--json")
    listed = json.loads(out)
    assert [e["id"] for e in listed][:2] == [why["id"], pre["id"]] and len(listed) == 3
    code, out, _ = cli("evaluate", "list", "-p", PROJECT, "--kind", "bias_pre_training", "--json")
    assert [e["id"] for e in json.loads(out)] == [pre["id"]]
    code, out, _ = cli("evaluate", "list", "-p", PROJECT, "--model", "eligibility", "--json")
    assert len(json.loads(out)) == 2
    assert "Evaluations of benefits" in cli("evaluate", "list", "-p", PROJECT)[1]

    code, out, _ = cli("evaluate", "show", why["id"])
    assert code == 0 and "Global importance" in out and "household_size" in out
    assert json.loads(cli("evaluate", "show", pre["id"], "--json")[1]) == pre

    exported = tmp_path / "why.json"
    code, out, _ = cli("evaluate", "export", why["id"], "-o", str(exported))
    assert code == 0 and f"JSON of evaluation {why['id']} written" in out
    assert json.loads(exported.read_text())["global_explanation"]["rows_explained"] == 150
    html = tmp_path / "why.html"
    assert cli("evaluate", "export", why["id"], "-o", str(html))[0] == 0
    assert "<svg" in html.read_text()
    as_json = tmp_path / "pre.out"
    assert cli("evaluate", "export", pre["id"], "-o", str(as_json), "--format", "json")[0] == 0
    assert json.loads(as_json.read_text())["stage"] == "pre_training"


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ["bias", "applications", "-l", "eligibl", "--positive-label", "1", "-f", "sex"],
            "Error: Column 'eligibl' (label) is not in dataset applications v1.",
            "Hint: Did you mean 'eligible'?",
        ),
        (
            ["bias", "applications", "-l", "eligible", "--positive-label", "1", "-f", "age>old"],
            "Error: Facet 'age>old': threshold 'old' is not a number.",
            "Hint: Write e.g. --facet 'age>60'",
        ),
        (
            ["bias", "applications", "-l", "eligible", "--positive-label", "1", "-f", "sex="],
            "Error: Facet 'sex=' names no value.",
            "Hint: Write e.g. --facet sex=female",
        ),
        (
            ["explain", "eligibility", "-d", "applications", "--rows", "0"],
            "Error: rows = 0 is out of range.",
            "Hint: Use a whole number from 1 to 100,000.",
        ),
        (
            ["explain", "nomodel", "-d", "applications"],
            "Error: Model 'nomodel' does not exist",
            "Hint: Register a version",
        ),
        (["show", "nope"], "Error: Evaluation 'nope' does not exist.", "Hint: List"),
        (["list", "--kind", "fair"], "Error: Evaluation kind 'fair' is not known.", "Hint: Use"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    cli: Cli, args: list[str], message: str, hint: str | None
) -> None:
    project = [] if args[0] == "show" else ["-p", PROJECT]
    code, out, err = cli("evaluate", *args, *project)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith(message), err
    assert len(lines) == (1 if hint is None else 2)
    if hint is not None:
        assert lines[1].startswith(hint)
    assert json.loads(cli("evaluate", "list", "-p", PROJECT, "--json")[1]) == []


def test_export_refuses_an_unknown_format(cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli(
        "evaluate", "bias", "applications", "-p", PROJECT, "-l", "eligible",
        "--positive-label", "1", "-f", "sex", "--json",
    )  # fmt: skip
    target = tmp_path / "x.pdf"
    code, _, err = cli(
        "evaluate", "export", json.loads(out)["id"], "-o", str(target), "--format", "pdf"
    )
    assert code == 2 and "Export format 'pdf' is not known." in err
    assert not target.exists()
    assert cli("evaluate", "bias", "applications")[0] == 2  # usage: missing options
