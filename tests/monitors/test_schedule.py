"""Schedules and the scheduler: cron and interval instants, each due instant run exactly once
by several runners on one database (SQLite and PostgreSQL), catch-up of one, pause, stale
executions, and the pipeline scheduler's tick running due monitors."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from civicml.core import FrozenClock, InvalidInputError
from civicml.governance.projects import ProjectService
from civicml.monitors import ExecutionStatus, MonitorRunner, MonitorService, MonitorUpdate
from civicml.monitors._tables import monitor_executions
from civicml.monitors.schedule import parse_schedule, parse_window
from civicml.pipelines.scheduler import Scheduler
from civicml.serving import CaptureWriter, ModelHost
from civicml.store import Context, MetadataStore
from tests.monitors.helpers import ENDPOINT, deploy, inputs, monitor
from tests.serving.helpers import PROJECT

T0 = datetime(2026, 3, 1, 10, 20, tzinfo=UTC)


def test_cron_and_interval_instants() -> None:
    hourly = parse_schedule("0 * * * *", None, T0)
    assert hourly.latest_due(T0) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert hourly.next_after(T0) == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert parse_schedule(None, None, T0).cron == "@hourly"
    every = parse_schedule(None, "30m", T0)
    assert every.next_after(T0) == T0 + timedelta(minutes=30)
    later = T0 + timedelta(minutes=95)
    assert every.latest_due(later) == T0 + timedelta(minutes=90)
    assert every.next_after(later) == T0 + timedelta(minutes=120)
    assert parse_window(None, every) == 1800 and parse_window(None, hourly) == 3600
    assert parse_window("2h", hourly) == 7200
    for cron, every_text, message in (
        ("0 * *", None, "not five fields"),
        (None, "10s", "shorter than a minute"),
        ("@hourly", "1h", "not both"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            parse_schedule(cron, every_text, T0)
    with pytest.raises(InvalidInputError, match="30 days"):
        parse_window("31d", hourly)
    with pytest.raises(InvalidInputError, match="from a minute to 30 days"):
        parse_window("10s", hourly)


def _executions(ctx: Context) -> list[Any]:
    with ctx.db.read() as conn:
        return list(
            conn.execute(select(monitor_executions).order_by(monitor_executions.c.window_end)).all()
        )


def _runners(ctx: Context, n: int) -> list[MonitorRunner]:
    """Runners with stores of their own (as separate processes would have)."""
    return [
        MonitorRunner(
            Context(
                db=MetadataStore(ctx.settings.database_url),
                artifacts=ctx.artifacts,
                principal=ctx.principal,
                settings=ctx.settings,
                clock=ctx.clock,
            ),
            name=f"runner-{i}",
        )
        for i in range(n)
    ]


def test_each_due_instant_runs_once_across_runners(
    any_ctx: Context, model_dir: Path, clock: FrozenClock
) -> None:
    ctx = any_ctx
    ProjectService(ctx).create(PROJECT)
    host = ModelHost(ctx, capture=CaptureWriter(ctx, max_age_s=3600))
    try:
        deploy(ctx, host, model_dir)
        created = monitor(ctx, host, "inputs", "data_quality", every="1h", window="2h")
        first_due = created.next_run_at
        assert first_due == clock.now() + timedelta(hours=1)
        clock.advance(minutes=30)
        host.invoke(PROJECT, ENDPOINT, inputs(40))
        host.capture.flush()
        runners = _runners(ctx, 4)
        assert all(r.tick() == [] for r in runners)  # nothing due yet

        clock.advance(minutes=31)
        barrier = threading.Barrier(len(runners))
        done: list[list[str]] = [[] for _ in runners]

        def tick(i: int) -> None:
            barrier.wait()
            done[i] = runners[i].tick()

        threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(runners))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(len(d) for d in done) == [0, 0, 0, 1]
        (execution,) = _executions(ctx)
        assert (execution.fire_key, execution.trigger) == (
            first_due.isoformat().replace("+00:00", "Z"),
            "schedule",
        )
        assert execution.window_end == first_due
        assert execution.window_start == first_due - timedelta(hours=2)
        assert execution.status == "completed" and execution.records == 40
        assert execution.created_by == "alice"  # the creator, with the label role

        clock.advance(hours=5)  # five instants missed: one catch-up, the latest
        assert [len(r.tick()) for r in runners] == [1, 0, 0, 0]
        latest = _executions(ctx)[-1]
        assert latest.window_end == first_due + timedelta(hours=5)
        assert latest.status == "no_data"  # nothing captured in its two hours
        assert MonitorService(ctx).get(PROJECT, "inputs").next_run_at == first_due + timedelta(
            hours=6
        )
        for runner in runners:
            runner._ctx.db.close()
    finally:
        host.close()


def test_paused_monitors_do_not_run_and_stale_executions_fail(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "inputs", "data_quality", cron="0 * * * *")
    svc = MonitorService(ctx, host.capture)
    svc.update(PROJECT, "inputs", MonitorUpdate(enabled=False))
    clock.advance(hours=3)
    runner = MonitorRunner(ctx, name="only")
    assert runner.tick() == []
    resumed = svc.update(PROJECT, "inputs", MonitorUpdate(enabled=True))
    assert resumed.next_run_at > clock.now()  # no catch-up of the paused hours

    execution = svc.run(PROJECT, "inputs")
    with ctx.db.write() as uow:  # as if its process had died mid-run
        uow.conn.execute(
            update(monitor_executions)
            .where(monitor_executions.c.id == execution.id)
            .values(status="running")
        )
    clock.advance(seconds=ctx.settings.monitors_stale_s + 1)
    runner.tick()
    stale = svc.execution(PROJECT, "inputs", execution.id)
    assert stale.status is ExecutionStatus.FAILED
    assert "stopped before it ended" in (stale.error or "")


def test_the_pipeline_schedulers_tick_runs_due_monitors(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "inputs", "data_quality", every="1h")
    host.invoke(PROJECT, ENDPOINT, inputs(40))
    host.capture.flush()
    clock.advance(hours=1, seconds=1)
    scheduler = Scheduler(ctx, name="scheduler-1")
    try:
        scheduler.run_once(timeout_s=60)
    finally:
        scheduler.stop()
    (execution,) = MonitorService(ctx).executions(PROJECT, "inputs")
    assert (execution.trigger, execution.status.value, execution.records) == (
        "schedule",
        "completed",
        40,
    )
