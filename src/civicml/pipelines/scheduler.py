"""The scheduler: fires due cron schedules and event triggers, each firing exactly once.

One tick:

1. **Renew** the leases of the firings this scheduler holds (queued or running).
2. **Take over** firings whose lease expired: one still ``claimed`` (its scheduler stopped before
   starting it) is claimed anew and run here; one ``running`` (its scheduler stopped while the
   execution ran) is marked ``failed`` — started work is never started twice.
3. **Cron**: every enabled schedule whose ``next_fire_at`` has passed fires *once*, for the latest
   instant at or before now, however many were missed while no scheduler ran (Kubernetes
   CronJob's catch-up of one; never a burst), unless that instant is older than its
   ``starting_deadline_s`` (then the firing is recorded ``skipped``). ``next_fire_at`` moves to
   the first instant after now with a compare-and-set, in the same transaction as the claim.
4. **Events**: audit events after the cursor (table ``scheduler_cursors``, row ``events``) are
   matched against the enabled event schedules of their project; the cursor then moves on. A
   restarted scheduler resumes from the cursor: nothing is missed, and what it sees twice is
   not fired twice (below).

**Exactly once.** A firing is claimed by inserting its row under ``UNIQUE(schedule_id,
fire_key)`` (the cron instant or the audit event id): of any number of schedulers on one
database, only the inserter runs it. Starting is a second compare-and-set (``claimed`` →
``running`` by the holder of the claim), so a scheduler that lost its claim to a takeover
does not start it either. Audit sequence numbers become visible in order (appenders lock the
chain head), so a cursor never skips an event that commits later.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import CivicMLError, ConfigurationError
from civicml.core.ids import new_id
from civicml.core.process import hostname
from civicml.governance._tables import audit_events, audit_head, projects
from civicml.governance.audit import AuditTrail
from civicml.pipelines._tables import pipeline_schedules, schedule_firings, scheduler_cursors
from civicml.pipelines.schedule_schemas import Firing, FiringStatus
from civicml.pipelines.schedules import firing_principal, to_firing
from civicml.pipelines.triggers import (
    CRON,
    event_fields,
    latest_due,
    load_scheduled_pipeline,
    matches,
    next_after,
    render,
)
from civicml.store.context import Context

__all__ = ["Scheduler"]

log = logging.getLogger("civicml.scheduler")

EVENTS_CURSOR = "events"
_ERROR_MAX = 4000
_OPEN = (FiringStatus.CLAIMED.value, FiringStatus.RUNNING.value)


class Scheduler:
    """Fires the schedules of one database; any number may run against it at once.

    Args:
        ctx: The stores (the principal is not used: each firing acts as its schedule's creator).
        name: How this scheduler is recorded on the firings it claims (default host:pid:random).
        max_concurrent: Executions run at once (default setting ``scheduler_max_concurrent``).
        lease_s: How long a claim lasts unrenewed (default setting ``scheduler_lease_s``).
        interval_s: Seconds between ticks (default setting ``scheduler_interval_s``).
        batch: Most audit events read per tick.
        alerts: The alert loop each tick kicks (default: one on ``ctx``, when the setting
            ``alerts_enabled`` is on; docs/alerts.md).
        monitors: The loop of due monitors each tick kicks (default: one on ``ctx``, when the
            setting ``monitors_enabled`` is on; docs/monitors.md).
        retention: The retention pass each tick kicks, run once per ``retention_interval_s``
            (default: one on ``ctx``, when the setting ``retention_enabled`` is on;
            docs/privacy.md).
        sources: The loop of due database and stream sources each tick kicks (default: one on
            ``ctx``, when the setting ``sources_enabled`` is on; docs/sources.md).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        name: str | None = None,
        max_concurrent: int | None = None,
        lease_s: float | None = None,
        interval_s: float | None = None,
        batch: int = 500,
        alerts: Any = None,
        monitors: Any = None,
        sources: Any = None,
        retention: Any = None,
    ) -> None:
        settings = ctx.settings
        self._ctx = ctx
        self.name = (name or f"{hostname()}:{os.getpid()}:{new_id()[:8]}")[:128]
        self.interval_s = interval_s if interval_s is not None else settings.scheduler_interval_s
        lease = lease_s if lease_s is not None else settings.scheduler_lease_s
        if lease < 2 * self.interval_s:
            raise ConfigurationError(
                f"The scheduler's lease ({lease:g} s) must be at least twice its interval "
                f"({self.interval_s:g} s): it renews its claims once per interval.",
                hint="Raise scheduler_lease_s or lower scheduler_interval_s.",
            )
        self._lease = timedelta(seconds=lease)
        workers = max_concurrent or settings.scheduler_max_concurrent
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="civicml-firing")
        self._batch = batch
        self._inflight: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if alerts is None and settings.alerts_enabled:
            from civicml.alerts.loop import AlertLoop

            alerts = AlertLoop(ctx, name=self.name)
        self.alerts = alerts
        if monitors is None and settings.monitors_enabled:
            from civicml.monitors.runner import MonitorLoop

            monitors = MonitorLoop(ctx, name=self.name)
        self.monitors = monitors
        if sources is None and settings.sources_enabled:
            from civicml.sources.runner import SourceLoop

            sources = SourceLoop(ctx, name=self.name)
        self.sources = sources
        if retention is None and settings.retention_enabled:
            from civicml.privacy.retention import RetentionLoop

            retention = RetentionLoop(ctx, name=self.name)
        self.retention = retention

    # Running ----------------------------------------------------------------------------------
    def tick(self) -> list[str]:
        """Renew, take over, claim what is due and start it in the pool; returns the ids of the
        firings claimed (or taken over) by this tick."""
        if self.alerts is not None:  # alert rules: evaluated in a thread of their own
            self.alerts.kick()
        if self.monitors is not None:  # due monitors: run in a thread of their own
            self.monitors.kick()
        if self.sources is not None:  # due sources: run in a thread of their own
            self.sources.kick()
        if self.retention is not None:  # retention periods: one pass per interval, own thread
            self.retention.kick()
        claimed = self.claim()
        for firing_id in claimed:
            self._submit(firing_id)
        return claimed

    def claim(self) -> list[str]:
        """Steps 1-4 of a tick without starting anything: the firing ids now held here."""
        now = self._ctx.clock.now()
        self._renew(now)
        claimed = self._take_over(now)
        claimed += self._claim_cron(now)
        claimed += self._claim_events(now)
        return claimed

    def run_once(self, timeout_s: float | None = None) -> list[str]:
        """One tick, then wait for the executions it started (renewing their leases); the
        claimed firing ids. What ``civicml scheduler --once`` runs."""
        claimed = self.tick()
        self.wait(timeout_s)
        if self.monitors is not None:
            self.monitors.wait(timeout_s)
        if self.sources is not None:
            self.sources.wait(timeout_s)
        if self.alerts is not None:
            self.alerts.wait(timeout_s)
        if self.retention is not None:
            self.retention.wait(timeout_s)
        return claimed

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until no execution of this scheduler runs, renewing leases every interval;
        False when ``timeout_s`` passed first."""
        waited = 0.0
        while True:
            with self._lock:
                pending = list(self._inflight.values())
            if not pending:
                return True
            step = (
                self.interval_s if timeout_s is None else min(self.interval_s, timeout_s - waited)
            )
            if step <= 0:
                return False
            wait_for(pending, timeout=step)
            waited += step
            self._renew(self._ctx.clock.now())

    def run_forever(self) -> None:
        """Tick every ``interval_s`` until :meth:`stop`; a failing tick is logged, not fatal."""
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the database is down for a moment: try again next interval
                log.exception("scheduler %s: tick failed", self.name)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        """Run :meth:`run_forever` in a daemon thread (what ``civicml server`` does)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self.run_forever, name="civicml-scheduler", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the background thread of :meth:`start` runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the background thread to end (after :meth:`stop`), at most ``timeout_s``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def outcomes(self, firing_ids: list[str]) -> list[Firing]:
        """The firings ``firing_ids`` as they stand now (what ``--once`` reports)."""
        if not firing_ids:
            return []
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(schedule_firings, pipeline_schedules.c.name.label("schedule_name"))
                .join(pipeline_schedules, pipeline_schedules.c.id == schedule_firings.c.schedule_id)
                .where(schedule_firings.c.id.in_(firing_ids))
                .order_by(schedule_firings.c.fire_at, schedule_firings.c.id)
            ).all()
        return [to_firing(r, r.schedule_name) for r in rows]

    def stop(self, *, wait: bool = False) -> None:
        """Stop ticking. Queued firings are dropped (another scheduler takes them over when
        their lease expires); running executions finish unless the process exits."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s))
            self._thread = None
        self._pool.shutdown(wait=wait, cancel_futures=True)
        if self.monitors is not None:
            self.monitors.wait(max(5.0, self.interval_s))
        if self.sources is not None:
            self.sources.wait(max(5.0, self.interval_s))
        if self.alerts is not None:
            self.alerts.wait(max(5.0, self.interval_s))
        if self.retention is not None:
            self.retention.wait(max(5.0, self.interval_s))

    # Leases -----------------------------------------------------------------------------------
    def _held(self) -> list[str]:
        with self._lock:
            return [k for k, f in self._inflight.items() if not f.done()]

    def _renew(self, now: datetime) -> None:
        held = self._held()
        if not held:
            return
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                update(schedule_firings)
                .where(
                    schedule_firings.c.id.in_(held),
                    schedule_firings.c.claimed_by == self.name,
                    schedule_firings.c.status.in_(_OPEN),
                )
                .values(lease_until=now + self._lease)
            )

    def _take_over(self, now: datetime) -> list[str]:
        f = schedule_firings
        held = set(self._held())
        with self._ctx.db.read() as conn:
            expired = conn.execute(
                select(f.c.id, f.c.status, f.c.claimed_by, f.c.schedule_id)
                .where(f.c.status.in_(_OPEN), f.c.lease_until < now)
                .order_by(f.c.claimed_at)
                .limit(100)
            ).all()
        mine: list[str] = []
        for row in expired:
            if row.id in held:
                continue
            if row.status == FiringStatus.CLAIMED.value:
                with self._ctx.db.write() as uow:
                    taken = uow.conn.execute(
                        update(f)
                        .where(
                            f.c.id == row.id,
                            f.c.status == FiringStatus.CLAIMED.value,
                            f.c.claimed_by == row.claimed_by,
                            f.c.lease_until < now,
                        )
                        .values(
                            claimed_by=self.name,
                            claimed_at=now,
                            lease_until=now + self._lease,
                            attempts=f.c.attempts + 1,
                        )
                    ).rowcount
                if taken:
                    log.warning(
                        "scheduler %s took over firing %s from %s (lease expired)",
                        self.name,
                        row.id,
                        row.claimed_by,
                    )
                    mine.append(row.id)
            else:
                execution = self._execution_of(row.id)
                with self._ctx.db.write() as uow:
                    uow.conn.execute(
                        update(f)
                        .where(
                            f.c.id == row.id,
                            f.c.status == FiringStatus.RUNNING.value,
                            f.c.lease_until < now,
                        )
                        .values(
                            status=FiringStatus.FAILED.value,
                            ended_at=now,
                            execution_id=execution,
                            error=f"Scheduler {row.claimed_by} stopped while the execution "
                            "ran (its lease expired); it was not started again. Retry it: "
                            f"civicml pipelines retry {execution or '<execution>'} <pipeline>",
                        )
                    )
        return mine

    def _execution_of(self, firing_id: str) -> str | None:
        """The execution a firing started, found by the label its audit events carry."""
        with self._ctx.db.read() as conn:
            schedule = conn.execute(
                select(pipeline_schedules.c.name, projects.c.name.label("project"))
                .join(schedule_firings, schedule_firings.c.schedule_id == pipeline_schedules.c.id)
                .join(projects, projects.c.id == pipeline_schedules.c.project_id)
                .where(schedule_firings.c.id == firing_id)
            ).first()
            if schedule is None:
                return None
            found = conn.execute(
                select(audit_events.c.entity_id)
                .where(
                    audit_events.c.project == schedule.project,
                    audit_events.c.action == "pipeline.execution.started",
                    audit_events.c.roles == f"schedule:{schedule.name}:{firing_id}",
                )
                .limit(1)
            ).scalar()
        return None if found is None else str(found)

    # Claims -----------------------------------------------------------------------------------
    def _insert_firing(self, conn: Connection, values: Mapping[str, Any]) -> bool:
        """Insert a firing unless (schedule, fire_key) exists: True when this call inserted it."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            statement: Any = postgresql.insert(schedule_firings).on_conflict_do_nothing(
                index_elements=["schedule_id", "fire_key"]
            )
        elif dialect == "sqlite":
            statement = sqlite.insert(schedule_firings).on_conflict_do_nothing(
                index_elements=["schedule_id", "fire_key"]
            )
        else:  # pragma: no cover - civicml supports SQLite and PostgreSQL
            statement = insert(schedule_firings)
        # RETURNING, not rowcount: psycopg answers -1 as the rowcount of this INSERT.
        inserted = conn.execute(statement.values(**values).returning(schedule_firings.c.id))
        return inserted.first() is not None

    def _firing(
        self,
        schedule: Any,
        key: str,
        at: datetime,
        now: datetime,
        fields: dict[str, Any],
        status: FiringStatus = FiringStatus.CLAIMED,
        error: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": new_id(),
            "schedule_id": schedule.id,
            "project_id": schedule.project_id,
            "fire_key": key,
            "fire_at": at,
            "event": fields,
            "parameters": render(schedule.parameters or {}, fields),
            "status": status.value,
            "execution_id": None,
            "claimed_by": self.name,
            "claimed_at": now,
            "lease_until": now + self._lease,
            "attempts": 1,
            "started_at": None,
            "ended_at": now if status is FiringStatus.SKIPPED else None,
            "error": error,
        }

    def _schedules(self, conn: Connection, trigger: str, *extra: Any) -> list[Any]:
        s = pipeline_schedules
        return list(
            conn.execute(
                select(s, projects.c.name.label("project"))
                .join(projects, projects.c.id == s.c.project_id)
                .where(s.c.trigger == trigger, s.c.enabled.is_(True), *extra)
                .order_by(s.c.created_at, s.c.id)
            ).all()
        )

    def _claim_cron(self, now: datetime) -> list[str]:
        s = pipeline_schedules
        with self._ctx.db.read() as conn:
            due = self._schedules(conn, "cron", s.c.next_fire_at <= now)
        claimed: list[str] = []
        for row in due:
            try:
                instant = latest_due(row.cron, row.timezone, now)
                following = next_after(row.cron, row.timezone, now)
            except Exception as err:  # pragma: no cover - checked at creation
                log.error("schedule %s: bad cron expression %r: %s", row.name, row.cron, err)
                continue
            fields = {
                "type": CRON,
                "fire_at": instant.isoformat().replace("+00:00", "Z"),
                "project": row.project,
                "schedule": row.name,
            }
            late = (now - instant).total_seconds()
            deadline = row.starting_deadline_s
            skipped = deadline is not None and late > deadline
            values = self._firing(
                row,
                fields["fire_at"],
                instant,
                now,
                fields,
                FiringStatus.SKIPPED if skipped else FiringStatus.CLAIMED,
                f"Missed by {late:.0f} s, more than starting_deadline_s ({deadline} s); the "
                f"next instant is {following.isoformat()}."
                if skipped
                else None,
            )
            with self._ctx.db.write() as uow:
                moved = uow.conn.execute(
                    update(s)
                    .where(
                        s.c.id == row.id,
                        s.c.enabled.is_(True),
                        s.c.next_fire_at == row.next_fire_at,
                    )
                    .values(next_fire_at=following)
                ).rowcount
                inserted = bool(moved) and self._insert_firing(uow.conn, values)
            if inserted and not skipped:
                claimed.append(values["id"])
        return claimed

    def _claim_events(self, now: datetime) -> list[str]:
        with self._ctx.db.read() as conn:
            schedules = self._schedules(conn, "event")
            if not schedules:
                return []
            floor = min(int(r.events_after) for r in schedules)
            position = conn.execute(
                select(scheduler_cursors.c.position).where(
                    scheduler_cursors.c.name == EVENTS_CURSOR
                )
            ).scalar()
            start = floor if position is None else max(int(position), floor)
            head = int(conn.execute(select(audit_head.c.seq)).scalar() or 0)
            types = sorted({r.event_type for r in schedules})
            events = conn.execute(
                select(audit_events)
                .where(
                    audit_events.c.seq > start,
                    audit_events.c.seq <= head,
                    audit_events.c.action.in_(types),
                )
                .order_by(audit_events.c.seq)
                .limit(self._batch)
            ).all()
        reached = head if len(events) < self._batch else int(events[-1].seq)
        by_project: dict[tuple[str, str], list[Any]] = {}
        for row in schedules:
            by_project.setdefault((row.project.lower(), row.event_type), []).append(row)
        claimed: list[str] = []
        for event in events:
            project = (event.project or "").lower()
            for row in by_project.get((project, event.action), []):
                if int(event.seq) <= int(row.events_after):
                    continue
                fields = event_fields(event, row.name, project=row.project)
                if fields is None or not matches(row.match or {}, fields):
                    continue
                at = datetime.fromisoformat(event.at)
                values = self._firing(row, event.id, at, now, fields)
                with self._ctx.db.write() as uow:
                    if self._insert_firing(uow.conn, values):
                        claimed.append(values["id"])
        if reached > start:
            self._advance(reached, now)
        return claimed

    def _advance(self, position: int, now: datetime) -> None:
        c = scheduler_cursors
        with self._ctx.db.write() as uow:
            moved = uow.conn.execute(
                update(c)
                .where(c.c.name == EVENTS_CURSOR, c.c.position < position)
                .values(position=position, updated_at=now, updated_by=self.name)
            ).rowcount
            if not moved:
                exists = uow.conn.execute(
                    select(func.count()).select_from(c).where(c.c.name == EVENTS_CURSOR)
                ).scalar()
                if not exists:
                    statement: Any = (
                        postgresql.insert(c)
                        if uow.conn.dialect.name == "postgresql"
                        else sqlite.insert(c)
                    )
                    uow.conn.execute(
                        statement.values(
                            name=EVENTS_CURSOR,
                            position=position,
                            updated_at=now,
                            updated_by=self.name,
                        ).on_conflict_do_nothing(index_elements=["name"])
                    )

    # Firing -----------------------------------------------------------------------------------
    def _submit(self, firing_id: str) -> None:
        with self._lock:
            if firing_id in self._inflight and not self._inflight[firing_id].done():
                return
            try:
                future = self._pool.submit(self._fire_safely, firing_id)
            except RuntimeError:  # stopped: another scheduler takes it over after its lease
                return
            self._inflight[firing_id] = future
        future.add_done_callback(functools.partial(self._done, firing_id))

    def _done(self, firing_id: str, _future: Future[None]) -> None:
        with self._lock:
            self._inflight.pop(firing_id, None)

    def _fire_safely(self, firing_id: str) -> None:
        try:
            self.fire(firing_id)
        except Exception:  # recorded where possible; the scheduler keeps going
            log.exception("scheduler %s: firing %s failed", self.name, firing_id)

    def _run(self, service: Any, pipe: Any, row: Any, firing_id: str) -> Any:
        """``service.run``; retried when two first runs of one pipeline version on
        PostgreSQL raced to insert its row (the loser's transaction rolled back whole, so no
        execution of this firing exists: checked before retrying)."""
        for attempt in range(3):
            try:
                return service.run(pipe, project=row.project, params=dict(row.parameters or {}))
            except IntegrityError:
                if attempt == 2 or self._execution_of(firing_id) is not None:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def fire(self, firing_id: str) -> bool:
        """Start the execution of a firing this scheduler holds, and record how it ended;
        False when the claim is no longer this scheduler's (taken over, deleted, or started)."""
        from civicml.pipelines.service import PipelineService

        f = schedule_firings
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            started = uow.conn.execute(
                update(f)
                .where(
                    f.c.id == firing_id,
                    f.c.status == FiringStatus.CLAIMED.value,
                    f.c.claimed_by == self.name,
                )
                .values(
                    status=FiringStatus.RUNNING.value,
                    started_at=now,
                    lease_until=now + self._lease,
                )
            ).rowcount
            if not started:
                return False
            row = uow.conn.execute(
                select(
                    f.c.parameters,
                    pipeline_schedules.c.name,
                    pipeline_schedules.c.pipeline_ref,
                    pipeline_schedules.c.created_by,
                    pipeline_schedules.c.creator_roles,
                    projects.c.name.label("project"),
                )
                .join(pipeline_schedules, pipeline_schedules.c.id == f.c.schedule_id)
                .join(projects, projects.c.id == pipeline_schedules.c.project_id)
                .where(f.c.id == firing_id)
            ).one()
        ctx = self._ctx.as_principal(firing_principal(row, row.project, firing_id))
        execution_id: str | None = None
        error: str | None = None
        try:
            pipe = load_scheduled_pipeline(row.pipeline_ref, self._ctx.settings)
            execution = self._run(PipelineService(ctx), pipe, row, firing_id)
            execution_id = execution.id
            if execution.status.value in ("failed", "cancelled"):
                failed = [s for s in execution.steps if s.status.value == "failed"]
                error = f"Execution {execution.id} {execution.status.value}" + (
                    f" at step {failed[0].step!r}: {failed[0].error}" if failed else "."
                )
        except CivicMLError as err:
            error = f"{type(err).__name__}: {err}" + (f" ({err.hint})" if err.hint else "")
        except Exception as err:  # the pipeline's own code raised outside a step
            error = f"{type(err).__name__}: {err}"
        if execution_id is None:
            execution_id = self._execution_of(firing_id)
        status = FiringStatus.FAILED if error else FiringStatus.SUCCEEDED
        with self._ctx.db.write() as uow:
            updated = uow.conn.execute(
                update(f)
                .where(f.c.id == firing_id, f.c.claimed_by == self.name)
                .values(
                    status=status.value,
                    execution_id=execution_id,
                    ended_at=self._ctx.clock.now(),
                    error=None if error is None else error[:_ERROR_MAX],
                )
            ).rowcount
            if updated:
                AuditTrail(ctx).record(
                    uow,
                    "pipeline.schedule.fired",
                    "pipeline_schedule_firing",
                    firing_id,
                    project=row.project,
                    after={
                        "schedule": row.name,
                        "pipeline": row.pipeline_ref,
                        "execution_id": execution_id,
                        "status": status.value,
                        "error": error,
                        "scheduler": self.name,
                    },
                )
        if error:
            log.warning(
                "schedule %s/%s: firing %s failed: %s", row.project, row.name, firing_id, error
            )
        return True
