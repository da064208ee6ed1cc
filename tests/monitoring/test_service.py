"""Tests of ``civicml.monitoring.service``: drift reports stored, in lineage and audited."""

from __future__ import annotations

import re

import numpy as np
import pytest

from civicml.core import FrozenClock, InvalidInputError, NotFoundError
from civicml.data import DatasetService, DatasetVersion
from civicml.governance import AuditTrail, LineageService, ProjectService
from civicml.monitoring import DriftReport, MonitoringService, Report
from civicml.store import Context
from tests.monitoring.conftest import make_frame

PROJECT = "benefits"


@pytest.fixture
def versions(ctx: Context, rng: np.random.Generator) -> dict[str, DatasetVersion]:
    """A baseline, an undrifted and a drifted batch of benefit applications."""
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    data = DatasetService(ctx)
    baseline = make_frame(rng, 800, drifted=False)
    stable = make_frame(rng, 600, drifted=False)
    drifted = make_frame(rng, 600, drifted=True)
    return {
        "baseline": data.ingest(PROJECT, "applications", baseline, progress=False),
        "stable": data.ingest(PROJECT, "batch", stable, progress=False),
        "drifted": data.ingest(PROJECT, "batch", drifted, progress=False),
    }


@pytest.fixture
def svc(ctx: Context) -> MonitoringService:
    return MonitoringService(ctx)


def test_drifted_batch_is_reported_stored_and_recorded(
    ctx: Context, svc: MonitoringService, versions: dict[str, DatasetVersion]
) -> None:
    base, cur = versions["baseline"], versions["drifted"]
    # income and region drift: 2 of 6 columns, a dataset drift at drift_share 0.3.
    report = svc.drift(
        PROJECT, current=("batch", 2), baseline=("applications", "latest"), drift_share=0.3
    )

    assert report.kind == "drift" and report.project == PROJECT
    assert report.title == "Drift: batch v2 vs applications v1"
    assert report.created_by == "alice" and report.created_at == ctx.clock.now()
    s = report.summary
    assert s.verdict == "drift" and s.dataset_drift
    assert s.drifted_columns == ["income", "region"] and report.inputs.drift_share == 0.3
    assert (s.n_columns, s.n_drifted) == (6, len(s.drifted_columns))
    assert report.inputs.baseline.id == base.id and report.inputs.current.id == cur.id
    assert (report.inputs.current.version, report.inputs.current.rows) == (2, 600)

    # The files: stored content-addressed, named under the report, readable and verified.
    assert [f.path for f in report.files] == ["report.html", "report.json"]
    assert {f.owner_kind for f in report.files} == {"report"}
    with svc.open_report_file(report.id, "report.json") as handle:
        stored = DriftReport.model_validate_json(handle.read())
    assert stored.dataset_drift and stored.n_drifted == s.n_drifted
    assert svc.read_report(report.id) == stored
    with svc.open_report_file(report.id, "report.html") as handle:
        html = handle.read().decode()
    assert html.startswith("<!doctype html>") and "Dataset drift detected" in html
    assert "Drift: batch v2 vs applications v1" in html
    for f in report.files:
        assert ctx.artifacts.exists(f.digest)

    # Lineage: both dataset versions contributed to the report.
    graph = LineageService(ctx).query("report", report.id, direction="upstream")
    assert {(n.kind, n.ref) for n in graph.nodes} == {
        ("report", report.id),
        ("dataset_version", base.id),
        ("dataset_version", cur.id),
    }
    assert {e.kind for e in graph.edges} == {"ContributedTo"}
    assert len(graph.edges) == 2

    # Audit: one event with the verdict, and the chain still verifies.
    event = AuditTrail(ctx).list(project=PROJECT)[-1]
    assert (event.action, event.entity_kind, event.entity_id) == (
        "report.created",
        "report",
        report.id,
    )
    after = event.after or {}
    assert after["verdict"] == "drift" and after["current"] == "batch v2"
    assert AuditTrail(ctx).verify().ok

    assert svc.get_report(report.id) == report
    assert svc.list_reports(PROJECT) == [report]


def test_undrifted_batch(svc: MonitoringService, versions: dict[str, DatasetVersion]) -> None:
    report = svc.drift(
        PROJECT, current=("batch", 1), baseline=("applications", 1), title="Q1 check"
    )
    assert report.summary.verdict == "no_drift" and not report.summary.dataset_drift
    assert report.title == "Q1 check"
    assert report.summary.violations == 0 and report.summary.violation_types == {}


def test_columns_restrict_the_comparison(
    svc: MonitoringService, versions: dict[str, DatasetVersion]
) -> None:
    report = svc.drift(
        PROJECT,
        current=("batch", 2),
        baseline=("applications", 1),
        columns=["household", "income"],
    )
    assert report.inputs.columns == ["household", "income"]
    assert report.summary.n_columns == 2 and report.summary.drifted_columns == ["income"]
    assert [c.column for c in svc.read_report(report.id).columns] == ["household", "income"]


def test_mismatched_columns_are_violations_not_errors(
    ctx: Context,
    svc: MonitoringService,
    versions: dict[str, DatasetVersion],
    rng: np.random.Generator,
) -> None:
    renamed = make_frame(rng, 600, drifted=False).drop(columns=["urban"]).assign(postcode="1234")
    DatasetService(ctx).ingest(PROJECT, "renamed", renamed, progress=False)
    report = svc.drift(PROJECT, current=("renamed", 1), baseline=("applications", 1))
    assert report.summary.n_columns == 5  # the shared columns
    assert report.summary.violation_types == {
        "missing_column_check": 1,
        "extra_column_check": 1,
    }
    violations = svc.read_report(report.id).violations
    assert {(v.feature_name, v.constraint_check_type) for v in violations} == {
        ("urban", "missing_column_check"),
        ("postcode", "extra_column_check"),
    }


def test_list_filters_and_orders(
    clock: FrozenClock, svc: MonitoringService, versions: dict[str, DatasetVersion]
) -> None:
    first = svc.drift(PROJECT, current=("batch", 1), baseline=("applications", 1))
    clock.advance(minutes=1)
    second = svc.drift(PROJECT, current=("batch", 2), baseline=("applications", 1))
    assert [r.id for r in svc.list_reports(PROJECT)] == [second.id, first.id]
    assert [r.id for r in svc.list_reports(PROJECT, kind="drift")] == [second.id, first.id]
    with pytest.raises(InvalidInputError, match=re.escape("Report kind 'fairness' is not known.")):
        svc.list_reports(PROJECT, kind="fairness")


@pytest.mark.parametrize(
    ("current", "baseline", "error", "message", "hint"),
    [
        (
            ("batch", 9),
            ("applications", 1),
            NotFoundError,
            "Dataset 'batch' of project 'benefits' has no version 9.",
            "civicml datasets versions batch -p benefits",
        ),
        (
            ("batch", 1),
            ("aplications", 1),
            NotFoundError,
            "Dataset 'aplications' does not exist in project 'benefits'.",
            "Did you mean 'applications'?",
        ),
        (
            ("batch", "newest"),
            ("applications", 1),
            InvalidInputError,
            "Dataset version 'newest' is not valid.",
            "'latest'",
        ),
        (
            ("batch",),
            ("applications", 1),
            InvalidInputError,
            "The current dataset version ('batch',) is not (dataset name, version).",
            "('applications', 1)",
        ),
    ],
)
def test_bad_selectors(
    svc: MonitoringService,
    versions: dict[str, DatasetVersion],
    current: tuple[str, int],
    baseline: tuple[str, int],
    error: type[Exception],
    message: str,
    hint: str,
) -> None:
    with pytest.raises(error, match=re.escape(message)) as info:
        svc.drift(PROJECT, current=current, baseline=baseline)
    assert hint in (getattr(info.value, "hint", None) or "")


def test_unknown_project_column_and_report(
    svc: MonitoringService, versions: dict[str, DatasetVersion], ctx: Context
) -> None:
    with pytest.raises(NotFoundError, match=re.escape("Project 'benefit' does not exist.")):
        svc.drift("benefit", current=("batch", 1), baseline=("applications", 1))
    with pytest.raises(
        InvalidInputError, match=re.escape("Column 'incme' is not in applications v1.")
    ) as info:
        svc.drift(PROJECT, current=("batch", 1), baseline=("applications", 1), columns=["incme"])
    assert info.value.hint == "Did you mean 'income'?"
    with pytest.raises(NotFoundError, match=re.escape("Report 'nope' does not exist.")) as found:
        svc.get_report("nope")
    assert "civicml monitoring reports list" in (found.value.hint or "")
    with pytest.raises(InvalidInputError, match=re.escape("Reports have no file 'model.pkl'.")):
        svc.open_report_file("nope", "model.pkl")
    with pytest.raises(NotFoundError, match="does not exist"):
        svc.open_report_file("nope", "report.html")
    assert svc.list_reports(PROJECT) == []  # nothing was recorded by the failures


def test_no_shared_columns_is_an_error(
    ctx: Context, svc: MonitoringService, versions: dict[str, DatasetVersion]
) -> None:
    import pandas as pd

    DatasetService(ctx).ingest(PROJECT, "other", pd.DataFrame({"x": [1, 2, 3]}), progress=False)
    with pytest.raises(InvalidInputError, match="have no column in common"):
        svc.drift(PROJECT, current=("other", 1), baseline=("applications", 1))


def test_report_schema_round_trips(
    svc: MonitoringService, versions: dict[str, DatasetVersion]
) -> None:
    report = svc.drift(PROJECT, current=("batch", 1), baseline=("applications", 1))
    assert Report.model_validate_json(report.model_dump_json()) == report
    for name, info in Report.model_fields.items():
        assert info.description, name
