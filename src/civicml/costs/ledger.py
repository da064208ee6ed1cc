"""The usage ledger: line items added up per subject and period, and what a project stores.

Writers add to a line (``INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x``, the same SQL
on SQLite and PostgreSQL), so two processes recording the same run or endpoint hour never lose
each other's figures. Readers only sum lines; nothing here decides a permission.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from civicml.costs._tables import usage_lines
from civicml.costs.meter import Usage
from civicml.store._tables import artifacts

__all__ = ["UsageLine", "add_line", "hour_of", "month_bounds", "storage_bytes"]

#: A storage month, as the rate card's storage_gb_month means it.
STORAGE_MONTH = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One addition to the ledger."""

    project_id: str
    subject_kind: str  # "run" | "endpoint"
    subject_id: str
    label: str
    period_start: datetime
    usage: Usage
    invocations: int = 0
    execution_id: str | None = None
    pipeline: str | None = None


def add_line(conn: Connection, line: UsageLine, now: datetime) -> None:
    """Add ``line`` to its subject's line for its period (created when missing)."""
    u = line.usage
    values: dict[str, Any] = {
        "project_id": line.project_id,
        "subject_kind": line.subject_kind,
        "subject_id": line.subject_id,
        "label": line.label[:512],
        "execution_id": line.execution_id,
        "pipeline": None if line.pipeline is None else line.pipeline[:128],
        "period_start": line.period_start,
        "updated_at": now,
        "wall_s": u.wall_s,
        "cpu_s": u.cpu_s,
        "gpu_s": u.gpu_s,
        "memory_gb_s": u.memory_gb_s,
        "peak_memory_bytes": u.peak_memory_bytes,
        "invocations": line.invocations,
    }
    conn.execute(_upsert(conn.dialect.name), values)


@functools.cache
def _upsert(dialect_name: str) -> Any:
    """The ledger's upsert for a dialect, built once: the values come as parameters."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(usage_lines)
    new = statement.excluded
    c = usage_lines.c
    return statement.on_conflict_do_update(
        index_elements=[c.subject_kind, c.subject_id, c.period_start],
        set_={
            "updated_at": new.updated_at,
            "wall_s": c.wall_s + new.wall_s,
            "cpu_s": c.cpu_s + new.cpu_s,
            "gpu_s": c.gpu_s + new.gpu_s,
            "memory_gb_s": c.memory_gb_s + new.memory_gb_s,
            "peak_memory_bytes": func.max(c.peak_memory_bytes, new.peak_memory_bytes)
            if dialect_name == "sqlite"
            else func.greatest(c.peak_memory_bytes, new.peak_memory_bytes),
            "invocations": c.invocations + new.invocations,
        },
    )


def lines(
    conn: Connection, project_ids: Sequence[str], since: datetime, until: datetime
) -> list[Any]:
    """The ledger lines of ``project_ids`` whose period starts in ``[since, until)``."""
    if not project_ids:
        return []
    c = usage_lines.c
    return list(
        conn.execute(
            select(usage_lines).where(
                c.project_id.in_(list(project_ids)),
                c.period_start >= since,
                c.period_start < until,
            )
        ).all()
    )


def storage_bytes(conn: Connection, project_ids: Sequence[str]) -> dict[str, int]:
    """Bytes each project stores now: artifacts counted once per content digest (the same
    file logged by ten runs is stored, and priced, once)."""
    if not project_ids:
        return {}
    a = artifacts.c
    per_digest = (
        select(a.project_id, a.digest, func.max(a.size).label("size"))
        .where(a.project_id.in_(list(project_ids)))
        .group_by(a.project_id, a.digest)
        .subquery()
    )
    rows = conn.execute(
        select(per_digest.c.project_id, func.sum(per_digest.c.size)).group_by(
            per_digest.c.project_id
        )
    ).all()
    found = {str(r[0]): int(r[1] or 0) for r in rows}
    return {p: found.get(p, 0) for p in project_ids}


def hour_of(moment: datetime) -> datetime:
    """The start of ``moment``'s hour (UTC): the period of an endpoint's line."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``moment``: its start and the next month's."""
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following
