"""Schedules: create, list, read, pause, resume and delete them; read their firings.

A schedule starts a pipeline (``package.module:function``, inside the ``pipeline_modules``
setting) at cron instants or on audit events, with parameters from the event. Its firings run as
its creator, on its project only, with the roles the creator held there when creating it
(:func:`firing_principal`). :class:`civicml.pipelines.scheduler.Scheduler` fires them.
Creating, pausing, resuming and deleting take ``experiments.write`` on the project; reading takes
``experiments.read``.
"""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.identity import Principal
from civicml.core.ids import new_id
from civicml.core.names import already_exists, name_key, validate_name
from civicml.governance._tables import audit_head
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.pipelines._tables import pipeline_schedules, schedule_firings
from civicml.pipelines.schedule_schemas import (
    Firing,
    FiringStatus,
    Schedule,
    ScheduleCreate,
    TriggerKind,
)
from civicml.pipelines.triggers import (
    CRON,
    check_allowed,
    check_cron,
    check_match,
    check_templates,
    load_scheduled_pipeline,
    next_after,
)
from civicml.store.context import Context

__all__ = ["ScheduleService", "firing_principal", "to_firing", "to_schedule"]

MAX_FIRINGS = 1_000


def firing_principal(row: Any, project_name: str, firing_id: str) -> Principal:
    """Whom a firing of schedule ``row`` acts as: its creator, reaching only its project, with
    the roles recorded at creation granted there and no global role. The one global "role" is a
    label naming the schedule and firing, which gives no permission and which every audit event
    of the firing records (``schedule:<name>:<firing id>``)."""
    project = project_name.lower()
    roles = [r for r in row.creator_roles.split(",") if r]
    return Principal(
        user=row.created_by,
        roles=frozenset({f"schedule:{row.name}:{firing_id}"}),
        projects=frozenset({project}),
        grants=frozenset((project, role) for role in roles),
    )


class ScheduleService:
    """Schedules of pipelines in a project (cron instants and event triggers).

    Args:
        ctx: The stores and the caller.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)

    def create(self, project: str, request: ScheduleCreate) -> Schedule:
        """Create a schedule in ``project``.

        The pipeline's module is checked against ``pipeline_modules`` and imported (it is
        allowed) to check the parameters: unknown ones, missing required ones, and templates
        naming fields the trigger does not offer are refused here, not at 2 a.m.

        Raises:
            PermissionDeniedError: The caller lacks ``experiments.write`` on the project.
            ConfigurationError: The module is outside ``pipeline_modules`` (400).
            InvalidInputError: A bad name, cron expression, time zone, match or parameters.
            ConflictError: A schedule of that name exists in the project.
        """
        proj = self._projects.get(project, "experiments.write")
        name = validate_name("Schedule", request.name)
        check_allowed(request.pipeline, self._ctx.settings)
        trigger = CRON if request.cron is not None else str(request.event)
        if request.cron is not None:
            check_cron(request.cron, request.timezone)
            if request.match:
                raise InvalidInputError(
                    "A cron schedule has no event to match.",
                    hint="Drop the match filter, or use an event trigger.",
                )
        match = check_match(trigger, request.match)
        check_templates(trigger, request.params)
        self._check_params(request)
        roles = sorted(self._projects.access.roles_on(proj.id, proj.name))
        now = self._ctx.clock.now()
        values: dict[str, Any] = {
            "id": new_id(),
            "project_id": proj.id,
            "name": name,
            "pipeline_ref": request.pipeline,
            "trigger": TriggerKind.CRON.value if request.cron else TriggerKind.EVENT.value,
            "cron": None if request.cron is None else request.cron.strip(),
            "timezone": request.timezone,
            "event_type": request.event,
            "match": match,
            "parameters": request.params,
            "enabled": request.enabled,
            "starting_deadline_s": request.starting_deadline_s,
            "next_fire_at": None
            if request.cron is None
            else next_after(request.cron, request.timezone, now),
            "created_at": now,
            "created_by": self._ctx.principal.user,
            "creator_roles": ",".join(roles),
            "updated_at": now,
        }
        try:
            with self._ctx.db.write() as uow:
                existing = self._find(uow.conn, proj, name)
                if existing is not None:
                    raise _exists(name, existing.name, proj)
                head = uow.conn.execute(select(audit_head.c.seq)).scalar()
                values["events_after"] = int(head or 0)
                uow.conn.execute(insert(pipeline_schedules).values(**values))
                self._audit.record(
                    uow,
                    "pipeline.schedule.created",
                    "pipeline_schedule",
                    values["id"],
                    project=proj.name,
                    after=_audited(values),
                )
        except IntegrityError as err:  # created concurrently
            raise _exists(name, name, proj) from err
        return to_schedule(values, proj.name)

    def _check_params(self, request: ScheduleCreate) -> None:
        pipe = load_scheduled_pipeline(request.pipeline, self._ctx.settings)
        known = [*pipe.required, *pipe.params]
        for key in request.params:
            if key not in known:
                raise InvalidInputError(
                    f"Pipeline {pipe.name!r} has no parameter {key!r}.",
                    hint=f"Did you mean {closest(key, known)!r}?"
                    if closest(key, known)
                    else f"Its parameters are: {', '.join(known) or 'none'}.",
                )
        missing = [key for key in pipe.required if key not in request.params]
        if missing:
            raise InvalidInputError(
                f"Pipeline {pipe.name!r} needs a value for {', '.join(map(repr, missing))}.",
                hint='Give it in params, fixed or from the event: {"dataset": "{event.dataset}"}.',
            )

    def list(self, project: str) -> builtins.list[Schedule]:
        """The project's schedules by name."""
        proj = self._projects.get(project, "experiments.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(pipeline_schedules)
                .where(pipeline_schedules.c.project_id == proj.id)
                .order_by(pipeline_schedules.c.name)
            ).all()
        return [to_schedule(r._mapping, proj.name) for r in rows]

    def get(self, project: str, name: str) -> Schedule:
        """One schedule (found regardless of letter case).

        Raises:
            NotFoundError: No such schedule (with the closest name), or project.
        """
        proj = self._projects.get(project, "experiments.read")
        return to_schedule(self._row(proj, name)._mapping, proj.name)

    def pause(self, project: str, name: str) -> Schedule:
        """Stop firing: cron instants and events while paused are not fired later."""
        return self._enable(project, name, False)

    def resume(self, project: str, name: str) -> Schedule:
        """Fire again from now on: the next cron instant after now; events from now on."""
        return self._enable(project, name, True)

    def _enable(self, project: str, name: str, enabled: bool) -> Schedule:
        proj = self._projects.get(project, "experiments.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = self._row(proj, name, uow.conn)
            values: dict[str, Any] = {"enabled": enabled, "updated_at": now}
            if enabled and not row.enabled:
                if row.cron is not None:
                    values["next_fire_at"] = next_after(row.cron, row.timezone, now)
                head = uow.conn.execute(select(audit_head.c.seq)).scalar()
                values["events_after"] = int(head or 0)
            uow.conn.execute(
                update(pipeline_schedules).where(pipeline_schedules.c.id == row.id).values(**values)
            )
            if row.enabled != enabled:
                self._audit.record(
                    uow,
                    "pipeline.schedule.resumed" if enabled else "pipeline.schedule.paused",
                    "pipeline_schedule",
                    row.id,
                    project=proj.name,
                    before={"name": row.name, "enabled": row.enabled},
                    after={"name": row.name, "enabled": enabled},
                )
            fresh = self._row(proj, name, uow.conn)
        return to_schedule(fresh._mapping, proj.name)

    def delete(self, project: str, name: str) -> Schedule:
        """Delete a schedule and its firing records (their executions stay).

        Raises:
            NotFoundError: No such schedule.
        """
        proj = self._projects.get(project, "experiments.write")
        with self._ctx.db.write() as uow:
            row = self._row(proj, name, uow.conn)
            uow.conn.execute(
                delete(schedule_firings).where(schedule_firings.c.schedule_id == row.id)
            )
            uow.conn.execute(delete(pipeline_schedules).where(pipeline_schedules.c.id == row.id))
            self._audit.record(
                uow,
                "pipeline.schedule.deleted",
                "pipeline_schedule",
                row.id,
                project=proj.name,
                before=_audited(row._mapping),
            )
        return to_schedule(row._mapping, proj.name)

    def firings(self, project: str, name: str, *, limit: int = 100) -> builtins.list[Firing]:
        """The schedule's most recent firings, newest first (at most ``limit``, ≤ 1,000)."""
        if not 1 <= limit <= MAX_FIRINGS:
            raise InvalidInputError(
                f"limit must be between 1 and {MAX_FIRINGS}, not {limit}.", hint="Try 100."
            )
        proj = self._projects.get(project, "experiments.read")
        row = self._row(proj, name)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(schedule_firings)
                .where(schedule_firings.c.schedule_id == row.id)
                .order_by(schedule_firings.c.fire_at.desc(), schedule_firings.c.claimed_at.desc())
                .limit(limit)
            ).all()
        return [to_firing(r, row.name) for r in rows]

    # Internals --------------------------------------------------------------------------------
    @staticmethod
    def _find(conn: Any, proj: Project, name: str) -> Any:
        return conn.execute(
            select(pipeline_schedules).where(
                pipeline_schedules.c.project_id == proj.id,
                func.lower(pipeline_schedules.c.name) == name_key(name),
            )
        ).first()

    def _row(self, proj: Project, name: str, conn: Any = None) -> Any:
        if conn is None:
            with self._ctx.db.read() as reader:
                return self._row(proj, name, reader)
        row = self._find(conn, proj, name)
        if row is None:
            names = conn.execute(
                select(pipeline_schedules.c.name).where(pipeline_schedules.c.project_id == proj.id)
            ).scalars()
            near = closest(name, list(names))
            raise NotFoundError(
                f"Schedule {name!r} does not exist in project {proj.name!r}.",
                hint=near or f"List them: civicml schedules list -p {proj.name}",
            )
        return row


def _exists(name: str, existing: str, proj: Project) -> ConflictError:
    return ConflictError(
        already_exists("Schedule", name, existing, scope=f"project {proj.name!r}"),
        hint=f"Choose another name, or remove it: civicml schedules remove {existing} "
        f"-p {proj.name}",
    )


def _audited(values: Any) -> dict[str, Any]:
    return {
        "name": values["name"],
        "pipeline": values["pipeline_ref"],
        "trigger": values["trigger"],
        "cron": values["cron"],
        "timezone": values["timezone"],
        "event": values["event_type"],
        "match": values["match"],
        "parameters": values["parameters"],
        "enabled": values["enabled"],
        "creator_roles": values["creator_roles"],
    }


def to_schedule(values: Any, project: str) -> Schedule:
    """A schedule row (or the values inserted) as its schema."""
    return Schedule(
        id=values["id"],
        project=project,
        name=values["name"],
        pipeline=values["pipeline_ref"],
        trigger=TriggerKind(values["trigger"]),
        cron=values["cron"],
        timezone=values["timezone"],
        event=values["event_type"],
        match=values["match"] or {},
        params=values["parameters"] or {},
        enabled=values["enabled"],
        starting_deadline_s=values["starting_deadline_s"],
        next_fire_at=values["next_fire_at"],
        created_at=values["created_at"],
        created_by=values["created_by"],
        creator_roles=[r for r in values["creator_roles"].split(",") if r],
        updated_at=values["updated_at"],
    )


def to_firing(row: Any, schedule: str) -> Firing:
    """A firing row as its schema."""
    return Firing(
        schedule=schedule,
        fire_key=row.fire_key,
        fire_at=row.fire_at,
        event=row.event,
        parameters=row.parameters or {},
        status=FiringStatus(row.status),
        execution_id=row.execution_id,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        attempts=row.attempts,
        started_at=row.started_at,
        ended_at=row.ended_at,
        error=row.error,
    )
