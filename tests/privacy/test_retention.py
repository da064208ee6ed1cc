"""Retention: expired dataset versions and capture files are deleted, except under a legal hold;
the scheduler's pass runs once per interval; permissions are checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from civicml.core import FrozenClock, PermissionDeniedError
from civicml.core.identity import Principal
from civicml.data import DatasetService
from civicml.governance.projects import ProjectService
from civicml.pipelines.scheduler import Scheduler
from civicml.privacy import RetentionLoop, RetentionService, RuleService
from civicml.serving import CaptureService, CaptureWriter, EndpointService, ModelHost
from civicml.store import Context
from tests.privacy.helpers import applications
from tests.serving.helpers import MODEL, records, register

P = "benefits"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Context:
    """The same tests on SQLite and on the real PostgreSQL."""
    return request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")  # type: ignore[no-any-return]


@pytest.fixture
def world(store: Context, clock: FrozenClock, model_dir: Path) -> Iterator[ModelHost]:
    ProjectService(store).create(P)
    data = DatasetService(store)
    data.ingest(P, "applications", applications(1, 10), progress=False)  # day 0
    host = ModelHost(store, capture=CaptureWriter(store, max_age_s=3600))
    register(store, model_dir)
    EndpointService(store, host).deploy(P, "web", MODEL, 1, capture_percent=100)
    host.invoke(P, "web", records(2))  # day 0
    host.capture.flush()
    clock.advance(days=40)
    data.ingest(P, "applications", applications(1, 12), progress=False)  # day 40
    host.invoke(P, "web", records(3))  # day 40
    host.capture.flush()
    yield host
    host.close()


def test_expired_versions_and_captures_are_deleted(store: Context, world: ModelHost) -> None:
    rules = RuleService(store)
    rules.set_retention(P, "dataset", "applications", 30)
    rules.set_retention(P, "endpoint", "web", 30)
    [v1, v2] = DatasetService(store).list_versions(P, "applications")
    old_files = CaptureService(store).files(P, "web")
    assert len(old_files) == 2
    result = RetentionService(store).enforce(P)
    assert result.expired_versions == [f"{P}/applications v1"]
    assert result.expired_capture_files == 1
    assert result.bytes_deleted == 4 and result.held == []  # v1, its PII report (2), a capture
    assert not store.artifacts.exists(v1.digest) and store.artifacts.exists(v2.digest)
    [kept] = CaptureService(store).files(P, "web")
    assert kept.digest == old_files[1].digest and not store.artifacts.exists(old_files[0].digest)
    assert len(CaptureService(store).to_frame(P, "web")) == 3
    again = RetentionService(store).enforce(P)  # nothing more to do
    assert again.expired_versions == [] and again.expired_capture_files == 0
    from civicml.governance.audit import AuditTrail

    assert AuditTrail(store).verify().ok


def test_a_legal_hold_exempts_a_target(store: Context, world: ModelHost) -> None:
    rules = RuleService(store)
    rules.set_retention(P, "dataset", "applications", 30)
    rules.set_retention(P, "endpoint", "web", 30)
    held = rules.hold(P, "dataset", "applications", "case 2026-114")
    assert held.legal_hold and held.days == 30
    result = RetentionService(store).enforce(P)
    assert result.expired_versions == [] and result.expired_capture_files == 1
    assert result.held == [f"dataset {P}/applications"]
    rules.release(P, "dataset", "applications")
    assert RetentionService(store).enforce(P).expired_versions == [f"{P}/applications v1"]
    listed = rules.list(P)
    assert [(r.kind.value, r.name, r.days, r.legal_hold) for r in listed] == [
        ("dataset", "applications", 30, False),
        ("endpoint", "web", 30, False),
    ]


def test_the_scheduler_runs_one_pass_per_interval(store: Context, world: ModelHost) -> None:
    RuleService(store).set_retention(P, "dataset", "applications", 30)
    first = RetentionLoop(store, name="a")
    second = RetentionLoop(store, name="b")
    result = first.run_once()
    assert result is not None and result.expired_versions == [f"{P}/applications v1"]
    assert second.run_once() is None  # this interval's pass is taken
    scheduler = Scheduler(store, interval_s=1, lease_s=5)
    assert scheduler.retention is not None
    scheduler.run_once(timeout_s=30)  # its pass: the same interval, already run
    scheduler.stop()


def test_retention_needs_its_permission(store: Context, world: ModelHost) -> None:
    ProjectService(store).grant(P, "val", "data-scientist")
    other = store.as_principal(Principal(user="val", roles=frozenset()))
    with pytest.raises(PermissionDeniedError, match=r"privacy\.retention"):
        RuleService(other).set_retention(P, "dataset", "applications", 30)
    with pytest.raises(PermissionDeniedError, match=r"privacy\.retention"):
        RuleService(other).hold(P, "endpoint", "web", "case")
    with pytest.raises(PermissionDeniedError, match=r"privacy\.retention"):
        RetentionService(other).enforce(P)
    assert RuleService(other).list(P) == []  # reading takes datasets.read
