"""The README's lifecycle: ``proj.monitoring.drift(ep, baseline=raw)`` checks what an endpoint
received against the training data — through the SDK (embedded and remote) and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.cli.main import main
from civicml.data.samples import benefit_applications

PROJECT = "benefits-eligibility"


@pytest.fixture(params=["embedded", "remote"])
def people(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The data scientist and a reviewer (who may approve what the scientist trained)."""
    if request.param == "embedded":
        home = tmp_path / "home"
        ana, rui = cm.connect(home=home, user="ana"), cm.connect(home=home, user="rui")
    else:
        url = request.getfixturevalue("live_server")
        ana, rui = cm.connect(url, user="ana"), cm.connect(url, user="rui")
    yield ana, rui
    ana.close()
    rui.close()


def test_the_design_lifecycle_runs(people: tuple[Any, Any], tmp_path: Path) -> None:
    ana, rui = people
    source = tmp_path / "applications.csv"
    benefit_applications(800, seed=1).to_csv(source, index=False)
    proj = ana.project(PROJECT)
    raw = proj.datasets.ingest("applications", source)
    with proj.start_run(experiment="baseline") as run:
        model = cm.train.tabular(raw, target="eligible", algorithm="lightgbm", run=run)
    mv = proj.models.register("eligibility", model, run=run)
    rui.project(PROJECT).models.approve(mv, note="meets policy")  # not ana: she trained it
    ep = proj.endpoints.deploy("eligibility", mv)
    rows = benefit_applications(60, seed=2, drifted=True).drop(columns=["eligible"])
    assert len(ep.predict(rows).predictions) == 60

    report = proj.monitoring.drift(ep, baseline=raw)

    assert report.inputs.current.dataset == "eligibility-capture"
    assert report.inputs.current.rows == 60
    assert report.inputs.baseline.id == raw.id
    assert report.summary.verdict == "drift"
    assert "income" in report.summary.drifted_columns
    # the label is not among the requests: Model Monitor's missing-column violation
    assert report.summary.violation_types.get("missing_column_check") == 1


def test_the_cli_checks_an_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    ana = cm.connect(home=home, user="ana")
    proj = ana.project(PROJECT)
    raw = proj.datasets.ingest("applications", benefit_applications(600, seed=1))
    with proj.start_run() as run:
        model = cm.train.tabular(raw, target="eligible", algorithm="logistic", run=run)
    mv = proj.models.register("eligibility", model, run=run)
    cm.connect(home=home, user="rui").project(PROJECT).models.approve(mv, note="ok")
    ep = proj.endpoints.deploy("eligibility", mv)
    ep.predict(benefit_applications(40, seed=3, drifted=True).drop(columns=["eligible"]))
    ana.close()

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), *args])
        out, err = capsys.readouterr()
        return code, out, err

    base = ["monitoring", "drift", "-p", PROJECT]
    code, out, _ = cli(*base, "--endpoint", "eligibility", "-b", "applications", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["inputs"]["current"]["dataset"] == "eligibility-capture"
    assert report["inputs"]["current"]["rows"] == 40
    for args in (
        ("--baseline", "applications"),  # nothing to check
        ("applications", "--endpoint", "eligibility", "-b", "applications"),  # both
        ("--endpoint", "eligibility"),  # no baseline
    ):
        code, out, err = cli(*base, *args)
        assert code == 2, (args, err)
        assert err.startswith("Error: Name what to check (DATASET or --endpoint, not both)")
        assert out == ""
