"""Retention: delete dataset versions and captured requests older than their period.

A pass looks at every retention rule with a period: a dataset version ingested before ``now -
days`` loses its bytes (its row stays, marked purged, so lineage and reports still name it), and
an endpoint's capture file whose hour ended before ``now - days`` is deleted. A target under a
legal hold is skipped and reported. Rows go first, in one transaction with their audit events;
bytes only after the commit, and only when no other owner shares them
(:mod:`civicml.privacy._purge`).

:class:`RetentionLoop` runs a pass from the pipelines scheduler every ``retention_interval_s``
(setting ``retention_enabled``); several schedulers on one database run each interval's pass
once, claimed by inserting its row under a unique key. ``civicml privacy retention enforce``
runs one project's pass now.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.identity import Principal
from civicml.core.ids import new_id
from civicml.core.passes import BackgroundPass
from civicml.core.process import hostname
from civicml.data._tables import dataset_versions, datasets
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.privacy._purge import delete_unreferenced, drop_check_reports, drop_index_rows
from civicml.privacy._tables import erasures, purged_versions, retention_passes, retention_rules
from civicml.privacy.schemas import RetentionResult
from civicml.store._tables import artifacts
from civicml.store.context import Context

__all__ = ["RetentionLoop", "RetentionService", "capture_hour"]

log = logging.getLogger("civicml.privacy")
#: Whom a scheduled pass acts as (a label role: it gives no permission).
RETENTION_PRINCIPAL = Principal(user="civicml-retention", roles=frozenset({"retention"}))


def capture_hour(path: str) -> datetime | None:
    """The start of the hour a capture file holds (``capture/yyyy/mm/dd/hh/…``), or None."""
    parts = path.split("/")
    try:
        year, month, day, hour = (int(p) for p in parts[1:5])
        return datetime(year, month, day, hour, tzinfo=UTC)
    except (ValueError, IndexError):
        return None


class RetentionService:
    """Enforces retention periods (the scheduler's pass, or one project on request)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)

    def enforce(self, project: str) -> RetentionResult:
        """Apply the project's retention periods now (``privacy.retention``)."""
        proj = ProjectService(self._ctx).get(project, "privacy.retention")
        return self._enforce([proj.id])

    def enforce_all(self) -> RetentionResult:
        """Apply every project's retention periods, and finish erasures a crash interrupted
        (what the scheduled pass runs; no permission check: it acts for the rules' setters)."""
        self.finish_erasures()
        with self._ctx.db.read() as conn:
            ids = list(
                conn.execute(select(retention_rules.c.project_id).distinct()).scalars().all()
            )
        return self._enforce(ids)

    def finish_erasures(self) -> int:
        """Delete the bytes erasures left pending (their process stopped after the commit)."""
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(erasures.c.id, erasures.c.pending).where(erasures.c.status == "deleting")
            ).all()
        for row in rows:
            delete_unreferenced(self._ctx, row.pending or [])
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    update(erasures)
                    .where(erasures.c.id == row.id)
                    .values(status="completed", pending=[])
                )
        return len(rows)

    def _enforce(self, project_ids: list[str]) -> RetentionResult:
        now = self._ctx.clock.now()
        expired: list[str] = []
        held: list[str] = []
        files = 0
        events: list[str] = []
        doomed: set[str] = set()
        with self._ctx.db.write() as uow:
            conn = uow.conn
            rules = conn.execute(
                select(retention_rules, projects.c.name.label("project_name"))
                .join(projects, projects.c.id == retention_rules.c.project_id)
                .where(
                    retention_rules.c.project_id.in_(project_ids),
                    retention_rules.c.days.is_not(None),
                )
                .order_by(retention_rules.c.target_kind, retention_rules.c.target_name)
            ).all()
            for rule in rules:
                label = f"{rule.target_kind} {rule.project_name}/{rule.target_name}"
                if rule.legal_hold:
                    held.append(label)
                    continue
                cutoff = now - timedelta(days=int(rule.days))
                if rule.target_kind == "dataset":
                    done = self._expire_versions(uow, rule, cutoff, doomed, events)
                    expired += [f"{rule.project_name}/{rule.target_name} v{n}" for n in done]
                else:
                    files += self._expire_captures(uow, rule, cutoff, doomed, events)
        gone = delete_unreferenced(self._ctx, doomed)
        return RetentionResult(
            expired_versions=expired,
            expired_capture_files=files,
            held=held,
            bytes_deleted=len(gone),
            audit_event_ids=events,
        )

    def _expire_versions(
        self, uow: Any, rule: Any, cutoff: datetime, doomed: set[str], events: list[str]
    ) -> list[int]:
        conn = uow.conn
        purged = select(purged_versions.c.dataset_version_id)
        rows = conn.execute(
            select(dataset_versions, datasets.c.name.label("dataset_name"))
            .join(datasets, datasets.c.id == dataset_versions.c.dataset_id)
            .where(
                dataset_versions.c.dataset_id == rule.target_id,
                dataset_versions.c.created_at < cutoff,
                dataset_versions.c.id.not_in(purged),
            )
            .order_by(dataset_versions.c.version)
        ).all()
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        for row in rows:
            conn.execute(
                insert(purged_versions).values(
                    dataset_version_id=row.id,
                    project_id=rule.project_id,
                    reason="retention",
                    erasure_id=None,
                    successor_id=None,
                    purged_at=now,
                    purged_by=user,
                )
            )
            drop_index_rows(conn, "dataset_version", row.id, None)
            doomed.update(drop_check_reports(conn, row.id))
            self._lineage.mark_deleted(uow, "dataset_version", row.id)
            doomed.add(row.digest)
            events.append(
                self._audit.record(
                    uow,
                    "dataset_version.expired",
                    "dataset_version",
                    row.id,
                    project=rule.project_name,
                    after={
                        "name": row.dataset_name,
                        "version": row.version,
                        "digest": row.digest,
                        "retention_days": rule.days,
                    },
                )
            )
        return [int(r.version) for r in rows]

    def _expire_captures(
        self, uow: Any, rule: Any, cutoff: datetime, doomed: set[str], events: list[str]
    ) -> int:
        conn = uow.conn
        rows = conn.execute(
            select(artifacts.c.path, artifacts.c.digest).where(
                artifacts.c.owner_kind == "endpoint",
                artifacts.c.owner_id == rule.target_id,
                artifacts.c.path.startswith("capture/"),
            )
        ).all()
        old = []
        for row in rows:
            hour = capture_hour(row.path)
            if hour is not None and hour + timedelta(hours=1) <= cutoff:
                old.append(row)
        if not old:
            return 0
        for row in old:
            drop_index_rows(conn, "endpoint", rule.target_id, row.path)
            doomed.add(row.digest)
        events.append(
            self._audit.record(
                uow,
                "endpoint.captures_expired",
                "endpoint",
                rule.target_id,
                project=rule.project_name,
                after={
                    "name": rule.target_name,
                    "files": len(old),
                    "digests": sorted(r.digest for r in old),
                    "retention_days": rule.days,
                },
            )
        )
        return len(old)


class RetentionLoop(BackgroundPass):
    """Runs a retention pass from the scheduler's tick, once per ``retention_interval_s``
    across every scheduler of the database, in a thread of its own."""

    thread_name = "civicml-retention"

    def __init__(self, ctx: Context, *, name: str | None = None) -> None:
        self._ctx = ctx.as_principal(RETENTION_PRINCIPAL)
        self.name = (name or f"{hostname()}:{os.getpid()}:{new_id()[:8]}")[:128]
        self._interval = max(60.0, float(ctx.settings.retention_interval_s))
        super().__init__()

    def claim(self) -> str | None:
        """Claim this interval's pass; its key, or None when another scheduler has it."""
        now = self._ctx.clock.now()
        slot = int(now.timestamp() // self._interval)
        key = f"{slot * int(self._interval)}"
        try:
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    insert(retention_passes).values(
                        fire_key=key, claimed_by=self.name, started_at=now
                    )
                )
        except IntegrityError:
            return None
        return key

    def run_once(self) -> RetentionResult | None:
        """Claim and run this interval's pass in the calling thread; None when not due here."""
        try:
            key = self.claim()
            if key is None:
                return None
            result = RetentionService(self._ctx).enforce_all()
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    update(retention_passes)
                    .where(retention_passes.c.fire_key == key)
                    .values(ended_at=self._ctx.clock.now(), summary=result.model_dump(mode="json"))
                )
            return result
        except Exception:  # the database is down for a moment: the next interval tries again
            log.exception("retention pass %s failed", self.name)
            return None
