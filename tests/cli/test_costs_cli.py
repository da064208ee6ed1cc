"""``civicml costs``: the report as a table, JSON and HTML; budgets; exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import civicml as cm
from civicml.cli.main import main
from civicml.costs import Usage
from civicml.tracking.usage import record_run_usage


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from civicml.cli import _common

    monkeypatch.setattr(_common.console, "width", 240)

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def run_id(tmp_path: Path) -> str:
    with cm.connect() as ml:
        run = ml.project("cli-costs").start_run(experiment="e", name="measured")
        record_run_usage(ml.backend.ctx, run.id, Usage(wall_s=3.0, cpu_s=2.5))
        run.end()
        return run.id


def test_the_report_as_table_json_and_html(cli, run_id: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("costs", "--project", "cli-costs", "--by", "run")
    assert code == 0 and "e/measured" in out and "2.50" in out and "total" in out
    code, out, _ = cli("costs", "-p", "cli-costs", "--by", "run", "--json")
    report = json.loads(out)
    assert code == 0 and report["by"] == "run" and report["lines"][0]["id"] == run_id
    assert report["lines"][0]["cpu_s"] == 2.5 and report["total"]["wall_s"] == 3.0
    page = tmp_path / "costs.html"
    code, out, _ = cli("costs", "-p", "cli-costs", "--html", str(page))
    assert code == 0 and "<svg" in page.read_text() and f"Wrote {page}" in out


def test_budgets_from_the_command_line(cli, run_id: str) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("costs", "budget", "set", "cli-costs", "--amount", "25", "--hard-stop")
    assert code == 0 and "0.0000 of 25.00 EUR" in out and "hard stop" in out
    code, out, _ = cli("costs", "budget", "show", "cli-costs", "--json")
    assert code == 0 and json.loads(out)["budget"]["hard_stop"] is True
    assert cli("costs", "budget", "clear", "cli-costs")[0] == 0
    code, out, _ = cli("costs", "budget", "show", "cli-costs")
    assert code == 0 and "has no budget" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("costs", "--by", "team"), "Error: --by 'team' is not a grouping."),
        (("costs", "--since", "last week"), "Error: --since 'last week' is not a date."),
        (("costs", "--html", "x.html"), "Error: --html needs --project."),
        (("costs", "budget", "set", "cli-costs", "--amount", "-3"), "Error: Budget amount -3.0"),
        (("costs", "budget", "clear", "cli-costs"), "Error: Project 'cli-costs' has no budget."),
    ],
)
def test_bad_input_exits_2_with_one_line(
    cli, run_id: str, argv: tuple[str, ...], message: str
) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli(*argv)
    assert code == 2
    assert err.splitlines()[0] == message or err.splitlines()[0].startswith(message)
