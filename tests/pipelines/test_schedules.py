"""Schedules and triggers: cron with an injected clock, catch-up of one, deadlines, pause,
every event kind with parameters from the event, the module allowlist, permissions, failures,
takeover after a crash, and two schedulers on one database firing everything exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select, update

from civicml.core import FrozenClock, Principal
from civicml.core.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.core.settings import Settings
from civicml.data import DatasetService
from civicml.governance._tables import audit_events
from civicml.governance.projects import ProjectService
from civicml.monitoring.service import MonitoringService
from civicml.pipelines._tables import (
    pipeline_executions,
    pipeline_schedules,
    schedule_firings,
    scheduler_cursors,
)
from civicml.pipelines.schedule_schemas import Firing, FiringStatus, ScheduleCreate
from civicml.pipelines.scheduler import Scheduler
from civicml.pipelines.schedules import ScheduleService, firing_principal
from civicml.registry import RegistryService
from civicml.store import Context, MetadataStore
from civicml.store.artifacts import artifact_store_for
from tests.pipelines import scheduled

PROJECT = "benefits"
ECHO = "tests.pipelines.scheduled:echo"
ALLOWED = ["tests.pipelines.scheduled"]
START = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def _context(settings: Settings, clock: FrozenClock, user: str = "alice") -> Context:
    return Context(
        db=MetadataStore(settings.database_url),
        artifacts=artifact_store_for(settings),
        principal=Principal(user=user, roles=frozenset({"admin"})),
        settings=settings,
        clock=clock,
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def sched_settings(tmp_path: Path) -> Settings:
    return Settings.load(home=tmp_path / "home", pipeline_modules=ALLOWED)


@pytest.fixture
def sctx(sched_settings: Settings, clock: FrozenClock) -> Iterator[Context]:
    context = _context(sched_settings, clock)
    ProjectService(context).create(PROJECT)
    yield context
    context.db.close()


@pytest.fixture(autouse=True)
def _calls() -> None:
    with scheduled.LOCK:
        scheduled.CALLS.clear()


def _create(ctx: Context, name: str, **fields: Any) -> Any:
    fields.setdefault("pipeline", ECHO)
    return ScheduleService(ctx).create(PROJECT, ScheduleCreate(name=name, **fields))


def _firings(ctx: Context, name: str) -> list[Firing]:
    return ScheduleService(ctx).firings(PROJECT, name)


def _scheduler(ctx: Context, name: str = "s1") -> Scheduler:
    return Scheduler(ctx, name=name, interval_s=1, lease_s=60)


def _ingest(ctx: Context, name: str, rows: int = 40, offset: int = 0) -> Any:
    data = pd.DataFrame({"x": [float(i + offset) for i in range(rows)]})
    return DatasetService(ctx).ingest(PROJECT, name, data, progress=False)


def _executions(ctx: Context) -> int:
    with ctx.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(pipeline_executions)).scalar())


# Cron ---------------------------------------------------------------------------------------
def test_cron_fires_each_instant_once_with_an_injected_clock(
    sctx: Context, clock: FrozenClock
) -> None:
    created = _create(sctx, "ten-min", cron="*/10 * * * *", params={"tag": "{event.fire_at}"})
    assert created.next_fire_at == datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    scheduler = _scheduler(sctx)
    try:
        clock.advance(minutes=5)
        assert scheduler.run_once() == []  # 00:05:30: nothing due
        clock.advance(minutes=5)  # 00:10:30
        assert len(scheduler.run_once()) == 1
        assert scheduler.run_once() == []  # the same instant never twice
        clock.advance(seconds=570)  # 00:20:00 exactly: the instant itself is due
        assert len(scheduler.run_once()) == 1
    finally:
        scheduler.stop(wait=True)
    firings = _firings(sctx, "ten-min")
    assert [f.fire_key for f in firings] == ["2026-01-01T00:20:00Z", "2026-01-01T00:10:00Z"]
    assert all(f.status is FiringStatus.SUCCEEDED and f.execution_id for f in firings)
    assert [c[0] for c in scheduled.CALLS] == ["2026-01-01T00:10:00Z", "2026-01-01T00:20:00Z"]
    after = ScheduleService(sctx).get(PROJECT, "ten-min")
    assert after.next_fire_at == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


def test_cron_in_a_time_zone(sctx: Context, clock: FrozenClock) -> None:
    created = _create(sctx, "berlin-two", cron="0 2 * * *", timezone="Europe/Berlin")
    assert created.next_fire_at == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)  # 02:00 CET


def test_missed_instants_fire_once_for_the_latest(sctx: Context, clock: FrozenClock) -> None:
    _create(sctx, "hourly", cron="0 * * * *")
    clock.advance(hours=5, minutes=20)  # 01:00 … 05:00 missed while no scheduler ran
    scheduler = _scheduler(sctx)
    try:
        assert len(scheduler.run_once()) == 1
        assert scheduler.run_once() == []
    finally:
        scheduler.stop(wait=True)
    firings = _firings(sctx, "hourly")
    assert [f.fire_key for f in firings] == ["2026-01-01T05:00:00Z"]  # no burst
    assert ScheduleService(sctx).get(PROJECT, "hourly").next_fire_at == datetime(
        2026, 1, 1, 6, 0, tzinfo=UTC
    )


def test_a_starting_deadline_skips_a_late_instant(sctx: Context, clock: FrozenClock) -> None:
    _create(sctx, "strict", cron="0 * * * *", starting_deadline_s=300)
    clock.advance(hours=2, minutes=10)  # 02:00 missed by 10.5 minutes
    scheduler = _scheduler(sctx)
    try:
        assert scheduler.run_once() == []
        clock.advance(minutes=50)  # 03:00:30: on time
        assert len(scheduler.run_once()) == 1
    finally:
        scheduler.stop(wait=True)
    late, skipped = _firings(sctx, "strict")
    assert (skipped.fire_key, skipped.status) == ("2026-01-01T02:00:00Z", FiringStatus.SKIPPED)
    assert skipped.execution_id is None and "starting_deadline_s" in (skipped.error or "")
    assert late.status is FiringStatus.SUCCEEDED
    assert len(scheduled.CALLS) == 1


def test_pause_and_resume(sctx: Context, clock: FrozenClock) -> None:
    service = ScheduleService(sctx)
    _create(sctx, "paused-cron", cron="*/5 * * * *")
    _create(
        sctx,
        "paused-event",
        event="dataset_version.created",
        params={"dataset": "{event.dataset}"},
    )
    assert service.pause(PROJECT, "paused-cron").enabled is False
    service.pause(PROJECT, "paused-event")
    scheduler = _scheduler(sctx)
    try:
        clock.advance(minutes=20)
        _ingest(sctx, "while-paused")
        assert scheduler.run_once() == []
        resumed = service.resume(PROJECT, "paused-cron")
        service.resume(PROJECT, "PAUSED-EVENT")  # names are found regardless of case
        assert resumed.enabled and resumed.next_fire_at == datetime(2026, 1, 1, 0, 25, tzinfo=UTC)
        assert scheduler.run_once() == []  # nothing missed while paused fires later
        _ingest(sctx, "after-resume")
        clock.advance(minutes=5)
        assert len(scheduler.run_once()) == 2
    finally:
        scheduler.stop(wait=True)
    assert [f.fire_key for f in _firings(sctx, "paused-cron")] == ["2026-01-01T00:25:00Z"]
    assert [f.parameters for f in _firings(sctx, "paused-event")] == [{"dataset": "after-resume"}]


# Events -------------------------------------------------------------------------------------
def test_a_new_dataset_version_fires_with_parameters_from_the_event(sctx: Context) -> None:
    _ingest(sctx, "claims")  # before the schedule: never fires it
    _create(
        sctx,
        "on-claims",
        event="dataset_version.created",
        match={"dataset": "claims"},
        params={
            "dataset": "{event.dataset}",
            "version": "{event.version}",
            "tag": "v{event.version}",
        },
    )
    _ingest(sctx, "payments")  # another dataset: filtered out
    second = _ingest(sctx, "claims", offset=1)
    scheduler = _scheduler(sctx)
    try:
        assert len(scheduler.run_once()) == 1
        assert scheduler.run_once() == []
    finally:
        scheduler.stop(wait=True)
    (firing,) = _firings(sctx, "on-claims")
    assert firing.parameters == {"dataset": "claims", "version": 2, "tag": "v2"}
    assert firing.event is not None and firing.event["dataset_version_id"] == second.id
    assert firing.status is FiringStatus.SUCCEEDED
    assert scheduled.CALLS == [("v2", "claims", 2)]


def test_a_drift_report_with_verdict_drift_fires(sctx: Context) -> None:
    _ingest(sctx, "baseline")
    _ingest(sctx, "current", offset=1000)
    _ingest(sctx, "tiny", rows=5)
    _create(
        sctx,
        "on-drift",
        event="report.created",
        match={"verdict": "drift"},
        params={"dataset": "{event.current_dataset}", "version": "{event.current_version}"},
    )
    monitoring = MonitoringService(sctx)
    monitoring.drift(PROJECT, current=("tiny", 1), baseline=("baseline", 1))  # insufficient
    report = monitoring.drift(PROJECT, current=("current", 1), baseline=("baseline", 1))
    scheduler = _scheduler(sctx)
    try:
        assert len(scheduler.run_once()) == 1
    finally:
        scheduler.stop(wait=True)
    (firing,) = _firings(sctx, "on-drift")
    assert firing.parameters == {"dataset": "current", "version": 1}
    assert firing.event is not None
    assert (firing.event["report_id"], firing.event["verdict"]) == (report.id, "drift")


def test_model_registered_and_approved_fire(sctx: Context) -> None:
    _create(
        sctx,
        "on-register",
        event="model_version.registered",
        match={"model": "eligibility"},
        params={"dataset": "{event.model}", "version": "{event.version}"},
    )
    _create(
        sctx,
        "on-approve",
        event="model_version.approval_changed",
        match={"model": "eligibility", "approval_status": "Approved"},
        params={"tag": "{event.previous_status}", "version": "{event.version}"},
    )
    digest = sctx.artifacts.put_bytes(b"model-bytes").digest
    trainer = RegistryService(sctx.as_principal(Principal(user="trainer")))
    trainer.register(PROJECT, "eligibility", artifacts={"model.pkl": digest})
    trainer.register(PROJECT, "other-model", artifacts={"model.pkl": digest})
    registry = RegistryService(sctx)  # alice approves: she did not register it
    registry.approve(PROJECT, "eligibility", 1, "meets the policy")
    registry.reject(PROJECT, "eligibility", 1, "changed my mind")  # not Approved: no firing
    scheduler = _scheduler(sctx)
    try:
        assert len(scheduler.run_once()) == 2
    finally:
        scheduler.stop(wait=True)
    (registered,) = _firings(sctx, "on-register")
    assert registered.parameters == {"dataset": "eligibility", "version": 1}
    (approved,) = _firings(sctx, "on-approve")
    assert approved.parameters == {"tag": "PendingManualApproval", "version": 1}
    assert approved.event is not None and approved.event["actor"] == "alice"


def test_a_restarted_scheduler_neither_misses_nor_repeats_events(
    sched_settings: Settings, sctx: Context, clock: FrozenClock
) -> None:
    _create(sctx, "each", event="dataset_version.created", params={"dataset": "{event.dataset}"})
    _ingest(sctx, "a")
    first = _scheduler(sctx, "first")
    assert len(first.run_once()) == 1
    first.stop(wait=True)
    _ingest(sctx, "b")  # while no scheduler runs
    other = _context(sched_settings, clock)  # a new process
    try:
        second = _scheduler(other, "second")
        assert len(second.run_once()) == 1
        assert second.run_once() == []
        second.stop(wait=True)
        with other.db.read() as conn:
            cursor = conn.execute(select(scheduler_cursors)).one()
    finally:
        other.db.close()
    assert [c[1] for c in scheduled.CALLS] == ["a", "b"]
    assert cursor.name == "events" and cursor.updated_by == "second"


# Refusals -----------------------------------------------------------------------------------
def test_a_module_outside_pipeline_modules_is_refused(sctx: Context, clock: FrozenClock) -> None:
    with pytest.raises(ConfigurationError, match="pipeline_modules") as info:
        _create(sctx, "evil", cron="@daily", pipeline="os:system")
    assert "CIVICML_PIPELINE_MODULES" in (info.value.hint or "")
    with pytest.raises(ConfigurationError, match="pipeline_modules"):  # prefix, not substring
        _create(sctx, "near", cron="@daily", pipeline="tests.pipelines.scheduled_evil:echo")
    with pytest.raises(InvalidInputError, match=r"package\.module:function"):
        _create(sctx, "file", cron="@daily", pipeline="pipelines/x.py:echo")
    with pytest.raises(InvalidInputError, match=r"not a @cm\.pipeline"):
        _create(sctx, "plain", cron="@daily", pipeline="tests.pipelines.scheduled:not_a_pipeline")
    assert ScheduleService(sctx).list(PROJECT) == []


def test_a_module_removed_from_the_allowlist_is_refused_at_firing(
    sctx: Context, tmp_path: Path, clock: FrozenClock
) -> None:
    _create(sctx, "soon", cron="* * * * *")
    narrowed = Settings.load(home=sctx.settings.home, pipeline_modules=["agency_pipelines"])
    other = _context(narrowed, clock)
    try:
        clock.advance(minutes=1)
        scheduler = _scheduler(other)
        assert len(scheduler.run_once()) == 1
        scheduler.stop(wait=True)
    finally:
        other.db.close()
    (firing,) = _firings(sctx, "soon")
    assert firing.status is FiringStatus.FAILED and "pipeline_modules" in (firing.error or "")
    assert scheduled.CALLS == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "five fields"),
        ({"cron": "* * * * * *"}, "five fields"),
        ({"cron": "@daily", "timezone": "Mars/Olympus"}, "IANA"),
        ({"event": "dataset_version.created", "match": {"datset": "x"}}, "field 'datset'"),
        ({"event": "dataset_version.created", "params": {"dataset": "{event.nope}"}}, "nope"),
        ({"cron": "@daily", "params": {"dataset": "{event.dataset}"}}, "dataset"),
        ({"cron": "@daily", "params": {"rows": 3}}, "no parameter 'rows'"),
        ({"cron": "@daily", "pipeline": "tests.pipelines.scheduled:needs"}, "needs a value"),
        ({"cron": "@daily", "match": {"x": 1}}, "no event to match"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(
    sctx: Context, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _create(sctx, "bad", **fields)


def test_exactly_one_trigger_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one of cron and event"):
        ScheduleCreate(name="x", pipeline=ECHO)
    with pytest.raises(ValueError, match="exactly one of cron and event"):
        ScheduleCreate(name="x", pipeline=ECHO, cron="@daily", event="report.created")


def test_names_are_unique_and_missing_ones_suggest_close_names(sctx: Context) -> None:
    _create(sctx, "nightly", cron="@daily")
    with pytest.raises(ConflictError, match="conflicts with the existing schedule 'nightly'"):
        _create(sctx, "NIGHTLY", cron="@daily")
    with pytest.raises(NotFoundError) as info:
        ScheduleService(sctx).get(PROJECT, "nightli")
    assert info.value.hint == "Did you mean 'nightly'?"
    removed = ScheduleService(sctx).delete(PROJECT, "nightly")
    assert removed.name == "nightly" and ScheduleService(sctx).list(PROJECT) == []


def test_a_viewer_may_list_but_not_create_pause_or_remove(sctx: Context) -> None:
    _create(sctx, "nightly", cron="@daily")
    ProjectService(sctx).grant(PROJECT, "val", "viewer")
    viewer = ScheduleService(sctx.as_principal(Principal(user="val", roles=frozenset())))
    assert [s.name for s in viewer.list(PROJECT)] == ["nightly"]
    assert viewer.firings(PROJECT, "nightly") == []
    for attempt in (
        lambda: viewer.create(PROJECT, ScheduleCreate(name="x", pipeline=ECHO, cron="@daily")),
        lambda: viewer.pause(PROJECT, "nightly"),
        lambda: viewer.resume(PROJECT, "nightly"),
        lambda: viewer.delete(PROJECT, "nightly"),
    ):
        with pytest.raises(PermissionDeniedError, match=r"experiments\.write"):
            attempt()
    stranger = ScheduleService(sctx.as_principal(Principal(user="eve", roles=frozenset())))
    with pytest.raises(NotFoundError):  # no role on the project: it "does not exist"
        stranger.list(PROJECT)


# Who runs it, failures, crashes -------------------------------------------------------------
def test_a_firing_runs_as_the_creator_with_the_roles_recorded_on_the_project(
    sctx: Context, clock: FrozenClock
) -> None:
    ProjectService(sctx).grant(PROJECT, "dora", "data-scientist")
    dora = sctx.as_principal(Principal(user="dora", roles=frozenset()))
    created = ScheduleService(dora).create(
        PROJECT, ScheduleCreate(name="doras", pipeline=ECHO, cron="* * * * *")
    )
    assert created.created_by == "dora" and created.creator_roles == ["data-scientist"]
    ProjectService(sctx).create("elsewhere")
    clock.advance(minutes=1)
    scheduler = _scheduler(sctx)
    try:
        (firing_id,) = scheduler.run_once()
    finally:
        scheduler.stop(wait=True)
    (firing,) = _firings(sctx, "doras")
    label = f"schedule:doras:{firing_id}"
    with sctx.db.read() as conn:
        started = conn.execute(
            select(audit_events).where(audit_events.c.action == "pipeline.execution.started")
        ).one()
        fired = conn.execute(
            select(audit_events).where(audit_events.c.action == "pipeline.schedule.fired")
        ).one()
    assert (started.actor, started.roles, started.entity_id) == ("dora", label, firing.execution_id)
    assert (fired.actor, fired.roles) == ("dora", label)
    row = type("Row", (), {"created_by": "dora", "creator_roles": "data-scientist", "name": "d"})
    principal = firing_principal(row, PROJECT, "f1")
    assert principal.reaches(PROJECT) and not principal.reaches("elsewhere")
    assert principal.roles_in(PROJECT) == frozenset({"data-scientist"})


def test_a_failing_pipeline_records_its_error_and_the_scheduler_goes_on(
    sctx: Context, clock: FrozenClock
) -> None:
    _create(sctx, "broken", cron="* * * * *", pipeline="tests.pipelines.scheduled:failing")
    _create(sctx, "fine", cron="* * * * *")
    clock.advance(minutes=1)
    scheduler = Scheduler(sctx, name="s", interval_s=1, lease_s=60, max_concurrent=1)
    try:
        assert len(scheduler.run_once()) == 2
    finally:
        scheduler.stop(wait=True)
    (broken,) = _firings(sctx, "broken")
    assert broken.status is FiringStatus.FAILED and broken.execution_id
    assert "the source system is down" in (broken.error or "")
    assert "'explode'" in (broken.error or "")
    (fine,) = _firings(sctx, "fine")
    assert fine.status is FiringStatus.SUCCEEDED


def test_a_claim_whose_scheduler_died_is_taken_over_after_its_lease(
    sched_settings: Settings, sctx: Context, clock: FrozenClock
) -> None:
    _create(sctx, "crashy", cron="0 * * * *")
    clock.advance(hours=1)
    dead = _scheduler(sctx, "dead")
    (firing_id,) = dead.claim()  # claimed, then the process "dies" before starting it
    other = _context(sched_settings, clock)
    try:
        alive = _scheduler(other, "alive")
        assert alive.run_once() == []  # the lease (60 s) still holds
        clock.advance(seconds=61)
        assert alive.run_once() == [firing_id]
        alive.stop(wait=True)
    finally:
        other.db.close()
    assert dead.fire(firing_id) is False  # the slow "dead" one cannot start it any more
    dead.stop(wait=True)
    (firing,) = _firings(sctx, "crashy")
    assert (firing.status, firing.claimed_by, firing.attempts) == (
        FiringStatus.SUCCEEDED,
        "alive",
        2,
    )
    assert len(scheduled.CALLS) == 1 and _executions(sctx) == 1


def test_a_started_firing_of_a_dead_scheduler_is_failed_not_run_again(
    sctx: Context, clock: FrozenClock
) -> None:
    _create(sctx, "started", cron="0 * * * *")
    clock.advance(hours=1)
    dead = _scheduler(sctx, "dead")
    (firing_id,) = dead.claim()
    with sctx.db.write() as uow:  # it had started the execution when the process died
        uow.conn.execute(
            update(schedule_firings)
            .where(schedule_firings.c.id == firing_id)
            .values(status="running", started_at=clock.now())
        )
    clock.advance(seconds=61)
    alive = _scheduler(sctx, "alive")
    try:
        assert alive.run_once() == []
    finally:
        alive.stop(wait=True)
        dead.stop(wait=True)
    (firing,) = _firings(sctx, "started")
    assert firing.status is FiringStatus.FAILED and "dead stopped" in (firing.error or "")
    assert scheduled.CALLS == []


# Two schedulers on one database -------------------------------------------------------------
def _race(contexts: list[Context], clock: FrozenClock, rounds: int) -> None:
    """Each round: a minute passes and a dataset version arrives; then the schedulers tick at
    the same moment, each in its own thread (its own database connection pool)."""
    schedulers = [
        Scheduler(c, name=f"s{i}", interval_s=1, lease_s=60) for i, c in enumerate(contexts)
    ]
    errors: list[BaseException] = []
    try:
        for n in range(rounds):
            clock.advance(minutes=1)
            _ingest(contexts[0], "stream", offset=n)
            barrier = threading.Barrier(len(schedulers))

            def go(scheduler: Scheduler, barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait()
                    scheduler.run_once()
                except BaseException as err:
                    errors.append(err)

            threads = [threading.Thread(target=go, args=(s,)) for s in schedulers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
    finally:
        for scheduler in schedulers:
            scheduler.stop(wait=True)
    assert errors == []


def _exactly_once(settings: Settings, clock: FrozenClock) -> None:
    contexts = [_context(settings, clock), _context(settings, clock)]
    try:
        ProjectService(contexts[0]).create(PROJECT)
        for name in ("c1", "c2", "c3"):
            _create(contexts[0], name, cron="* * * * *", params={"tag": "{event.fire_at}"})
        _create(
            contexts[0],
            "ev",
            event="dataset_version.created",
            params={"tag": "{event.event_id}", "version": "{event.version}"},
        )
        rounds = 3
        _race(contexts, clock, rounds)
        keys: Counter[tuple[str, str]] = Counter()
        for name in ("c1", "c2", "c3", "ev"):
            firings = _firings(contexts[0], name)
            assert len(firings) == rounds, name
            assert all(f.status is FiringStatus.SUCCEEDED for f in firings), firings
            keys.update((name, f.fire_key) for f in firings)
        assert set(keys.values()) == {1}
        assert _executions(contexts[0]) == 4 * rounds
        tags = Counter(c[0] for c in scheduled.CALLS)
        cron_tags = {t: n for t, n in tags.items() if t.endswith("Z")}  # fire_at instants
        event_tags = {t: n for t, n in tags.items() if not t.endswith("Z")}  # event ids
        assert len(cron_tags) == rounds and set(cron_tags.values()) == {3}  # 3 schedules
        assert len(event_tags) == rounds and set(event_tags.values()) == {1}
        claimers = {
            f.claimed_by for name in ("c1", "c2", "c3", "ev") for f in _firings(contexts[0], name)
        }
        assert claimers <= {"s0", "s1"}
    finally:
        for context in contexts:
            context.db.close()


def test_two_schedulers_on_sqlite_fire_each_firing_exactly_once(
    sched_settings: Settings, clock: FrozenClock
) -> None:
    _exactly_once(sched_settings, clock)


def test_two_schedulers_on_postgresql_fire_each_firing_exactly_once(
    pg_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    settings = Settings.load(home=tmp_path / "pg-home", db_url=pg_url, pipeline_modules=ALLOWED)
    _exactly_once(settings, clock)


def _claims_once(ctx: Context) -> None:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    schedule = _create(ctx, "once", cron="* * * * *")
    scheduler = Scheduler(ctx, name="s0")
    now = datetime.now(UTC)
    with ctx.db.read() as conn:
        row = conn.execute(
            select(pipeline_schedules).where(pipeline_schedules.c.id == schedule.id)
        ).one()
    first = scheduler._firing(row, "k1", now, now, {})
    again = {**scheduler._firing(row, "k1", now, now, {}), "claimed_by": "s1"}
    with ctx.db.write() as uow:
        assert scheduler._insert_firing(uow.conn, first) is True
        assert scheduler._insert_firing(uow.conn, again) is False  # the key is taken


def test_a_firing_key_is_claimed_once_on_sqlite(sctx: Context) -> None:
    _claims_once(sctx)


def test_a_firing_key_is_claimed_once_on_postgresql(
    pg_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    settings = Settings.load(home=tmp_path / "pg-home", db_url=pg_url, pipeline_modules=ALLOWED)
    ctx = _context(settings, clock)
    try:
        _claims_once(ctx)
    finally:
        ctx.db.close()


def test_scheduler_lease_must_outlast_two_ticks(sctx: Context) -> None:
    with pytest.raises(ConfigurationError, match="at least twice"):
        Scheduler(sctx, interval_s=10, lease_s=15)
    with pytest.raises(ConfigurationError, match="at least twice"):
        Settings.load(scheduler_interval_s=10, scheduler_lease_s=15)


def test_the_loop_thread_fires_in_the_background(sctx: Context, clock: FrozenClock) -> None:
    _create(sctx, "bg", event="dataset_version.created", params={"dataset": "{event.dataset}"})
    scheduler = Scheduler(sctx, name="bg", interval_s=0.05, lease_s=1)
    scheduler.start()
    try:
        assert scheduler.running
        _ingest(sctx, "arrived")
        for _ in range(200):
            if _firings(sctx, "bg") and _firings(sctx, "bg")[0].status is FiringStatus.SUCCEEDED:
                break
            threading.Event().wait(0.05)
    finally:
        scheduler.stop(wait=True)
    assert not scheduler.running
    assert [f.parameters for f in _firings(sctx, "bg")] == [{"dataset": "arrived"}]
