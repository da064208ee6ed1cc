"""Due monitors, run from the scheduler's loop: each due instant exactly once, across schedulers.

:class:`civicml.pipelines.scheduler.Scheduler` kicks :class:`MonitorLoop` at every tick; the
pass runs in a thread of its own (a SHAP window may take a while; pipeline firings never wait
for it), one pass at a time. A pass:

1. marks ``running`` executions whose lease expired ``failed`` (their process stopped);
2. for every enabled monitor whose ``next_run_at`` has passed: in one transaction, moves
   ``next_run_at`` to the first instant after now by compare-and-set on the value read, and
   inserts the execution of the latest due instant under ``UNIQUE(monitor_id, fire_key)``
   (:func:`civicml.monitors.engine.claim`). Missed instants are caught up once, never in a burst;
3. computes and stores what it claimed, acting as each monitor's creator (with the roles they
   held on the project when creating it; the label role ``monitor:<name>`` marks the audit
   events).

Of several schedulers on one database only one moves ``next_run_at`` and inserts the row, so
each due instant runs once; a scheduler that dies mid-run leaves a ``running`` row that the next
pass after its lease marks ``failed``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import select, update

from civicml.core.identity import Principal
from civicml.core.ids import new_id
from civicml.core.passes import BackgroundPass
from civicml.core.process import hostname
from civicml.governance._tables import projects
from civicml.monitors._rows import anchor_of, every_text
from civicml.monitors._tables import monitors
from civicml.monitors.engine import claim, execute, fail_stale
from civicml.monitors.schedule import parse_schedule
from civicml.serving.capture import CaptureWriter
from civicml.store.context import Context

__all__ = ["MonitorLoop", "MonitorRunner", "monitor_principal"]

log = logging.getLogger("civicml.monitors")


def monitor_principal(row: Any, project: str) -> Principal:
    """Whom a scheduled execution acts as: the monitor's creator, on its project only, with the
    roles they held there when creating it; the label ``monitor:<name>`` (no permission)."""
    key = project.lower()
    roles = [r for r in row.creator_roles.split(",") if r]
    return Principal(
        user=row.created_by,
        roles=frozenset({f"monitor:{row.name}"}),
        projects=frozenset({key}),
        grants=frozenset((key, role) for role in roles),
    )


class MonitorRunner:
    """Claims and runs the due executions of one database's monitors.

    Args:
        ctx: The stores and clock (each execution acts as its monitor's creator).
        name: How this process is recorded on the executions it claims.
        writer: This process's capture writer, flushed before a window is read.
    """

    def __init__(
        self, ctx: Context, *, name: str | None = None, writer: CaptureWriter | None = None
    ) -> None:
        self._ctx = ctx
        self.name = (name or f"{hostname()}:{os.getpid()}:{new_id()[:8]}")[:128]
        self._writer = writer

    def tick(self) -> list[str]:
        """Fail stale executions, claim every due one and run it; the ids run here."""
        now = self._ctx.clock.now()
        fail_stale(self._ctx, now)
        done = []
        for row, project, execution_id in self.claim_due():
            ctx = self._ctx.as_principal(monitor_principal(row, project))
            try:
                execute(ctx, row, project, execution_id, claimed_by=self.name, writer=self._writer)
            except Exception:  # one broken monitor never stops the others
                log.exception("monitor %s/%s: execution failed", project, row.name)
                continue
            done.append(execution_id)
        return done

    def claim_due(self) -> list[tuple[Any, str, str]]:
        """Claim the latest due instant of every monitor due now: (row, project, execution)."""
        now = self._ctx.clock.now()
        lease = self._ctx.settings.monitors_stale_s
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(monitors, projects.c.name.label("project_name"))
                .join(projects, projects.c.id == monitors.c.project_id)
                .where(monitors.c.enabled.is_(True), monitors.c.next_run_at <= now)
                .order_by(monitors.c.next_run_at, monitors.c.id)
                .limit(500)
            ).all()
        claimed: list[tuple[Any, str, str]] = []
        for row in rows:
            schedule = parse_schedule(row.cron, every_text(row), anchor_of(row))
            instant = schedule.latest_due(now)
            following = schedule.next_after(now)
            with self._ctx.db.write() as uow:
                moved = uow.conn.execute(
                    update(monitors)
                    .where(
                        monitors.c.id == row.id,
                        monitors.c.enabled.is_(True),
                        monitors.c.next_run_at == row.next_run_at,
                    )
                    .values(next_run_at=following)
                ).rowcount
                execution_id = (
                    claim(
                        uow.conn,
                        row,
                        fire_key=instant.isoformat().replace("+00:00", "Z"),
                        trigger="schedule",
                        end=instant,
                        now=now,
                        claimed_by=self.name,
                        lease_s=lease,
                        created_by=row.created_by,
                    )
                    if moved
                    else None
                )
            if execution_id is not None:
                claimed.append((row, row.project_name, execution_id))
        return claimed


class MonitorLoop(BackgroundPass):
    """Runs :meth:`MonitorRunner.tick` in the background, one pass at a time (what the
    scheduler kicks)."""

    thread_name = "civicml-monitors"

    def __init__(
        self, ctx: Context, *, name: str | None = None, writer: CaptureWriter | None = None
    ) -> None:
        self._runner = MonitorRunner(ctx, name=name, writer=writer)
        super().__init__()

    def run_once(self) -> list[str]:
        """One pass in the calling thread; the executions it ran."""
        try:
            return self._runner.tick()
        except Exception:  # the database is down for a moment: the next pass tries again
            log.exception("monitor loop %s: pass failed", self._runner.name)
            return []
