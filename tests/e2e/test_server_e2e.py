"""The real ``civicml server`` in a subprocess, driven by the SDK and the CLI over HTTP, then
stopped and started again on the same home: everything is still there and the audit holds."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import civicml as cm
from civicml.cli.main import main
from tests.conftest import start_server

pytestmark = pytest.mark.e2e
API = "/api/v1"


def _server_pid(url: str) -> int:
    """The pid of the ``civicml server`` child of this process that listens on ``url``'s port
    (the ``server_process`` fixture starts it and yields only its URL)."""
    port = str(urlsplit(url).port)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"server" in argv and port.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no civicml server child listening on port {port}")


def _stop(pid: int, url: str) -> None:
    """SIGTERM (a graceful shutdown) and wait until the process has exited."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break  # reaped
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"civicml server {pid} did not stop on SIGTERM")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}{API}/health", timeout=2)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _state(url: str) -> dict[str, Any]:
    """Everything the journey stored, as the API answers it."""
    with httpx.Client(base_url=url, timeout=30) as http:
        runs = http.get(
            f"{API}/projects/benefits/runs", params={"order_by": "attributes.name"}
        ).json()["runs"]
        models = f"{API}/projects/benefits/models/eligibility"
        return {
            "projects": http.get(f"{API}/projects").json(),
            "runs": runs,
            "histories": {
                r["id"]: http.get(f"{API}/runs/{r['id']}/metrics/loss").json() for r in runs
            },
            "artifacts": {
                r["id"]: http.get(f"{API}/runs/{r['id']}/artifacts").json() for r in runs
            },
            "model_bytes": [
                http.get(f"{API}/runs/{r['id']}/artifacts/model/model.bin").content for r in runs
            ],
            "versions": http.get(f"{models}/versions", params={"include_archived": True}).json(),
            "production": http.get(f"{models}/versions/production").json(),
            "history": http.get(f"{models}/versions/1/approvals").json(),
            "manifest": http.get(f"{models}/versions/1/manifest").json(),
            "audit": http.get(f"{API}/audit/events", params={"limit": 10_000}).json(),
        }


def test_a_full_journey_survives_a_server_restart(
    server_process: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, home = server_process

    # A data scientist trains three runs through the SDK.
    with cm.connect(url, user="data-scientist") as ml:
        proj = ml.project("benefits")
        for lr, auc in ((0.3, 0.84), (0.1, 0.91), (0.03, 0.79)):
            with proj.start_run(experiment="baseline", name=f"lr-{lr}", params={"lr": lr}) as run:
                for step in range(20):
                    run.log_metric("loss", 1.0 / (step + 1), step=step)
                run.log_metrics({"auc": auc})
                run.log_bytes(f"weights {lr}".encode(), "model/model.bin")
        best = proj.runs.search("metrics.auc > 0.9")[0]
        mv = proj.models.register(
            "eligibility", run=best.id, signature=[{"name": "income", "type": "float64"}]
        )
    # A reviewer approves it and points production at it.
    with cm.connect(url, user="risk-officer") as ml:
        models = ml.project("benefits").models
        models.approve(mv, note="AUC 0.91 meets the agreed threshold")
        models.set_alias("eligibility", "production", mv.version)

    # The CLI, pointed at the same server, sees the same data.
    code, out, err = _cli(capsys, "--url", url, "runs", "list", "-p", "benefits", "--json")
    assert (code, err) == (0, "")
    listed = json.loads(out)
    assert sorted(r["name"] for r in listed) == ["lr-0.03", "lr-0.1", "lr-0.3"]
    assert {r["status"] for r in listed} == {"finished"}
    code, out, _ = _cli(
        capsys,
        "--url",
        url,
        "models",
        "show",
        "eligibility",
        "production",
        "-p",
        "benefits",
        "--json",
    )
    shown = json.loads(out)
    assert (code, shown["version"], shown["approval_status"], shown["approval_by"]) == (
        0,
        1,
        "Approved",
        "risk-officer",
    )
    code, _, _ = _cli(
        capsys, "--url", url, "--user", "cli-user", "runs", "set-tag", best.id, "reviewed", "yes"
    )
    assert code == 0

    # Bad input through the CLI: exit 2, one "Error:" line and its hint, nothing on stdout.
    code, out, err = _cli(capsys, "--url", url, "runs", "list", "-p", "benefit", "--json")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "Error: Project 'benefit' does not exist.",
        "Hint: Did you mean 'benefits'?",
    ]

    before = _state(url)
    tags = before["runs"][1]["tags"]
    assert {k: v for k, v in tags.items() if not k.startswith("civicml.")} == {"reviewed": "yes"}
    tag_events = [e for e in before["audit"] if e["action"] == "run.tags_set"]
    assert [e["actor"] for e in tag_events] == ["cli-user"]

    # Stop the server gracefully and start a new one on the same home.
    _stop(_server_pid(url), url)
    with start_server(home, tmp_path / "second.log") as second:
        after = _state(second)

        assert after == before
        with cm.connect(second) as ml:
            report = ml.verify_audit()
        assert report.ok, report.problems
        assert report.events_checked == len(before["audit"])
        code, out, err = _cli(capsys, "--url", second, "audit", "verify", "--json")
        assert (code, json.loads(out)["ok"], err) == (0, True, "")
        # And it keeps working: the next version number follows the old ones.
        with cm.connect(second, user="data-scientist") as ml:
            again = ml.project("benefits").models.register("eligibility", run=best.id)
        assert again.version == 2


def test_a_long_cli_error_stays_on_one_line(
    server_process: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _home = server_process
    with cm.connect(url) as ml:
        ml.project("benefits")
    long_filter = " and ".join(f"metrics.metric_number_{i} > 0.{i}" for i in range(60)) + " or"

    code, out, err = _cli(
        capsys, "--url", url, "runs", "list", "-p", "benefits", "--filter", long_filter, "--json"
    )

    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("Error: Cannot parse the filter at position ")
    assert lines[1].startswith("Hint: ")
