"""Quality expectations (``civicml.data.quality`` over ``civicml.data.expectations``): every kind
on real data, reports, quarantine at ingestion, the override by role, the training gate, the
pipeline step and hostile input."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import civicml as cm
from civicml.core import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Settings,
)
from civicml.core.identity import Principal
from civicml.data import DatasetService
from civicml.data.expectation_schemas import ExpectationCreate, QualityStatus
from civicml.data.quality import QualityService
from civicml.governance import AuditTrail, LineageService, ProjectService
from civicml.pipelines import steps as st
from civicml.store import Context

P = "benefits"


@pytest.fixture
def quality(ctx: Context) -> QualityService:
    ProjectService(ctx).ensure(P, "projects.read")
    return QualityService(ctx)


def _frame(ctx: Context) -> pd.DataFrame:
    now = ctx.clock.now().replace(tzinfo=None)
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 3, 5],
            "age": [30.0, 150.0, None, 40.0, 22.0],
            "region": ["north", "south", "x", "north", "east"],
            "zip": ["12345", "1234", "54321", "99999", "00000"],
            "updated": [now - timedelta(hours=h) for h in (1, 2, 3, 4, 50)],
        }
    )


def _spec(**fields: object) -> ExpectationCreate:
    return ExpectationCreate.model_validate(fields)


def test_every_kind_reports_failing_counts_and_samples(
    ctx: Context, quality: QualityService
) -> None:
    datasets = DatasetService(ctx)
    datasets.ingest(P, "regions", pd.DataFrame({"region": ["north", "south", "east"]}))
    v = datasets.ingest(P, "apps", _frame(ctx))
    specs = [
        _spec(name="age-range", kind="between", column="age", min=0, max=120),
        _spec(name="age-present", kind="not_null", column="age", blocking=False),
        _spec(name="id-unique", kind="unique", column="id"),
        _spec(name="region-known", kind="in_set", column="region", values=["north", "south"]),
        _spec(name="zip-5", kind="match_regex", column="zip", pattern="^[0-9]{5}$"),
        _spec(name="rows", kind="row_count_between", min=1, max=4),
        _spec(name="fresh", kind="freshness", column="updated", max_age="2d"),
        _spec(name="stale", kind="freshness", column="updated", max_age="30m"),
        _spec(name="region-ref", kind="references", column="region", dataset="regions"),
        _spec(name="no-old-south", kind="sql", sql="SELECT * FROM data WHERE age > 100;"),
        _spec(name="mostly-present", kind="not_null", column="age", mostly=0.8),
    ]
    for spec in specs:
        quality.add(P, "apps", spec)
    report = quality.run(v, sample_rows=1)
    assert report is not None
    got = {r.name: (r.status, r.failing_rows) for r in report.results}
    assert got == {
        "age-range": ("failed", 1),
        "age-present": ("failed", 1),
        "id-unique": ("failed", 2),
        "region-known": ("failed", 2),
        "zip-5": ("failed", 1),
        "rows": ("failed", None),
        "fresh": ("passed", None),
        "stale": ("failed", None),
        "region-ref": ("failed", 1),
        "no-old-south": ("failed", 1),
        "mostly-present": ("passed", 1),
    }
    by_name = {r.name: r for r in report.results}
    assert by_name["age-range"].sample == [
        {**by_name["age-range"].sample[0], "id": 2, "age": 150.0, "region": "south"}
    ]
    assert len(by_name["id-unique"].sample) == 1  # sample_rows caps the sample
    assert report.status is QualityStatus.QUARANTINED
    assert report.failed == 9 and report.blocking_failed == 8
    assert datasets.get_version(P, "apps", 1).quality_status == "quarantined"
    assert quality.report(v) == report
    html = quality.report_html(v).decode()
    assert "age-range" in html and "quarantined" in html and "<script" not in html
    assert LineageService(ctx).get_node("dataset_check", report.id).name.startswith("quality")
    assert [e.action for e in AuditTrail(ctx).list(project=P)][-1] == (
        "dataset_version.quality_checked"
    )


def test_ingest_checks_new_versions_and_quarantine_blocks_training(
    ctx: Context, quality: QualityService
) -> None:
    datasets = DatasetService(ctx)
    good = datasets.ingest(P, "apps", pd.DataFrame({"age": [30, 40]}))
    assert good.quality_status is None  # no expectations yet: nothing to check
    quality.add(P, "apps", _spec(name="adult", kind="between", column="age", min=18))
    quality.add(P, "apps", _spec(name="some", kind="row_count_between", min=3, blocking=False))
    with pytest.raises(ConflictError, match="has not been checked"):
        datasets.check_usable(good)  # blocking expectations now, never checked
    bad = datasets.ingest(P, "apps", pd.DataFrame({"age": [30, 12]}))
    assert bad.quality_status == "quarantined"
    msg = "Dataset version apps v2 is quarantined: a blocking quality expectation failed"
    with pytest.raises(ConflictError, match=re.escape(msg)) as caught:
        datasets.check_usable(bad)
    assert "civicml datasets expect override apps 2" in (caught.value.hint or "")
    warned = datasets.ingest(P, "apps", pd.DataFrame({"age": [30, 50]}))
    assert warned.quality_status == "warned"
    datasets.check_usable(warned)  # only a non-blocking expectation failed

    # the override: not by the data scientist who ingests, by a reviewer, justified, audited
    scientist = QualityService(ctx.as_principal(Principal("dana", frozenset({"data-scientist"}))))
    with pytest.raises(PermissionDeniedError, match=r"datasets\.override_quarantine"):
        scientist.override_quarantine(bad, justification="the minor is a known test record")
    reviewer = QualityService(ctx.as_principal(Principal("rita", frozenset({"reviewer"}))))
    with pytest.raises(InvalidInputError, match="justification"):
        reviewer.override_quarantine(bad, justification="ok")
    released = reviewer.override_quarantine(bad, justification="the minor is a known test record")
    assert released.quality_status == "released"
    datasets.check_usable(released)
    event = AuditTrail(ctx).list(project=P)[-1]
    assert (event.action, event.actor) == ("dataset_version.quarantine_overridden", "rita")
    assert event.after is not None and "known test record" in str(event.after)
    assert quality.run(bad) is not None and datasets.get_version(P, "apps", 2).quality_status == (
        "released"  # the override stands when the same failure is found again
    )
    with pytest.raises(ConflictError, match="is not quarantined"):
        reviewer.override_quarantine(warned, justification="nothing to release here at all")


def test_training_refuses_a_quarantined_version(settings: Settings) -> None:
    with cm.connect(home=settings.home, user="alice") as ml:
        proj = ml.project(P)
        frame = pd.DataFrame({"age": [30, 12] * 10, "y": [0, 1] * 10})
        proj.datasets.ingest("apps", frame)
        proj.datasets.expectations.add("apps", "adult", kind="between", column="age", min=18)
        bad = proj.datasets.ingest("apps", frame.assign(x=1))
        assert bad.quality_status == "quarantined"
        with proj.start_run(experiment="e") as run:
            with pytest.raises(ConflictError, match="quarantined"):
                cm.train.tabular(bad, target="y", run=run, algorithm="logistic")
        report = proj.datasets.expectations.report("apps", bad.version)
        assert report.blocking_failed == 1


def test_hostile_expectations_are_refused_before_they_run(quality: QualityService) -> None:
    DatasetService(quality._ctx).ingest(P, "apps", pd.DataFrame({"email": ["a@b.org"]}))
    refused = {
        "DELETE FROM data": "exactly one SELECT",
        "SELECT 1; SELECT 2": "exactly one SELECT",
        "SELECT * FROM read_csv('/etc/passwd')": "file system operations are disabled",
        "SELECT nope FROM data": 'column "nope" not found',
        "ATTACH 'x.db'": "exactly one SELECT",
        "SELECT * FROM": "not valid SQL",
    }
    for sql, message in refused.items():
        with pytest.raises(InvalidInputError, match=re.escape(message)):
            quality.add(P, "apps", _spec(name="s", kind="sql", sql=sql))
    with pytest.raises(InvalidInputError, match="not a valid RE2"):
        quality.add(
            P, "apps", _spec(name="r", kind="match_regex", column="email", pattern="(?<=a)b")
        )
    with pytest.raises(InvalidInputError, match="'nope' is not in the dataset"):
        quality.add(P, "apps", _spec(name="n", kind="not_null", column="nope"))
    with pytest.raises(ValueError, match="needs values"):
        _spec(name="v", kind="in_set", column="email")
    with pytest.raises(ValueError, match="at most 500"):
        _spec(name="v", kind="match_regex", column="email", pattern="a" * 501)
    # a catastrophic pattern for a backtracking engine runs in linear time under RE2
    quality.add(
        P, "apps", _spec(name="redos", kind="match_regex", column="email", pattern="^(a+)+$")
    )
    v = DatasetService(quality._ctx).ingest(P, "apps", pd.DataFrame({"email": ["a" * 5000 + "!"]}))
    assert v.quality_status == "quarantined"
    assert quality.list(P, "apps")[0].name == "redos"
    with pytest.raises(ConflictError, match="already has an expectation"):
        quality.add(P, "apps", _spec(name="REDOS", kind="not_null", column="email"))
    quality.remove(P, "apps", "redos")
    with pytest.raises(NotFoundError, match="no expectation 'redos'"):
        quality.remove(P, "apps", "redos")


def test_an_expectation_that_cannot_run_is_an_error_not_a_crash(quality: QualityService) -> None:
    datasets = DatasetService(quality._ctx)
    datasets.ingest(P, "apps", pd.DataFrame({"age": [1]}))
    quality.add(P, "apps", _spec(name="a", kind="between", column="age", min=0))
    v2 = datasets.ingest(P, "apps", pd.DataFrame({"other": [1]}))  # the column is gone
    report = quality.report(v2)
    assert [(r.status, r.message) for r in report.results] == [
        ("error", "Column 'age' is not in this version.")
    ]
    assert v2.quality_status == "quarantined"


def test_permissions(ctx: Context, quality: QualityService) -> None:
    v = DatasetService(ctx).ingest(P, "apps", pd.DataFrame({"age": [1]}))
    viewer = QualityService(ctx.as_principal(Principal("val", frozenset({"viewer"}))))
    with pytest.raises(PermissionDeniedError, match=r"datasets\.write"):
        viewer.add(P, "apps", _spec(name="a", kind="not_null", column="age"))
    with pytest.raises(PermissionDeniedError, match=r"datasets\.write"):
        viewer.run(v)
    assert viewer.list(P, "apps") == []
    nobody = QualityService(ctx.as_principal(Principal("eve", frozenset())))
    with pytest.raises(NotFoundError):
        nobody.list(P, "apps")
    with pytest.raises(NotFoundError):
        nobody.report(v)


@cm.pipeline(name="checked")
def checked(source: str = "") -> None:
    data = st.validate(st.ingest("apps", source))
    st.train(data, "y", algorithm="logistic")


def test_validate_pipeline_step_fails_on_a_quarantined_version(
    settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "apps.csv"
    pd.DataFrame({"age": [30, 12] * 10, "y": [0, 1] * 10}).to_csv(source, index=False)
    with cm.connect(home=settings.home, user="alice") as ml:
        ml.project(P)  # created
        ok = ml.pipelines.run(checked, project=P, params={"source": str(source)})
        assert ok.status.value == "succeeded"
        ml.project(P).datasets.expectations.add(
            "apps", "adult", kind="between", column="age", min=18
        )
        failed = ml.pipelines.run(checked, project=P, params={"source": str(source)})
        assert failed.status.value == "failed"
        assert {s.step: s.status.value for s in failed.steps}["train"] == "skipped"
        report = ml.project(P).datasets.expectations.report("apps", 1)
        assert (report.trigger, report.status.value) == ("pipeline", "quarantined")


def test_a_check_that_breaks_at_ingestion_leaves_the_version_unchecked(
    ctx: Context, quality: QualityService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civicml.data.personal import PersonalDataService

    datasets = DatasetService(ctx)
    datasets.ingest(P, "apps", pd.DataFrame({"age": [30]}))
    quality.add(P, "apps", _spec(name="adult", kind="between", column="age", min=18))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(QualityService, "run", broken)
    monkeypatch.setattr(PersonalDataService, "scan", broken)
    v = datasets.ingest(P, "apps", pd.DataFrame({"age": [40]}))  # ingestion itself succeeds
    assert (v.quality_status, v.classification) == (None, None)
    with pytest.raises(ConflictError, match="has not been checked"):
        datasets.check_usable(v)  # unchecked is never taken for passed
    monkeypatch.undo()
    assert quality.run(v) is not None
    datasets.check_usable(v)


def test_an_ingest_writes_a_plaintext_copy_only_for_the_expectations_that_read_it(
    ctx: Context, quality: QualityService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without expectations nothing reads a local copy of the new file after recording (the
    personal-data scan reads rows gathered while writing), so none is written and none is made
    from the store; with expectations the ingest keeps its copy and checks it."""
    from civicml.data import _checks, checks, service

    dests: list[Any] = []
    copies: list[str] = []
    write, plaintext = service.write_canonical, _checks.plaintext

    def spy_write(source: Any, dest: Any, **kwargs: Any) -> Any:
        dests.append(dest)
        return write(source, dest, **kwargs)

    def spy_plaintext(c: Context, digest: str) -> Any:
        copies.append(digest)
        return plaintext(c, digest)

    monkeypatch.setattr(service, "write_canonical", spy_write)
    monkeypatch.setattr(checks._checks, "plaintext", spy_plaintext)
    datasets = DatasetService(ctx)
    plain = datasets.ingest(P, "apps", pd.DataFrame({"age": [30, 40], "email": ["a@b.org"] * 2}))
    assert dests == [None] and copies == []
    assert datasets.read(plain).num_rows == 2  # stored all the same
    assert plain.classification is not None  # and scanned

    quality.add(P, "apps", _spec(name="adult", kind="between", column="age", min=18))
    bad = datasets.ingest(P, "apps", pd.DataFrame({"age": [30, 12], "email": ["a@b.org"] * 2}))
    assert dests[1] is not None and copies == []  # the ingest's own copy
    assert bad.quality_status == "quarantined"


def test_checks_of_a_version_without_its_copy_make_one_from_the_store(
    ctx: Context, quality: QualityService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """after_ingest without a local file makes one plaintext copy from the store when a check
    reads the file (expectations, or a scan without gathered rows), shared by both; none when
    nothing does."""
    import dataclasses

    from civicml.data import _checks, checks

    copies: list[str] = []
    plaintext = _checks.plaintext

    def spy_plaintext(c: Context, digest: str) -> Any:
        copies.append(digest)
        return plaintext(c, digest)

    datasets = DatasetService(ctx)
    v1 = datasets.ingest(P, "apps", pd.DataFrame({"age": [30, 12]}))
    monkeypatch.setattr(checks._checks, "plaintext", spy_plaintext)
    unscanned = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"datasets_pii_scan": False})
    )
    assert checks.after_ingest(unscanned, v1).quality_status is None  # nothing reads the file
    assert copies == []
    quality.add(P, "apps", _spec(name="adult", kind="between", column="age", min=18))
    assert checks.after_ingest(ctx, v1).quality_status == "quarantined"
    assert copies == [v1.digest]  # one copy for the scan and the expectations
