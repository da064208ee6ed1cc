"""``civicml schedules`` and ``civicml scheduler --once``: add, list, show, pause, resume,
remove, firings; refusals exit 2 with one readable line; a failed firing makes --once exit 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import civicml as cm
from civicml.cli.main import main
from tests.pipelines import scheduled

ECHO = "tests.pipelines.scheduled:echo"


@pytest.fixture
def cli(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from civicml.cli import _common

    monkeypatch.setattr(_common.console, "width", 240)  # tables unwrapped, ids whole
    monkeypatch.setenv("CIVICML_PIPELINE_MODULES", '["tests.pipelines.scheduled"]')
    home = tmp_path / "cli-home"
    with scheduled.LOCK:
        scheduled.CALLS.clear()

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "--user", "carol", *args])
        out, err = capsys.readouterr()
        return code, out, err

    run.home = home  # type: ignore[attr-defined]
    assert run("projects", "create", "sched")[0] == 0
    return run


def _ingest(home: Path, name: str) -> None:
    with cm.connect(home=home, user="carol") as ml:
        ml.project("sched").datasets.ingest(name, pd.DataFrame({"x": [1.0, 2.0, 3.0]}))


def test_add_list_show_pause_resume_remove(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(
        "schedules", "add", "nightly", "-p", "sched", "--pipeline", ECHO,
        "--cron", "0 2 * * *", "--timezone", "Europe/Berlin", "--param", "tag=nightly",
    )  # fmt: skip
    assert code == 0, err
    assert "Added schedule nightly (cron 0 2 * * * (Europe/Berlin), next at" in out

    code, out, _ = cli("schedules", "list", "-p", "sched", "--json")
    (listed,) = json.loads(out)
    assert (listed["name"], listed["params"], listed["created_by"]) == (
        "nightly",
        {"tag": "nightly"},
        "carol",
    )
    code, out, _ = cli("schedules", "show", "nightly", "-p", "sched")
    assert code == 0 and "runs as" in out and "carol (admin)" in out and ECHO in out

    code, out, _ = cli("schedules", "pause", "nightly", "-p", "sched")
    assert (code, out.strip()) == (0, "Paused schedule nightly of project sched.")
    code, out, _ = cli("schedules", "show", "nightly", "-p", "sched", "--json")
    assert json.loads(out)["enabled"] is False
    code, out, _ = cli("schedules", "resume", "nightly", "-p", "sched", "--json")
    assert json.loads(out)["enabled"] is True

    code, out, _ = cli("schedules", "remove", "nightly", "-p", "sched")
    assert (code, out.strip()) == (0, "Removed schedule nightly of project sched.")
    code, out, _ = cli("schedules", "list", "-p", "sched", "--json")
    assert json.loads(out) == []


def test_refusals_exit_2_with_one_readable_line(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("schedules", "add", "x", "-p", "sched", "--pipeline", "os:system",
                       "--cron", "@daily")  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: Module 'os' is not in the setting pipeline_modules")
    assert lines[1].startswith("Hint:") and len(lines) == 2

    code, _, err = cli("schedules", "add", "x", "-p", "sched", "--pipeline", ECHO,
                       "--cron", "@daily", "--event", "report.created")  # fmt: skip
    assert code == 2 and "exactly one of cron and event" in err

    code, _, err = cli("schedules", "add", "x", "-p", "sched", "--pipeline", ECHO,
                       "--cron", "every day")  # fmt: skip
    assert code == 2 and "five fields" in err

    code, _, err = cli("schedules", "show", "nope", "-p", "sched")
    assert code == 2 and "Error: Schedule 'nope' does not exist in project 'sched'." in err

    code, _, err = cli("--url", "http://127.0.0.1:9", "scheduler", "--once")
    assert code == 2 and "runs on the database" in err


def test_scheduler_once_fires_an_event_schedule(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli(
        "schedules", "add", "on-claims", "-p", "sched", "--pipeline", ECHO,
        "--event", "dataset_version.created", "--match", "dataset=claims",
        "--param", "dataset={event.dataset}", "--param", "version={event.version}",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = cli("scheduler", "--once")
    assert (code, out.strip()) == (0, "Nothing was due.")

    _ingest(cli.home, "claims")
    _ingest(cli.home, "other")
    code, out, err = cli("scheduler", "--once")
    assert code == 0, err
    assert out.startswith("Fired on-claims (") and ": succeeded, execution " in out
    assert scheduled.CALLS == [("cron", "claims", 1)]

    code, out, _ = cli("schedules", "firings", "on-claims", "-p", "sched", "--json")
    (firing,) = json.loads(out)
    assert firing["parameters"] == {"dataset": "claims", "version": 1}
    assert firing["status"] == "succeeded" and firing["execution_id"]
    code, out, _ = cli("schedules", "firings", "on-claims", "-p", "sched")
    assert code == 0 and "succeeded" in out and firing["execution_id"] in out


def test_scheduler_once_exits_1_when_a_firing_failed(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli(
        "schedules", "add", "broken", "-p", "sched",
        "--pipeline", "tests.pipelines.scheduled:failing", "--event", "dataset_version.created",
    )  # fmt: skip
    assert code == 0, err
    _ingest(cli.home, "claims")
    code, out, _ = cli("scheduler", "--once")
    assert code == 1
    assert "Fired broken (" in out and "failed" in out and "the source system is down" in out


def test_the_scheduler_loop_stops_on_interrupt(  # type: ignore[no-untyped-def]
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civicml.pipelines.scheduler import Scheduler

    def interrupt(self: Scheduler, timeout_s: float | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Scheduler, "join", interrupt)
    code, out, _ = cli("scheduler", "--interval", "0.5")
    assert code == 0 and "civicml scheduler" in out and "every 0.5 s" in out
    assert sys.modules["civicml.cli.schedules"].__doc__
