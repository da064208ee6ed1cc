"""Reading endpoint rows, shared by the service, the runtime and capture."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from civicml.core.errors import NotFoundError, closest
from civicml.core.names import name_key
from civicml.governance.schemas import Project
from civicml.serving._tables import endpoints
from civicml.serving.schemas import CaptureConfig, EndpointInfo, EndpointStatus

__all__ = ["endpoint_row", "find_endpoint", "to_info"]


def find_endpoint(
    conn: Connection, project_id: str, name: str, *, lock: bool = False
) -> Any | None:
    """The endpoint row, or None."""
    query = select(endpoints).where(  # names are case-insensitive
        endpoints.c.project_id == project_id, func.lower(endpoints.c.name) == name_key(name)
    )
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def endpoint_row(conn: Connection, proj: Project, name: str, *, lock: bool = False) -> Any:
    """The endpoint row; NotFoundError with close names (or how to deploy) otherwise."""
    row = find_endpoint(conn, proj.id, name, lock=lock)
    if row is None:
        names = conn.execute(
            select(endpoints.c.name).where(endpoints.c.project_id == proj.id)
        ).scalars()
        raise NotFoundError(
            f"Endpoint {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, names)
            or f"Deploy it: civicml endpoints deploy {name} MODEL VERSION --project {proj.name}",
        )
    return row


def to_info(row: Any, project: str) -> EndpointInfo:
    """The schema of an endpoint row (a Row or a dict of its values)."""
    values = row if isinstance(row, dict) else row._mapping
    return EndpointInfo(
        id=values["id"],
        project=project,
        name=values["name"],
        model_name=values["model_name"],
        model_version=values["model_version"],
        model_version_id=values["model_version_id"],
        status=EndpointStatus(values["status"]),
        capture=CaptureConfig(
            enabled=bool(values["capture_enabled"]), percent=float(values["capture_percent"])
        ),
        created_at=values["created_at"],
        created_by=values["created_by"],
        updated_at=values["updated_at"],
        updated_by=values["updated_by"],
    )
