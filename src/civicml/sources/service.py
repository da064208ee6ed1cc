"""The sources service: database and stream sources of a project, their runs and status, for
``ctx.principal``.

Adding, changing, running and removing sources take ``sources.write`` on the project; reading
them ``sources.read``. A run also ingests dataset versions, so it takes ``datasets.write`` too
(every built-in role with ``sources.write`` holds it). Every change is one unit of work with its
audit event (``source.created``, ``…updated``, ``…deleted``, ``…run``); what a run does is in
:mod:`civicml.sources.engine`, scheduling in :mod:`civicml.sources.runner`. Nothing returned,
logged or audited holds a credential: a source shows its target as :func:`redact` makes it.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.core.ids import new_id
from civicml.core.names import already_exists, validate_name
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.monitors.schedule import Schedule, parse_schedule
from civicml.sources import database
from civicml.sources._rows import find_source, latest_runs, source_row, to_run, to_source
from civicml.sources._tables import source_runs, sources
from civicml.sources.brokers import BROKERS
from civicml.sources.connections import check_target, resolve, scrub
from civicml.sources.engine import acquire, execute, source_ident
from civicml.sources.schemas import (
    DatabaseConfig,
    Source,
    SourceCreate,
    SourceKind,
    SourceRun,
    SourceStatus,
    SourceUpdate,
    StreamConfig,
    config_of,
)
from civicml.store.context import Context

__all__ = ["MAX_RUNS", "SourceService", "schedule_of"]

#: Most runs one call lists.
MAX_RUNS = 1_000


def schedule_of(cron: str | None, every: str | None, anchor: datetime) -> Schedule | None:
    """The schedule of ``cron`` or ``every`` (None: run by hand only).

    Raises:
        InvalidInputError: Both given, or either not valid.
    """
    if cron is None and every is None:
        return None
    if cron is not None and every is not None:
        raise InvalidInputError(
            "A source runs on a cron schedule or at an interval, not both.",
            hint="Give --cron '*/15 * * * *' or --every 15m.",
        )
    return parse_schedule(cron, every, anchor)


def _audited(values: Any) -> dict[str, Any]:
    return {
        "name": values["name"],
        "kind": values["kind"],
        "target": to_source(values, "").target,
        "dataset": values["dataset"],
        "config": _config_shown(values["kind"], values["config"]),
        "cron": values["cron"],
        "every_s": values["every_s"],
        "enabled": values["enabled"],
        "description": values["description"],
    }


def _config_shown(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    if kind != SourceKind.DATABASE.value:
        return dict(config)
    shown = {k: v for k, v in config.items() if k != "query"}
    return {**shown, **database.describe(DatabaseConfig.model_validate(config))}


class SourceService:
    """Database and stream sources of a project.

    Args:
        ctx: The stores, the caller and the clock.

    Example:
        >>> svc = SourceService(ctx)  # doctest: +SKIP
        >>> svc.create("benefits", SourceCreate(  # doctest: +SKIP
        ...     name="applications", kind="database", connection="warehouse",
        ...     database={"table": "applications", "watermark": "updated_at"}, every="15m"))
        >>> svc.run("benefits", "applications").versions  # doctest: +SKIP
        [1]
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)

    def create(self, project: str, request: SourceCreate) -> Source:
        """Add a source (it reads nothing until it runs).

        Raises:
            PermissionDeniedError: The caller lacks ``sources.write``.
            InvalidInputError: A bad name, URL, configuration or schedule.
            ConfigurationError: The named connection is not configured.
            ConflictError: A source of that name exists in the project.
        """
        proj = self._projects.get(project, "sources.write")
        name = validate_name("Source", request.name)
        dataset = validate_name("Dataset", request.dataset or name)
        try:
            config = config_of(request.kind, request)
        except ValueError as err:
            raise InvalidInputError(f"Invalid source: {err}.", hint="See docs/sources.md.") from err
        check_target(request.kind, request.url, request.connection, self._ctx.settings)
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        schedule = schedule_of(request.cron, request.every, now)
        roles = sorted(self._projects.access.roles_on(proj.id, proj.name))
        values: dict[str, Any] = {
            "id": new_id(),
            "project_id": proj.id,
            "name": name,
            "kind": request.kind.value,
            "connection": request.connection,
            "url": request.url,
            "dataset": dataset,
            "config": config,
            "cron": None if schedule is None else schedule.cron,
            "every_s": None if schedule is None else schedule.every_s,
            "anchor": now,
            "next_run_at": None if schedule is None else schedule.next_after(now),
            "enabled": request.enabled,
            "position": {},
            "position_seq": 0,
            "holder": None,
            "lease_until": None,
            "description": request.description,
            "created_at": now,
            "created_by": user,
            "creator_roles": ",".join(roles),
            "updated_at": now,
            "updated_by": user,
        }
        try:
            with self._ctx.db.write() as uow:
                again = find_source(uow.conn, proj, name)
                if again is not None:
                    raise self._exists(name, again.name, proj)
                uow.conn.execute(insert(sources).values(**values))
                self._audit.record(
                    uow,
                    "source.created",
                    "source",
                    values["id"],
                    project=proj.name,
                    after=_audited(values),
                )
        except IntegrityError as err:
            raise self._exists(name, name, proj) from err
        return to_source(values, proj.name)

    @staticmethod
    def _exists(name: str, existing: str, proj: Project) -> ConflictError:
        return ConflictError(
            already_exists("Source", name, existing, scope=f"project {proj.name!r}"),
            hint=f"Pick another name, or remove it: civicml sources remove {existing}",
        )

    def list(self, project: str) -> builtins.list[Source]:
        """The project's sources by name."""
        proj = self._projects.get(project, "sources.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(sources).where(sources.c.project_id == proj.id).order_by(sources.c.name)
            ).all()
        return [to_source(r, proj.name) for r in rows]

    def get(self, project: str, name: str) -> Source:
        """One source (found regardless of letter case).

        Raises:
            NotFoundError: No such source (with the closest names) or project.
        """
        proj = self._projects.get(project, "sources.read")
        with self._ctx.db.read() as conn:
            return to_source(source_row(conn, proj, name), proj.name)

    def update(self, project: str, name: str, request: SourceUpdate) -> Source:
        """Change the schedule or description, or pause / resume."""
        proj = self._projects.get(project, "sources.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = source_row(uow.conn, proj, name)
            changes: dict[str, Any] = {}
            if request.unschedule:
                changes.update(cron=None, every_s=None, next_run_at=None)
            elif request.cron is not None or request.every is not None:
                schedule = schedule_of(request.cron, request.every, now)
                assert schedule is not None  # noqa: S101 - one of them is given
                changes.update(
                    cron=schedule.cron,
                    every_s=schedule.every_s,
                    anchor=now,
                    next_run_at=schedule.next_after(now),
                )
            if request.description is not None:
                changes["description"] = request.description
            if request.enabled is not None and request.enabled != row.enabled:
                changes["enabled"] = request.enabled
                if request.enabled and row.next_run_at is not None and "next_run_at" not in changes:
                    current = schedule_of(row.cron, _every(row), row.anchor)
                    changes["next_run_at"] = None if current is None else current.next_after(now)
            if not changes:
                return to_source(row, proj.name)
            changes.update(updated_at=now, updated_by=self._ctx.principal.user)
            uow.conn.execute(update(sources).where(sources.c.id == row.id).values(**changes))
            fresh = source_row(uow.conn, proj, name)
            self._audit.record(
                uow,
                "source.updated",
                "source",
                row.id,
                project=proj.name,
                before=_audited(row._mapping),
                after=_audited(fresh._mapping),
            )
        return to_source(fresh, proj.name)

    def delete(self, project: str, name: str) -> Source:
        """Remove a source and its run records (its dataset versions stay).

        Raises:
            ConflictError: A run holds it now.
        """
        proj = self._projects.get(project, "sources.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = source_row(uow.conn, proj, name)
            if row.holder is not None and row.lease_until is not None and row.lease_until > now:
                raise ConflictError(
                    f"Source {row.name!r} is running.", hint="Remove it when the run ended."
                )
            uow.conn.execute(delete(source_runs).where(source_runs.c.source_id == row.id))
            uow.conn.execute(delete(sources).where(sources.c.id == row.id))
            LineageService(self._ctx).mark_deleted(uow, "source", row.id)
            self._audit.record(
                uow,
                "source.deleted",
                "source",
                row.id,
                project=proj.name,
                before=_audited(row._mapping),
            )
        return to_source(row, proj.name)

    def run(self, project: str, name: str) -> SourceRun:
        """Run the source now: read what is new and commit it as dataset versions.

        Returns:
            The run as recorded (succeeded, empty, or failed with its error).

        Raises:
            ConflictError: Another run holds the source.
        """
        proj = self._projects.get(project, "sources.write")
        self._projects.access.require(proj.id, proj.name, "datasets.write")
        with self._ctx.db.read() as conn:
            row = source_row(conn, proj, name)
        holder = f"manual:{self._ctx.principal.user}:{new_id()[:8]}"
        if not acquire(self._ctx, row, holder):
            raise ConflictError(
                f"Source {row.name!r} is running already.",
                hint=f"Wait for it: civicml sources status {row.name}",
            )
        with self._ctx.db.read() as conn:
            row = source_row(conn, proj, name)  # the position as committed now
        run_id = execute(self._ctx, row, proj.name, holder, "manual")
        with self._ctx.db.read() as conn:
            found = conn.execute(select(source_runs).where(source_runs.c.id == run_id)).one()
        return to_run(found, row.name)

    def runs(self, project: str, name: str, *, limit: int = 20) -> builtins.list[SourceRun]:
        """The source's runs, newest first (at most ``limit``, ≤ 1,000)."""
        if not 1 <= limit <= MAX_RUNS:
            raise InvalidInputError(
                f"limit {limit} is not from 1 to {MAX_RUNS}.", hint="Use e.g. --limit 20."
            )
        proj = self._projects.get(project, "sources.read")
        with self._ctx.db.read() as conn:
            row = source_row(conn, proj, name)
            return [to_run(r, row.name) for r in latest_runs(conn, row.id, limit)]

    def status(self, project: str, name: str, *, lag: bool = True) -> SourceStatus:
        """The source, its lag (asked of the database or broker when ``lag``) and the
        throughput of its last runs."""
        proj = self._projects.get(project, "sources.read")
        now = self._ctx.clock.now()
        with self._ctx.db.read() as conn:
            row = source_row(conn, proj, name)
            last = [to_run(r, row.name) for r in latest_runs(conn, row.id, 10)]
        busy = [r for r in last if r.rows and r.seconds]
        rate = (
            round(sum(r.rows for r in busy) / sum(r.seconds or 0 for r in busy), 1)
            if busy
            else None
        )
        found: int | None = None
        capped = False
        problem: str | None = None
        if lag:
            found, capped, problem = self._lag(row, proj.name)
        return SourceStatus(
            source=to_source(row, proj.name),
            lag=found,
            lag_capped=capped,
            lag_error=problem,
            running=row.holder is not None
            and row.lease_until is not None
            and row.lease_until > now,
            last_runs=last,
            rows_per_s=rate,
        )

    def _lag(self, row: Any, project: str) -> tuple[int | None, bool, str | None]:
        kind = SourceKind(row.kind)
        target = None
        try:
            target = resolve(kind, row.url, row.connection, self._ctx.settings)
            if kind is SourceKind.DATABASE:
                config = DatabaseConfig.model_validate(row.config)
                count = database.count_newer(target, config, dict(row.position or {}))
                return count, count >= database.LAG_CAP, None
            position = dict(row.position or {})
            stream = StreamConfig.model_validate(row.config)
            ident = source_ident(project, row.name, row.config)
            found = BROKERS[kind].lag(target, stream, ident, position)
            if found is None:
                return None, False, "The broker does not tell what it holds for the source."
            return found, False, None
        except Exception as err:  # lag is advice: never fail the status
            text = f"{type(err).__name__}: {err}"
            return None, False, (scrub(text, target) if target is not None else text)[:300]


def _every(row: Any) -> str | None:
    return None if row.every_s is None else f"{int(row.every_s)}s"
