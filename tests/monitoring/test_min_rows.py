"""Drift on too few rows (issue 8): below ``drift_min_rows`` the verdict is "insufficient data"
with the counts, in the JSON, the HTML page, the stored summary, the CLI and over REST; no
column is judged, so none counts as drifted."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from civicml.cli.main import main
from civicml.core import InvalidInputError, Settings
from civicml.data import DatasetService
from civicml.governance import AuditTrail, ProjectService
from civicml.monitoring import DriftInputError, DriftReport, MonitoringService, drift_report
from civicml.monitoring.report_html import render_html
from civicml.sdk.client import connect
from civicml.server import create_app
from civicml.store import Context
from tests.monitoring.conftest import make_frame
from tests.server.helpers import API, assert_error, isolated_settings, serve

PROJECT = "benefits"
SHORT = "Only 5 current rows (at least 30 needed for a drift verdict)"


def _captured(n: int = 5) -> pd.DataFrame:
    """What one caller sends a few times: one rare region and household, similar incomes."""
    return pd.DataFrame(
        {
            "income": np.linspace(4_000.0, 4_400.0, n),
            "stable_income": np.full(n, 90_000.0),
            "age": np.full(n, 88),
            "region": ["west"] * n,
            "household": ["family"] * n,
            "urban": [False] * n,
        }
    )


@pytest.fixture
def baseline(rng: np.random.Generator) -> pd.DataFrame:
    return make_frame(rng, 800, drifted=False)


# The engine ---------------------------------------------------------------------------------------
def test_a_few_rows_used_to_read_as_drift_in_every_column(baseline: pd.DataFrame) -> None:
    forced = drift_report(baseline, _captured(), min_rows=1)  # the old behaviour, on request
    assert forced.verdict == "drift" and forced.n_drifted == forced.n_columns == 6


def test_a_few_rows_are_insufficient_data(baseline: pd.DataFrame) -> None:
    report = drift_report(baseline, _captured())
    assert report.verdict == "insufficient_data"
    assert report.insufficient_data == SHORT
    assert report.min_rows == 30 and report.current_rows == 5
    assert not report.dataset_drift
    assert (report.n_drifted, report.share_drifted, report.n_columns) == (0, 0.0, 6)
    for column in report.columns:
        assert column.drift_detected is None
        assert column.note == f"{SHORT}; not judged."
        assert column.statistic is not None  # computed, shown, not judged
    kinds = {v.constraint_check_type for v in report.violations}
    assert "baseline_drift_check" not in kinds
    assert "categorical_values_check" not in kinds  # 'west' is a known region
    data = json.loads(report.model_dump_json())
    assert data["verdict"] == "insufficient_data" and data["columns"][0]["drift_detected"] is None


def test_the_floor_applies_to_both_sides_and_to_each_column(baseline: pd.DataFrame) -> None:
    tiny_reference = drift_report(baseline.head(12), baseline, check_constraints=False)
    assert tiny_reference.insufficient_data == (
        "Only 12 reference rows (at least 30 needed for a drift verdict)"
    )
    both = drift_report(baseline.head(3), baseline.head(1), check_constraints=False)
    assert both.insufficient_data == (
        "Only 1 current row and 3 reference rows (at least 30 needed for a drift verdict)"
    )
    current = baseline.copy()
    current.loc[current.index[20:], "income"] = np.nan  # 20 values left of 800
    report = drift_report(baseline, current, check_constraints=False)
    assert report.verdict != "insufficient_data"
    income = next(c for c in report.columns if c.column == "income")
    assert income.drift_detected is None
    assert income.note == "Only 20 non-missing current values (at least 30 needed); not judged."
    assert all(c.drift_detected is not None for c in report.columns if c.column != "income")


def test_at_the_floor_there_is_a_verdict(baseline: pd.DataFrame) -> None:
    report = drift_report(baseline, baseline.head(30), check_constraints=False)
    assert report.verdict in ("drift", "no_drift") and report.insufficient_data is None
    assert all(c.drift_detected is not None for c in report.columns)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_min_rows_must_be_a_positive_whole_number(baseline: pd.DataFrame, bad: object) -> None:
    with pytest.raises(DriftInputError, match="min_rows must be a whole number from 1"):
        drift_report(baseline, baseline, min_rows=bad)  # type: ignore[arg-type]


def test_reports_stored_before_the_floor_still_read(baseline: pd.DataFrame) -> None:
    old = drift_report(baseline, baseline, check_constraints=False).model_dump(mode="json")
    for key in ("verdict", "min_rows", "insufficient_data"):
        old.pop(key)
    assert DriftReport.model_validate(old).verdict == "no_drift"
    old["dataset_drift"] = True
    assert DriftReport.model_validate(old).verdict == "drift"


def test_html_says_insufficient_data_and_not_judged(baseline: pd.DataFrame) -> None:
    html = render_html(drift_report(baseline, _captured()))
    assert f"Insufficient data: {SHORT}." in html
    assert html.count('<span class="badge unjudged">Not judged</span>') == 12  # table + plots
    assert "Dataset drift detected" not in html and "No dataset drift" not in html


# The service and its setting ---------------------------------------------------------------------
@pytest.fixture
def svc(ctx: Context, baseline: pd.DataFrame) -> MonitoringService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    data = DatasetService(ctx)
    data.ingest(PROJECT, "applications", baseline, progress=False)
    data.ingest(PROJECT, "captured", _captured(), progress=False)
    return MonitoringService(ctx)


def test_service_summary_says_insufficient_data(svc: MonitoringService, ctx: Context) -> None:
    report = svc.drift(PROJECT, current=("captured", 1), baseline=("applications", 1))
    s = report.summary
    assert (s.verdict, s.dataset_drift, s.n_drifted, s.drifted_columns) == (
        "insufficient_data",
        False,
        0,
        [],
    )
    assert (s.current_rows, s.reference_rows, s.insufficient_data) == (5, 800, SHORT)
    assert report.inputs.min_rows == 30
    assert svc.read_report(report.id).verdict == "insufficient_data"
    event = AuditTrail(ctx).list(project=PROJECT)[-1]
    assert event.after["verdict"] == "insufficient_data" and event.after["current_rows"] == 5


def test_the_floor_is_a_setting_and_an_argument(svc: MonitoringService, ctx: Context) -> None:
    lenient = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"drift_min_rows": 5})
    )
    report = MonitoringService(lenient).drift(
        PROJECT, current=("captured", 1), baseline=("applications", 1)
    )
    assert report.summary.verdict == "drift" and report.inputs.min_rows == 5
    strict = svc.drift(PROJECT, current=("captured", 1), baseline=("applications", 1), min_rows=6)
    assert strict.summary.verdict == "insufficient_data"
    with pytest.raises(InvalidInputError, match="min_rows must be a whole number from 1, got 0"):
        svc.drift(PROJECT, current=("captured", 1), baseline=("applications", 1), min_rows=0)


def test_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CIVICML_DRIFT_MIN_ROWS", "100")
    assert Settings.load(home=tmp_path).drift_min_rows == 100


# A real server: REST, remote SDK, CLI -----------------------------------------------------------
@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(tmp_path_factory.mktemp("min-rows-server"))
    rng = np.random.default_rng(11)
    with serve(create_app(settings)) as base, connect(base) as ml:
        datasets = ml.project(PROJECT).datasets
        datasets.ingest("applications", make_frame(rng, 800, drifted=False))
        datasets.ingest("captured", _captured())
        yield base


def test_rest_reports_insufficient_data(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as api:
        body = {
            "current": {"dataset": "captured"},
            "baseline": {"dataset": "applications"},
        }
        created = api.post(f"{API}/projects/{PROJECT}/reports/drift", json=body)
        assert created.status_code == 201, created.text
        report = created.json()
        assert report["summary"]["verdict"] == "insufficient_data"
        assert report["summary"]["insufficient_data"] == SHORT
        assert report["summary"]["n_drifted"] == 0 and report["inputs"]["min_rows"] == 30
        full = api.get(f"{API}/reports/{report['id']}/json").json()
        assert full["verdict"] == "insufficient_data"
        assert {c["drift_detected"] for c in full["columns"]} == {None}
        page = api.get(f"{API}/reports/{report['id']}/html").text
        assert f"Insufficient data: {SHORT}." in page
        lenient = api.post(f"{API}/projects/{PROJECT}/reports/drift", json={**body, "min_rows": 5})
        assert lenient.json()["summary"]["verdict"] == "drift"
        for bad in (0, True, "5"):
            refused = api.post(
                f"{API}/projects/{PROJECT}/reports/drift", json={**body, "min_rows": bad}
            )
            assert_error(refused, 422, "InvalidInputError", "min_rows")


def test_remote_sdk_passes_min_rows(url: str) -> None:
    with connect(url) as ml:
        monitoring = ml.project(PROJECT).monitoring
        report = monitoring.drift(("captured", "latest"), baseline=("applications", 1))
        assert report.summary.verdict == "insufficient_data"
        assert monitoring.result(report).insufficient_data == SHORT
        forced = monitoring.drift(("captured", 1), baseline=("applications", 1), min_rows=5)
        assert forced.summary.verdict == "drift" and forced.inputs.min_rows == 5


def test_cli_prints_insufficient_data(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--url", url, "monitoring", "drift", "captured", "--baseline", "applications"]
    assert main([*args, "-p", PROJECT]) == 0
    out = capsys.readouterr().out
    assert f"INSUFFICIENT DATA - {SHORT}; no column judged" in out
    assert "DRIFT" not in out.replace("INSUFFICIENT DATA", "")
    assert out.count("judged") == 7  # the headline and each column (wrapped in a narrow table)
    assert main([*args, "-p", PROJECT, "--min-rows", "5"]) == 0
    assert "DRIFT DETECTED - 6 of 6 columns drifted" in capsys.readouterr().out
    assert main([*args, "-p", PROJECT, "--min-rows", "0"]) == 2
