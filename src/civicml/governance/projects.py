"""Projects: the unit of ownership and of access control.

Every service reaches a project through :meth:`ProjectService.get` (or :meth:`ensure`), naming
the permission its operation needs; that is where authorization happens
(:mod:`civicml.governance.access`). Project admins grant and revoke roles on their project
(:meth:`grant`, :meth:`revoke`); every change is audited.
"""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError
from civicml.core.ids import new_id
from civicml.core.names import already_exists, name_key, user_key, validate_name, validate_user_name
from civicml.core.permissions import ADMIN_ROLE
from civicml.governance._tables import project_grants, projects
from civicml.governance.access import GRANT_CACHE, Access, project_missing
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.schemas import Grant, Project
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["ProjectService"]

_MAX_GRANTS_PER_PROJECT = 10_000


class ProjectService:
    """Create, find and list projects, and manage who holds which role on them.

    Project names are unique case-insensitively and found case-insensitively: ``get("Benefits")``
    is the project created as ``benefits``, whose name keeps the case it was created with.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self.access = Access(ctx)

    def create(self, name: str, *, description: str = "") -> Project:
        """Create a project.

        Raises:
            PermissionDeniedError: The caller may not create projects (``projects.create``).
            ConflictError: A project with that name exists, in any letter case.
        """
        validate_name("Project", name)
        self.access.require_platform("projects.create")
        try:
            with self._ctx.db.write() as uow:
                existing = self._find(uow.conn, name)
                if existing is not None:
                    raise _exists(name, existing.name)
                return self._insert(uow, name, description)
        except IntegrityError as err:
            with self._ctx.db.read() as conn:
                existing = self._find(conn, name)
            raise _exists(name, name if existing is None else existing.name) from err

    def ensure(self, name: str, need: str) -> Project:
        """The project called ``name`` (the caller needing ``need`` on it), created when missing
        and the caller may create projects (what ``ml.project(name)`` does).

        Raises:
            NotFoundError: It is missing and the caller may not create it, or the caller may not
                see it.
            PermissionDeniedError: The caller sees it but lacks ``need``.
        """
        validate_name("Project", name)
        with self._ctx.db.read() as conn:
            row = self._find(conn, name)
        if row is not None:
            self.access.require(row.id, row.name, need)
            return _project(row)
        if not self.access.may("projects.create"):
            raise project_missing(name, self.access.visible_names(), may_create=False)
        try:
            with self._ctx.db.write() as uow:
                row = self._find(uow.conn, name)
                if row is not None:
                    return _project(row)
                return self._insert(uow, name, "")
        except IntegrityError:  # created concurrently by another process
            return self.get(name, need)

    def get(self, name: str, need: str) -> Project:
        """The project called ``name``, which the caller needs ``need`` on.

        Raises:
            NotFoundError: No such project, or the caller holds no permission on it (the same
                answer, so nobody learns what they may not see).
            PermissionDeniedError: The caller sees the project but lacks ``need``.
        """
        with self._ctx.db.read() as conn:
            row = self._find(conn, name)
        if row is None:
            raise project_missing(
                name, self.access.visible_names(), self.access.may("projects.create")
            )
        self.access.require(row.id, row.name, need)
        return _project(row)

    def by_id(self, project_id: str) -> Project:
        """The project with id ``project_id`` (no permission check: callers check theirs)."""
        with self._ctx.db.read() as conn:
            row = conn.execute(select(projects).where(projects.c.id == project_id)).first()
        if row is None:  # pragma: no cover - every stored object names an existing project
            raise NotFoundError(f"Project {project_id!r} does not exist.")
        return _project(row)

    def list(self) -> list[Project]:
        """The projects the caller may see (``projects.read``)."""
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(projects).order_by(projects.c.name)).all()
        return [_project(r) for r in rows if self.access.allows(r.id, r.name, "projects.read")]

    # Members ----------------------------------------------------------------------------------
    def members(self, project: str) -> builtins.list[Grant]:
        """Who holds which role on ``project`` by grant (roles held on every project, from
        tokens or the ``roles`` setting, are not listed here)."""
        proj = self.get(project, "projects.read")
        query = (
            select(project_grants)
            .where(project_grants.c.project_id == proj.id)
            .order_by(project_grants.c.user_key, project_grants.c.role)
        )
        with self._ctx.db.read() as conn:
            return [_grant(r) for r in conn.execute(query)]

    def grant(self, project: str, user: str, role: str) -> Grant:
        """Grant ``role`` on ``project`` to ``user`` (idempotent: an existing grant is returned).

        Raises:
            PermissionDeniedError: The caller lacks ``members.write`` on the project.
            InvalidInputError: The user name is invalid, or the role is unknown or ``admin``.
        """
        proj = self.get(project, "members.write")
        name = validate_user_name(user, source="user to grant a role to")
        self._check_role(role)
        key = user_key(name)
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            found = uow.conn.execute(
                select(project_grants).where(
                    project_grants.c.project_id == proj.id,
                    project_grants.c.user_key == key,
                    project_grants.c.role == role,
                )
            ).first()
            if found is not None:
                return _grant(found)
            count = uow.conn.execute(
                select(func.count())
                .select_from(project_grants)
                .where(project_grants.c.project_id == proj.id)
            ).scalar_one()
            if count >= _MAX_GRANTS_PER_PROJECT:
                raise ConflictError(
                    f"Project {proj.name!r} already has {count} grants, the most it may hold.",
                    hint="Revoke grants nobody needs, or grant roles through tokens or the "
                    "identity provider's groups.",
                )
            row = {
                "project_id": proj.id,
                "user_key": key,
                "role": role,
                "user": name,
                "granted_at": now,
                "granted_by": self._ctx.principal.user,
            }
            uow.conn.execute(insert(project_grants).values(**row))
            self._audit.record(
                uow,
                "project.role_granted",
                "project",
                proj.id,
                project=proj.name,
                after={"user": name, "role": role},
            )
            uow.after_commit("grants", lambda: GRANT_CACHE.forget(self._ctx.db.url))
        return _grant(row)

    def revoke(self, project: str, user: str, role: str) -> None:
        """Take ``role`` on ``project`` away from ``user``.

        Raises:
            PermissionDeniedError: The caller lacks ``members.write`` on the project.
            NotFoundError: The user holds no such grant.
        """
        proj = self.get(project, "members.write")
        name = validate_user_name(user, source="user to revoke a role from")
        key = user_key(name)
        with self._ctx.db.write() as uow:
            gone = uow.conn.execute(
                delete(project_grants).where(
                    project_grants.c.project_id == proj.id,
                    project_grants.c.user_key == key,
                    project_grants.c.role == role,
                )
            ).rowcount
            if not gone:
                raise NotFoundError(
                    f"{name} holds no grant of role {role!r} on project {proj.name!r}.",
                    hint=f"civicml projects members {proj.name} lists the grants.",
                )
            self._audit.record(
                uow,
                "project.role_revoked",
                "project",
                proj.id,
                project=proj.name,
                before={"user": name, "role": role},
            )
            uow.after_commit("grants", lambda: GRANT_CACHE.forget(self._ctx.db.url))

    # Internals ------------------------------------------------------------------------------
    def _check_role(self, role: str) -> None:
        table = self.access.role_names()
        if role == ADMIN_ROLE:
            raise InvalidInputError(
                f"{ADMIN_ROLE!r} is the platform role; it is not granted per project.",
                hint="Grant 'project-admin' for everything on this project.",
            )
        if role not in table:
            raise InvalidInputError(
                f"{role!r} is not a role: the roles are {', '.join(sorted(table - {ADMIN_ROLE}))}.",
                hint="Define your own under [custom_roles] (docs/security.md).",
            )

    @staticmethod
    def _find(conn: Any, name: str) -> Any:
        return conn.execute(
            select(projects).where(func.lower(projects.c.name) == name_key(name))
        ).first()

    def _insert(self, uow: UnitOfWork, name: str, description: str) -> Project:
        now = self._ctx.clock.now()
        project = Project(
            id=new_id(),
            name=name,
            description=description,
            created_at=now,
            created_by=self._ctx.principal.user,
        )
        uow.conn.execute(insert(projects).values(**project.model_dump()))
        self._lineage.node(uow, "project", project.id, name=name, project_id=project.id)
        self._audit.record(
            uow,
            "project.created",
            "project",
            project.id,
            project=name,
            after={"name": name, "description": description},
        )
        return project


def _exists(name: str, existing: str) -> ConflictError:
    return ConflictError(
        already_exists("Project", name, existing),
        hint=f"Use it: civicml projects show {existing}",
    )


def _project(row: Any) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _grant(row: Any) -> Grant:
    values = row if isinstance(row, dict) else row._mapping
    return Grant(
        user=values["user"],
        role=values["role"],
        granted_at=values["granted_at"],
        granted_by=values["granted_by"],
    )
