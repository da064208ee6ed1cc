"""The REST router, the SDK handle (embedded and remote) and the CLI group for monitoring.

They are not wired into ``create_app`` / the ``civicml`` command yet, so these tests mount them
themselves (``_app`` below); once wired, ``_app`` reduces to ``create_app(settings)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import typer
from fastapi import FastAPI
from typer.testing import CliRunner

from civicml.cli import _common
from civicml.cli.monitoring import monitoring_app
from civicml.core import InvalidInputError, NotFoundError, Settings
from civicml.data import DatasetVersion
from civicml.monitoring import DriftReport, Report
from civicml.sdk.client import connect
from civicml.sdk.datasets import DatasetsHandle
from civicml.sdk.monitoring import MonitoringHandle
from civicml.server import create_app
from civicml.server.routers import monitoring
from tests.monitoring.conftest import make_frame
from tests.server.helpers import API, assert_error, isolated_settings, serve

PROJECT = "benefits"
DRIFT = f"{API}/projects/{PROJECT}/reports/drift"


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    if "/api/v1/reports/{report_id}" not in {getattr(r, "path", None) for r in app.routes}:
        app.include_router(monitoring.router)
    return app


def _frames(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    return (
        make_frame(rng, 500, drifted=False),
        make_frame(rng, 400, drifted=False),
        make_frame(rng, 400, drifted=True),
    )


def _ingest(backend: Any) -> list[DatasetVersion]:
    """applications v1 (baseline), batch v1 (undrifted), batch v2 (drifted)."""
    datasets = DatasetsHandle(backend, PROJECT)
    baseline, stable, drifted = _frames()
    return [
        datasets.ingest("applications", baseline),
        datasets.ingest("batch", stable),
        datasets.ingest("batch", drifted),
    ]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(tmp_path_factory.mktemp("monitoring-server"))
    with serve(_app(settings)) as base, connect(base) as ml:
        ml.project(PROJECT)
        _ingest(ml.backend)
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _body(current: int | str = 2, **extra: Any) -> dict[str, Any]:
    return {
        "current": {"dataset": "batch", "version": current},
        "baseline": {"dataset": "applications", "version": 1},
        **extra,
    }


def test_rest_create_show_list_and_files(api: httpx.Client) -> None:
    created = api.post(DRIFT, json=_body(columns=["income", "region", "household"]))
    assert created.status_code == 201, created.text
    report = Report.model_validate(created.json())
    assert created.headers["location"] == f"{API}/reports/{report.id}"
    assert report.summary.verdict == "drift"
    assert report.summary.drifted_columns == ["income", "region"]
    assert report.inputs.current.version == 2 and report.inputs.baseline.dataset == "applications"
    assert api.get(created.headers["location"]).json() == created.json()
    listed = api.get(f"{API}/projects/{PROJECT}/reports", params={"kind": "drift"}).json()
    assert report.id in [r["id"] for r in listed]

    as_json = api.get(f"{API}/reports/{report.id}/json")
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    result = DriftReport.model_validate_json(as_json.content)
    assert [c.column for c in result.columns] == ["income", "region", "household"]
    digests = {f.path: f.digest for f in report.files}
    assert hashlib.sha256(as_json.content).hexdigest() == digests["report.json"]

    page = api.get(f"{API}/reports/{report.id}/html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert hashlib.sha256(page.content).hexdigest() == digests["report.html"]
    assert "<script" not in page.text and "style=" not in page.text

    events = api.get(f"{API}/audit/events", params={"limit": 10_000}).json()
    assert [e["after"]["verdict"] for e in events if e["entity_id"] == report.id] == ["drift"]
    assert api.get(f"{API}/audit/verify").json()["ok"] is True


def test_html_policy_allows_only_its_own_style(api: httpx.Client) -> None:
    report_id = api.post(DRIFT, json=_body(current=1)).json()["id"]
    page = api.get(f"{API}/reports/{report_id}/html")
    styles = re.findall(r"<style>(.*?)</style>", page.text, re.DOTALL)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    policies = page.headers.get_list("content-security-policy")
    ours = monitoring.html_policy(page.text)
    assert ours in policies
    assert ours.startswith("default-src 'none'; ")
    assert f"style-src 'sha256-{digest}';" in ours
    assert "unsafe-inline" not in ours and "script-src" not in ours


def test_html_carries_a_single_policy(api: httpx.Client) -> None:
    report_id = api.post(DRIFT, json=_body(current=1)).json()["id"]
    page = api.get(f"{API}/reports/{report_id}/html")
    assert page.headers.get_list("content-security-policy") == [monitoring.html_policy(page.text)]


@pytest.mark.parametrize(
    ("body", "status", "error", "message"),
    [
        (_body(current=9), 404, "NotFoundError", "has no version 9"),
        (_body(current="newest"), 422, "InvalidInputError", "'newest' is not valid"),
        (
            {**_body(), "current": {"dataset": "batc", "version": 1}},
            404,
            "NotFoundError",
            "Dataset 'batc' does not exist",
        ),
        (_body(columns=["incme"]), 422, "InvalidInputError", "Column 'incme' is not in"),
        (_body(drift_share=0), 422, "InvalidInputError", None),
        (_body(colour="red"), 422, "InvalidInputError", None),
        ({"current": {"dataset": "batch"}}, 422, "InvalidInputError", None),
    ],
)
def test_rest_bad_requests(
    api: httpx.Client, body: dict[str, Any], status: int, error: str, message: str | None
) -> None:
    assert_error(api.post(DRIFT, json=body), status, error, message)


def test_rest_not_found(api: httpx.Client) -> None:
    assert_error(api.get(f"{API}/reports/nope"), 404, "NotFoundError", "'nope' does not exist")
    assert_error(api.get(f"{API}/reports/nope/html"), 404, "NotFoundError")
    assert_error(api.get(f"{API}/reports/nope/json"), 404, "NotFoundError")
    assert_error(api.get(f"{API}/projects/nope/reports"), 404, "NotFoundError")
    assert_error(
        api.get(f"{API}/projects/{PROJECT}/reports", params={"kind": "x"}),
        422,
        "InvalidInputError",
        "'x' is not known",
    )
    assert_error(
        api.post(f"{API}/projects/nope/reports/drift", json=_body()),
        404,
        "NotFoundError",
        "Project 'nope' does not exist",
    )


def test_remote_and_embedded_handles_agree(url: str, tmp_path: Path) -> None:
    with connect(url) as remote, connect(home=tmp_path / "home") as local:
        local.project(PROJECT)
        _ingest(local.backend)
        outcomes = []
        for ml in (remote, local):
            handle = MonitoringHandle(ml.backend, PROJECT)
            datasets = DatasetsHandle(ml.backend, PROJECT)
            base, drifted = datasets.version("applications", 1), datasets.version("batch", 2)
            report = handle.drift(drifted, baseline=base, title="sdk")
            same = handle.drift(("batch", "latest"), baseline=("applications", 1), title="sdk")
            assert same.summary == report.summary and same.id != report.id
            assert handle.report(report.id) == report
            assert report.id in [r.id for r in handle.reports(kind="drift")]
            assert "<!doctype html>" in handle.html(report)
            assert handle.result(report.id).n_drifted == report.summary.n_drifted
            with pytest.raises(NotFoundError, match="has no version 7"):
                handle.drift(("batch", 7), baseline=base)
            with pytest.raises(InvalidInputError, match="neither a DatasetVersion"):
                handle.drift("batch", baseline=base)  # type: ignore[arg-type]
            ids = {"baseline": {"id"}, "current": {"id"}}  # ids differ between the stores
            files = {f.path: f.digest for f in report.files}
            outcomes.append((report.summary, report.inputs.model_dump(exclude=ids), files))
        assert outcomes[0] == outcomes[1]


def test_cli_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = typer.Typer()
    root.add_typer(monitoring_app, name="monitoring")
    home = tmp_path / "cli-home"
    monkeypatch.setattr(_common.STATE, "home", str(home))
    with connect(home=home) as ml:
        ml.project(PROJECT)
        _ingest(ml.backend)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(root, ["monitoring", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    page = tmp_path / "report.html"
    args = ["drift", "batch", "--version", "2", "--baseline", "applications"]
    out = run(*args, "--baseline-version", "1", "-p", PROJECT, "-o", str(page))
    assert "Drift: batch v2 vs applications v1: No drift - 2 of 6 columns drifted" in out
    assert re.search(r"income .*DRIFT", out) and "household" in out
    assert page.read_text().startswith("<!doctype html>")
    report = json.loads(run(*args, "-p", PROJECT, "-c", "income", "--json"))
    assert report["summary"]["verdict"] == "drift" and report["inputs"]["columns"] == ["income"]
    listed = json.loads(run("reports", "list", "-p", PROJECT, "--json"))
    assert listed[0]["id"] == report["id"]
    assert "Reports of benefits" in run("reports", "list", "-p", PROJECT)
    assert "DRIFT DETECTED" in run("reports", "show", report["id"])
    assert json.loads(run("reports", "show", report["id"], "--json")) == report
    with pytest.raises(NotFoundError, match="has no version 5"):
        runner.invoke(
            root, ["monitoring", *args[:3], "5", *args[4:], "-p", PROJECT], catch_exceptions=False
        )
