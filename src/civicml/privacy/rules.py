"""Retention rules and legal holds of datasets and endpoints' captured requests.

One row per target: its retention period (days) and whether a legal hold stands. Setting either
takes ``privacy.retention`` on the project; reading them ``datasets.read``. Every change is
audited (``retention.set``, ``legal_hold.set``, ``legal_hold.cleared``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from civicml.core.errors import InvalidInputError
from civicml.core.ids import new_id
from civicml.data.service import DatasetService
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.privacy._tables import retention_rules
from civicml.privacy.schemas import MAX_RETENTION_DAYS, RetentionRule, TargetKind
from civicml.serving._queries import endpoint_row
from civicml.store.context import Context

__all__ = ["RuleService", "held", "target_kind"]


def target_kind(kind: str) -> TargetKind:
    """``kind`` as a :class:`TargetKind`, or a readable refusal."""
    try:
        return TargetKind(str(kind).strip().lower())
    except ValueError:
        raise InvalidInputError(
            f"Kind {kind!r} has no retention.", hint="Use dataset or endpoint."
        ) from None


def held(conn: Connection, project_id: str) -> set[tuple[str, str]]:
    """``(kind, target id)`` of every target of the project under a legal hold."""
    rows = conn.execute(
        select(retention_rules.c.target_kind, retention_rules.c.target_id).where(
            retention_rules.c.project_id == project_id, retention_rules.c.legal_hold.is_(True)
        )
    ).all()
    return {(r[0], r[1]) for r in rows}


class RuleService:
    """Sets and lists retention periods and legal holds."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)

    def list(self, project: str) -> list[RetentionRule]:
        """Every rule of the project, by kind and name (``datasets.read``)."""
        proj = self._projects.get(project, "datasets.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(retention_rules)
                .where(retention_rules.c.project_id == proj.id)
                .order_by(retention_rules.c.target_kind, retention_rules.c.target_name)
            ).all()
        return [_rule(r, proj.name) for r in rows]

    def set_retention(self, project: str, kind: str, name: str, days: int | None) -> RetentionRule:
        """Keep the target's data ``days`` days (None: no period) (``privacy.retention``)."""
        if days is not None and (
            isinstance(days, bool) or not 1 <= int(days) <= MAX_RETENTION_DAYS
        ):
            raise InvalidInputError(
                f"Retention of {days} days is out of range.",
                hint=f"Use 1 to {MAX_RETENTION_DAYS} days, or none.",
            )
        return self._change(project, kind, name, "retention.set", {"days": days})

    def hold(self, project: str, kind: str, name: str, reason: str) -> RetentionRule:
        """Place a legal hold: nothing of the target is deleted while it stands."""
        text = reason.strip()
        if not 1 <= len(text) <= 2000 or "\x00" in text:
            raise InvalidInputError(
                "A legal hold needs a reason of 1 to 2000 characters (no NUL characters).",
                hint="Give the case or request reference.",
            )
        values = {"legal_hold": True, "hold_reason": text}
        return self._change(project, kind, name, "legal_hold.set", values)

    def release(self, project: str, kind: str, name: str) -> RetentionRule:
        """Clear the legal hold (retention applies again from the next pass)."""
        values = {"legal_hold": False, "hold_reason": None}
        return self._change(project, kind, name, "legal_hold.cleared", values)

    def _change(
        self, project: str, kind: str, name: str, action: str, values: dict[str, Any]
    ) -> RetentionRule:
        which = target_kind(kind)
        proj = self._projects.get(project, "privacy.retention")
        target_id, target_name = self._target(proj, which, name)
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        with self._ctx.db.write() as uow:
            conn = uow.conn
            row = conn.execute(
                select(retention_rules).where(
                    retention_rules.c.target_kind == which.value,
                    retention_rules.c.target_id == target_id,
                )
            ).first()
            before = None if row is None else _doc(row)
            if row is None:
                conn.execute(
                    insert(retention_rules).values(
                        id=new_id(),
                        project_id=proj.id,
                        target_kind=which.value,
                        target_id=target_id,
                        target_name=target_name,
                        days=None,
                        legal_hold=False,
                        hold_reason=None,
                        updated_at=now,
                        updated_by=user,
                    )
                )
            conn.execute(
                update(retention_rules)
                .where(
                    retention_rules.c.target_kind == which.value,
                    retention_rules.c.target_id == target_id,
                )
                .values(**values, target_name=target_name, updated_at=now, updated_by=user)
            )
            new = conn.execute(
                select(retention_rules).where(
                    retention_rules.c.target_kind == which.value,
                    retention_rules.c.target_id == target_id,
                )
            ).one()
            self._audit.record(
                uow,
                action,
                which.value,
                target_id,
                project=proj.name,
                before=before,
                after=_doc(new),
            )
            return _rule(new, proj.name)

    def _target(self, proj: Project, kind: TargetKind, name: str) -> tuple[str, str]:
        if kind is TargetKind.DATASET:
            ds = DatasetService(self._ctx).get_dataset(proj.name, name)
            return ds.id, ds.name
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, name)
            return row.id, row.name


def _doc(row: Any) -> dict[str, Any]:
    return {
        "name": row.target_name,
        "days": row.days,
        "legal_hold": bool(row.legal_hold),
        "hold_reason": row.hold_reason,
    }


def _rule(row: Any, project: str) -> RetentionRule:
    return RetentionRule(
        project=project,
        kind=TargetKind(row.target_kind),
        name=row.target_name,
        days=row.days,
        legal_hold=bool(row.legal_hold),
        hold_reason=row.hold_reason,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )
