"""The artifact index: which owner names which content under which relative path.

The bytes live in the :class:`~civicml.store.artifacts.ArtifactStore`; this table gives them
names. A name, once given, is never re-pointed at other bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from civicml.core.errors import ConflictError, NotFoundError
from civicml.core.ids import new_id
from civicml.store._tables import artifacts
from civicml.store.artifacts import Stored
from civicml.store.db import UnitOfWork
from civicml.store.paths import validate_relative_path
from civicml.store.schemas import ArtifactInfo

__all__ = ["ArtifactIndex"]


class ArtifactIndex:
    """Reads and writes rows of the artifact index (inside the caller's transaction)."""

    @staticmethod
    def add_files(
        uow: UnitOfWork,
        *,
        project_id: str,
        owner_kind: str,
        owner_id: str,
        stored: Mapping[str, Stored],
        media_types: Mapping[str, str],
        created_by: str,
        created_at: Any,
    ) -> list[ArtifactInfo]:
        """Name every stored file of a new owner (a report's ``report.json`` and
        ``report.html``), in path order; returns their infos."""
        return [
            ArtifactIndex.add(
                uow,
                project_id=project_id,
                owner_kind=owner_kind,
                owner_id=owner_id,
                path=path,
                stored=stored[path],
                created_by=created_by,
                created_at=created_at,
                media_type=media_types.get(path),
            )[0]
            for path in sorted(stored)
        ]

    @staticmethod
    def add(
        uow: UnitOfWork,
        *,
        project_id: str,
        owner_kind: str,
        owner_id: str,
        path: str,
        stored: Stored,
        created_by: str,
        created_at: Any,
        media_type: str | None = None,
    ) -> tuple[ArtifactInfo, bool]:
        """Name ``stored`` as ``path`` of the owner; returns (info, created).

        Raises:
            ConflictError: The path already names different content (artifacts are immutable).
        """
        validate_relative_path(path)
        existing = ArtifactIndex.find(uow.conn, owner_kind, owner_id, path)
        if existing is not None:
            if existing.digest == stored.digest:
                return existing, False
            raise ConflictError(
                f"Artifact {path!r} of {owner_kind} {owner_id} already exists with different "
                "content; artifacts are never overwritten.",
                hint="Log the new content under another path, e.g. with a version suffix.",
            )
        values = {
            "id": new_id(),
            "project_id": project_id,
            "owner_kind": owner_kind,
            "owner_id": owner_id,
            "path": path,
            "digest": stored.digest,
            "size": stored.size,
            "media_type": media_type,
            "created_at": created_at,
            "created_by": created_by,
        }
        uow.conn.execute(insert(artifacts).values(**values))
        return _info(values), True

    @staticmethod
    def find(conn: Connection, owner_kind: str, owner_id: str, path: str) -> ArtifactInfo | None:
        row = conn.execute(
            select(artifacts).where(
                artifacts.c.owner_kind == owner_kind,
                artifacts.c.owner_id == owner_id,
                artifacts.c.path == path,
            )
        ).first()
        return None if row is None else _info(row._mapping)

    @staticmethod
    def get(conn: Connection, owner_kind: str, owner_id: str, path: str) -> ArtifactInfo:
        info = ArtifactIndex.find(conn, owner_kind, owner_id, validate_relative_path(path))
        if info is None:
            raise NotFoundError(
                f"{owner_kind} {owner_id} has no artifact {path!r}.",
                hint="List its artifacts to see the paths it has.",
            )
        return info

    @staticmethod
    def list(
        conn: Connection, owner_kind: str, owner_id: str, prefix: str | None = None
    ) -> list[ArtifactInfo]:
        query = select(artifacts).where(
            artifacts.c.owner_kind == owner_kind, artifacts.c.owner_id == owner_id
        )
        if prefix:
            validate_relative_path(prefix.rstrip("/"))
            clean = prefix.rstrip("/")
            query = query.where(
                (artifacts.c.path == clean)
                | artifacts.c.path.startswith(clean + "/", autoescape=True)
            )
        return [_info(r._mapping) for r in conn.execute(query.order_by(artifacts.c.path))]


def _info(row: Any) -> ArtifactInfo:
    return ArtifactInfo(
        path=row["path"],
        digest=row["digest"],
        size=row["size"],
        media_type=row["media_type"],
        owner_kind=row["owner_kind"],
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )
