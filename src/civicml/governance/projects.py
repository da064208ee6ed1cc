"""Projects: the unit of ownership (and, later, of access control)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, NotFoundError, closest
from civicml.core.ids import new_id
from civicml.core.names import already_exists, name_key, validate_name
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.schemas import Project
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["ProjectService"]


class ProjectService:
    """Create, find and list projects.

    Project names are unique case-insensitively and found case-insensitively: ``get("Benefits")``
    is the project created as ``benefits``, whose name keeps the case it was created with.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)

    def create(self, name: str, *, description: str = "") -> Project:
        """Create a project.

        Raises:
            ConflictError: A project with that name exists, in any letter case.
        """
        validate_name("Project", name)
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

    def ensure(self, name: str) -> Project:
        """The project called ``name``, created when missing (what ``ml.project(name)`` does)."""
        validate_name("Project", name)
        with self._ctx.db.read() as conn:
            row = self._find(conn, name)
        if row is not None:
            return _project(row)
        try:
            with self._ctx.db.write() as uow:
                row = self._find(uow.conn, name)
                if row is not None:
                    return _project(row)
                return self._insert(uow, name, "")
        except IntegrityError:  # created concurrently by another process
            return self.get(name)

    def get(self, name: str) -> Project:
        with self._ctx.db.read() as conn:
            row = self._find(conn, name)
            if row is None:
                names = conn.execute(select(projects.c.name)).scalars().all()
        if row is None:
            raise NotFoundError(
                f"Project {name!r} does not exist.",
                hint=closest(name, names) or f"Create it: civicml projects create {name}",
            )
        return _project(row)

    def list(self) -> list[Project]:
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(projects).order_by(projects.c.name))
            return [_project(r) for r in rows]

    # Internals ------------------------------------------------------------------------------
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
