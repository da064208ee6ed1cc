"""Deleting bytes that nothing names any more, and the rows that named them.

Artifacts are content-addressed: two owners with the same bytes share one object. So bytes are
deleted only after the index row of the erased or expired owner is gone *and committed*, and only
when no other index row names the digest. A crash in between leaves the digest listed as
pending on its erasure (or expired again by the next pass), never a row without its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, func, select

from civicml.data._tables import dataset_checks
from civicml.store._tables import artifacts
from civicml.store.context import Context

__all__ = ["delete_unreferenced", "drop_check_reports", "drop_index_rows", "referenced"]


def drop_index_rows(conn: Connection, owner_kind: str, owner_id: str, path: str | None) -> None:
    """Remove the index rows of an owner (one path, or all of them)."""
    query = delete(artifacts).where(
        artifacts.c.owner_kind == owner_kind, artifacts.c.owner_id == owner_id
    )
    if path is not None:
        query = query.where(artifacts.c.path == path)
    conn.execute(query)


def drop_check_reports(conn: Connection, version_id: str) -> list[str]:
    """Remove the index rows of the quality and personal-data reports of a purged version (their
    files hold sample rows of data that is gone); the digests they named. The check rows and
    their audit events stay: they hold counts and column names, no rows."""
    checks = select(dataset_checks.c.id).where(dataset_checks.c.dataset_version_id == version_id)
    rows = conn.execute(
        select(artifacts.c.digest).where(
            artifacts.c.owner_kind == "dataset_check", artifacts.c.owner_id.in_(checks)
        )
    ).all()
    if rows:
        conn.execute(
            delete(artifacts).where(
                artifacts.c.owner_kind == "dataset_check", artifacts.c.owner_id.in_(checks)
            )
        )
    return [r.digest for r in rows]


def referenced(conn: Connection, digest: str) -> int:
    """How many index rows still name ``digest``."""
    return int(
        conn.execute(
            select(func.count()).select_from(artifacts).where(artifacts.c.digest == digest)
        ).scalar()
        or 0
    )


def delete_unreferenced(ctx: Context, digests: Iterable[str]) -> set[str]:
    """Delete the objects of ``digests`` that no index row names; the digests deleted (or
    already gone)."""
    gone: set[str] = set()
    for digest in sorted(set(digests)):
        with ctx.db.read() as conn:
            if referenced(conn, digest):
                continue
        ctx.artifacts.delete(digest)
        gone.add(digest)
    return gone
