"""One run of a source: hold it, read what is new, commit versions with the position, let go.

**Hold.** A run takes its source by compare-and-set on ``holder`` / ``lease_until`` (free, or
its lease expired) and renews the lease as it reads; a second run of the same source is refused
meanwhile, so two consumers never split one stream. A run that finds ``running`` records of a
stopped run marks them failed.

**Commit.** Every dataset version is recorded through
:meth:`~civicml.data.service.DatasetService.ingest`'s ``recorded`` callback, which — in the
version's own transaction — moves the source's position by compare-and-set on
``position_seq``, adds the version to the run's record, and links the lineage
``source --ContributedTo--> source_batch --Produced--> dataset_version`` (the batch node holds
the position range). A crash anywhere before that commit leaves the old position; after it,
the broker's redeliveries are recognised (:mod:`civicml.sources.streams`).

Errors of the source (a refused connection, a bad query) end the run ``failed`` with the
message scrubbed of credentials; nothing is retried within a run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from civicml.core.errors import CivicMLError, ConflictError
from civicml.core.ids import new_id
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.sources import database
from civicml.sources._tables import source_runs, sources
from civicml.sources.arrow import json_rows
from civicml.sources.brokers import BROKERS
from civicml.sources.connections import Target, resolve, scrub
from civicml.sources.schemas import DatabaseConfig, RunStatus, SourceKind, StreamConfig
from civicml.sources.streams import Message, consume
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["acquire", "execute", "source_ident"]

log = logging.getLogger("civicml.sources")
_ERROR_MAX = 2000


def source_ident(project: str, name: str, config: dict[str, Any]) -> str:
    """The durable consumer / group / client id of a stream source."""
    given = config.get("group")
    return str(given) if given else f"civicml-{project}-{name}".replace(".", "-")[:128].lower()


def acquire(ctx: Context, row: Any, holder: str) -> bool:
    """Take source ``row`` for a run (free, or its lease expired); whether it was taken."""
    now = ctx.clock.now()
    lease = timedelta(seconds=ctx.settings.sources_lease_s)
    with ctx.db.write() as uow:
        taken = uow.conn.execute(
            update(sources)
            .where(
                sources.c.id == row.id,
                (sources.c.holder.is_(None)) | (sources.c.lease_until < now),
            )
            .values(holder=holder[:128], lease_until=now + lease)
        ).rowcount
        if taken:
            uow.conn.execute(
                update(source_runs)
                .where(source_runs.c.source_id == row.id, source_runs.c.status == "running")
                .values(
                    status=RunStatus.FAILED.value,
                    ended_at=now,
                    error="The run stopped before it ended (its process stopped); what it had "
                    "not committed is read again by the next run.",
                )
            )
    return bool(taken)


class _Run:
    """The state of one run while it reads and commits."""

    def __init__(self, ctx: Context, row: Any, project: str, holder: str, run_id: str) -> None:
        self.ctx = ctx
        self.row = row
        self.project = project
        self.holder = holder
        self.run_id = run_id
        self.seq = int(row.position_seq)
        self.position: dict[str, Any] = dict(row.position or {})
        self.rows = 0
        self.versions: list[int] = []
        self.bad = 0
        self._renewed = time.monotonic()

    def renew(self, force: bool = False) -> None:
        lease_s = self.ctx.settings.sources_lease_s
        if not force and time.monotonic() - self._renewed < lease_s / 4:
            return
        now = self.ctx.clock.now()
        with self.ctx.db.write() as uow:
            held = uow.conn.execute(
                update(sources)
                .where(sources.c.id == self.row.id, sources.c.holder == self.holder[:128])
                .values(lease_until=now + timedelta(seconds=lease_s))
            ).rowcount
        if not held:
            raise ConflictError(
                f"Source {self.row.name!r} was taken by another run (this run's lease expired).",
                hint="Raise sources_lease_s if runs take longer than it.",
            )
        self._renewed = time.monotonic()

    def commit(
        self,
        data: Any,
        after: Callable[[], dict[str, Any]],
        rows: Callable[[], int],
        note: str,
    ) -> None:
        """Record ``data`` as a version of the source's dataset with the position ``after()``
        (called inside the version's transaction, once the data was read); with ``data`` None,
        move the position alone."""
        before = dict(self.position)
        done: dict[str, Any] = {}

        def recorded(uow: UnitOfWork, version: DatasetVersion | None) -> None:
            now = self.ctx.clock.now()
            position, count = after(), rows()
            moved = uow.conn.execute(
                update(sources)
                .where(sources.c.id == self.row.id, sources.c.position_seq == self.seq)
                .values(
                    position=position,
                    position_seq=self.seq + 1,
                    lease_until=now + timedelta(seconds=self.ctx.settings.sources_lease_s),
                )
            ).rowcount
            if not moved:
                raise ConflictError(
                    f"Source {self.row.name!r} moved on while this run read it; nothing of "
                    "this batch was recorded.",
                    hint="Run it again: it resumes from the position now committed.",
                )
            versions = [*self.versions, version.version] if version is not None else self.versions
            uow.conn.execute(
                update(source_runs)
                .where(source_runs.c.id == self.run_id)
                .values(rows=self.rows + count, versions=versions, position_after=position)
            )
            if version is not None:
                self._lineage(uow, version, before, position, count)
            done.update(position=position, rows=count)

        if data is None:
            with self.ctx.db.write() as uow:
                recorded(uow, None)
        else:
            version = DatasetService(self.ctx).ingest(
                self.project, self.row.dataset, data, description=note, recorded=recorded
            )
            self.versions.append(version.version)
        self.seq += 1
        self.rows += int(done["rows"])
        self.position = dict(done["position"])

    def _lineage(
        self,
        uow: UnitOfWork,
        version: DatasetVersion,
        before: dict[str, Any],
        after: dict[str, Any],
        rows: int,
    ) -> None:
        lineage = LineageService(self.ctx)
        row = self.row
        props = {"kind": row.kind, "target": target_shown(row), **_described(row)}
        source_node = lineage.node(
            uow,
            "source",
            row.id,
            name=f"source {row.name}",
            project_id=row.project_id,
            properties=props,
        )
        batch = lineage.new_node(
            uow,
            "source_batch",
            f"{self.run_id}:{len(self.versions) + 1}",
            name=f"{row.name} batch → {version.name} v{version.version}",
            project_id=row.project_id,
            properties={"run": self.run_id, "from": before, "to": after, "rows": rows},
        )
        lineage.link(uow, source_node, batch, "ContributedTo")
        target = lineage.node(uow, "dataset_version", version.id, project_id=row.project_id)
        lineage.link(uow, batch, target, "Produced")


def target_shown(row: Any) -> str:
    """How a source's target is shown (never with credentials)."""
    from civicml.sources.connections import redact

    return f"connection:{row.connection}" if row.connection else redact(str(row.url))


def _described(row: Any) -> dict[str, Any]:
    if row.kind == SourceKind.DATABASE.value:
        return database.describe(DatabaseConfig.model_validate(row.config))
    return {"subject": row.config.get("subject")}


def execute(ctx: Context, row: Any, project: str, holder: str, trigger: str) -> str:
    """Run source ``row`` (held by ``holder``); the run's id. Its errors are recorded, not
    raised; the lease is given back at the end."""
    run_id = new_id()
    now = ctx.clock.now()
    with ctx.db.write() as uow:
        uow.conn.execute(
            source_runs.insert().values(
                id=run_id,
                source_id=row.id,
                project_id=row.project_id,
                trigger=trigger,
                status=RunStatus.RUNNING.value,
                started_at=now,
                ended_at=None,
                seconds=None,
                rows=0,
                skipped=0,
                versions=[],
                position_before=row.position or {},
                position_after=row.position or {},
                error=None,
                created_by=ctx.principal.user,
            )
        )
    run = _Run(ctx, row, project, holder, run_id)
    started = time.monotonic()
    target: Target | None = None
    skipped = 0
    error: str | None = None
    try:
        target = resolve(SourceKind(row.kind), row.url, row.connection, ctx.settings)
        if row.kind == SourceKind.DATABASE.value:
            _extract(run, target)
        else:
            skipped = _stream(run, target)
    except CivicMLError as err:
        error = f"{type(err).__name__}: {err}" + (f" ({err.hint})" if err.hint else "")
    except Exception as err:  # a driver's or broker's own error
        log.warning("source %s/%s: run failed: %s", project, row.name, type(err).__name__)
        error = f"{type(err).__name__}: {err}"
    if error is not None and target is not None:
        error = scrub(error, target)
    status = RunStatus.FAILED if error else RunStatus.SUCCEEDED if run.rows else RunStatus.EMPTY
    _finish(ctx, run, status, skipped, error, time.monotonic() - started)
    return run_id


def _finish(
    ctx: Context, run: _Run, status: RunStatus, skipped: int, error: str | None, seconds: float
) -> None:
    now = ctx.clock.now()
    row = run.row
    with ctx.db.write() as uow:
        uow.conn.execute(
            update(source_runs)
            .where(source_runs.c.id == run.run_id)
            .values(
                status=status.value,
                ended_at=now,
                seconds=round(seconds, 6),
                skipped=skipped,
                error=None if error is None else error[:_ERROR_MAX],
            )
        )
        uow.conn.execute(
            update(sources)
            .where(sources.c.id == row.id, sources.c.holder == run.holder[:128])
            .values(holder=None, lease_until=None)
        )
        position = uow.conn.execute(
            select(sources.c.position).where(sources.c.id == row.id)
        ).scalar()
        AuditTrail(ctx).record(
            uow,
            "source.run",
            "source_run",
            run.run_id,
            project=run.project,
            after={
                "source": row.name,
                "status": status.value,
                "rows": run.rows,
                "skipped": skipped,
                "versions": run.versions,
                "position_before": row.position or {},
                "position_after": position or {},
                "error": error,
            },
        )


def _renewing(batches: Iterator[Any], renew: Callable[[], None]) -> Iterator[Any]:
    for batch in batches:
        renew()
        yield batch


def _extract(run: _Run, target: Target) -> None:
    config = DatabaseConfig.model_validate(run.row.config)
    extraction = database.extract(target, config, run.position)
    if not extraction.schema.names:
        return
    extraction.batches = _renewing(extraction.batches, run.renew)
    low = run.position.get("watermark")

    def after() -> dict[str, Any]:  # DatasetService drained the reader before ``recorded``
        if config.watermark is None:
            return {"rows": extraction.rows}
        if extraction.high is None:
            return dict(run.position)
        return database.stored_watermark(extraction.high)

    note = f"source {run.row.name}: " + (
        f"{config.watermark} above {low!r}" if config.watermark else "full extraction"
    )
    run.commit(extraction.reader(), after, lambda: extraction.rows, note)


def _stream(run: _Run, target: Target) -> int:
    config = StreamConfig.model_validate(run.row.config)
    broker = BROKERS[SourceKind(run.row.kind)](
        target, config, source_ident(run.project, run.row.name, run.row.config)
    )
    try:
        broker.open(run.position)

        def commit(messages: list[Message], after: dict[str, Any]) -> dict[str, Any]:
            table, bad = json_rows([m.body for m in messages])
            run.bad += bad
            note = f"source {run.row.name}: {len(messages)} message(s)"
            rows = int(table.num_rows)
            data = table if rows else None
            run.commit(data, lambda: after, lambda: rows, note)
            return after

        skipped, _ = consume(broker, run.position, commit, renew=run.renew)
        return skipped + run.bad
    finally:
        with contextlib.suppress(Exception):  # unacknowledged messages stay with the broker
            broker.close()
