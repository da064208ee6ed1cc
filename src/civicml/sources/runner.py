"""Due sources, run from the scheduler's loop: each due instant at most once, across schedulers.

:class:`civicml.pipelines.scheduler.Scheduler` kicks :class:`SourceLoop` at every tick; the pass
runs in a thread of its own, one pass at a time. For every enabled source whose
``next_run_at`` has passed, a pass moves ``next_run_at`` to the first instant after now by
compare-and-set on the value read (of several schedulers on one database only one moves it:
that one runs the instant; missed instants are caught up once, never in a burst), then takes
the source's run lease and runs it as the source's creator (with the roles they held on the
project when adding it; the label role ``source:<name>`` marks the audit events). A source
still held by a run (a long stream run, or one started by hand) skips the instant.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import select, update

from civicml.core.ids import new_id
from civicml.core.passes import BackgroundPass
from civicml.core.process import hostname
from civicml.governance._tables import projects
from civicml.sources._rows import source_principal
from civicml.sources._tables import sources
from civicml.sources.engine import acquire, execute
from civicml.sources.service import schedule_of
from civicml.store.context import Context

__all__ = ["SourceLoop", "SourceRunner"]

log = logging.getLogger("civicml.sources")


class SourceRunner:
    """Claims and runs the due sources of one database.

    Args:
        ctx: The stores and clock (each run acts as its source's creator).
        name: How this process is recorded as the holder of the sources it runs.
    """

    def __init__(self, ctx: Context, *, name: str | None = None) -> None:
        self._ctx = ctx
        self.name = (name or f"{hostname()}:{os.getpid()}:{new_id()[:8]}")[:100]

    def tick(self) -> list[str]:
        """Run every due source once; the ids of the runs."""
        done: list[str] = []
        for row, project in self.claim_due():
            ctx = self._ctx.as_principal(source_principal(row, project))
            holder = f"{self.name}:{new_id()[:8]}"
            if not acquire(ctx, row, holder):
                log.info("source %s/%s: still running, instant skipped", project, row.name)
                continue
            with ctx.db.read() as conn:
                fresh = conn.execute(select(sources).where(sources.c.id == row.id)).one()
            try:
                done.append(execute(ctx, fresh, project, holder, "schedule"))
            except Exception:  # one broken source never stops the others
                log.exception("source %s/%s: run failed", project, row.name)
        return done

    def claim_due(self) -> list[tuple[Any, str]]:
        """Move ``next_run_at`` of every due source on; the (row, project) pairs this call moved."""
        now = self._ctx.clock.now()
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(sources, projects.c.name.label("project_name"))
                .join(projects, projects.c.id == sources.c.project_id)
                .where(sources.c.enabled.is_(True), sources.c.next_run_at <= now)
                .order_by(sources.c.next_run_at, sources.c.id)
                .limit(500)
            ).all()
        claimed: list[tuple[Any, str]] = []
        for row in rows:
            every = None if row.every_s is None else f"{int(row.every_s)}s"
            schedule = schedule_of(row.cron, every, row.anchor)
            if schedule is None:  # pragma: no cover - next_run_at is None without a schedule
                continue
            with self._ctx.db.write() as uow:
                moved = uow.conn.execute(
                    update(sources)
                    .where(
                        sources.c.id == row.id,
                        sources.c.enabled.is_(True),
                        sources.c.next_run_at == row.next_run_at,
                    )
                    .values(next_run_at=schedule.next_after(now))
                ).rowcount
            if moved:
                claimed.append((row, row.project_name))
        return claimed


class SourceLoop(BackgroundPass):
    """Runs :meth:`SourceRunner.tick` in the background, one pass at a time (what the
    scheduler kicks)."""

    thread_name = "civicml-sources"

    def __init__(self, ctx: Context, *, name: str | None = None) -> None:
        self._runner = SourceRunner(ctx, name=name)
        super().__init__()

    def run_once(self) -> list[str]:
        """One pass in the calling thread; the runs it made."""
        try:
            return self._runner.tick()
        except Exception:  # the database is down for a moment: the next pass tries again
            log.exception("source loop %s: pass failed", self._runner.name)
            return []
