"""Reading source rows and turning them into schemas (shared by the service and the runner)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from civicml.core.errors import NotFoundError, closest
from civicml.core.identity import Principal
from civicml.core.names import name_key
from civicml.governance.schemas import Project
from civicml.sources._tables import source_runs, sources
from civicml.sources.engine import target_shown
from civicml.sources.schemas import RunStatus, Source, SourceKind, SourceRun

__all__ = ["find_source", "source_principal", "source_row", "to_run", "to_source"]


def find_source(conn: Connection, proj: Project, name: str) -> Any:
    return conn.execute(
        select(sources).where(
            sources.c.project_id == proj.id, func.lower(sources.c.name) == name_key(name)
        )
    ).first()


def source_row(conn: Connection, proj: Project, name: str) -> Any:
    row = find_source(conn, proj, name)
    if row is None:
        names = conn.execute(select(sources.c.name).where(sources.c.project_id == proj.id))
        raise NotFoundError(
            f"Source {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, list(names.scalars()))
            or f"List them: civicml sources list -p {proj.name}",
        )
    return row


def to_source(row: Any, project: str) -> Source:
    values = row._mapping if hasattr(row, "_mapping") else row
    return Source(
        id=values["id"],
        project=project,
        name=values["name"],
        kind=SourceKind(values["kind"]),
        target=target_shown(_Row(values)),
        dataset=values["dataset"],
        config=dict(values["config"]),
        cron=values["cron"],
        every_s=values["every_s"],
        next_run_at=values["next_run_at"],
        enabled=values["enabled"],
        position=dict(values["position"] or {}),
        description=values["description"],
        created_at=values["created_at"],
        created_by=values["created_by"],
        updated_at=values["updated_at"],
    )


class _Row:
    def __init__(self, values: Any) -> None:
        self.connection = values["connection"]
        self.url = values["url"]


def to_run(row: Any, name: str) -> SourceRun:
    values = row._mapping
    seconds = values["seconds"]
    rows = int(values["rows"])
    return SourceRun(
        id=values["id"],
        source=name,
        trigger=values["trigger"],
        status=RunStatus(values["status"]),
        started_at=values["started_at"],
        ended_at=values["ended_at"],
        rows=rows,
        skipped=int(values["skipped"]),
        versions=list(values["versions"] or []),
        position_before=dict(values["position_before"] or {}),
        position_after=dict(values["position_after"] or {}),
        seconds=seconds,
        rows_per_s=round(rows / seconds, 1) if seconds and rows else None,
        error=values["error"],
    )


def latest_runs(conn: Connection, source_id: str, limit: int) -> list[Any]:
    return list(
        conn.execute(
            select(source_runs)
            .where(source_runs.c.source_id == source_id)
            .order_by(source_runs.c.started_at.desc(), source_runs.c.id.desc())
            .limit(limit)
        ).all()
    )


def source_principal(row: Any, project: str) -> Principal:
    """Whom a scheduled run acts as: the source's creator, on its project only, with the roles
    they held there when adding it; the label ``source:<name>`` (no permission)."""
    key = project.lower()
    roles = [r for r in row.creator_roles.split(",") if r]
    return Principal(
        user=row.created_by,
        roles=frozenset({f"source:{row.name}"}),
        projects=frozenset({key}),
        grants=frozenset((key, role) for role in roles),
    )
