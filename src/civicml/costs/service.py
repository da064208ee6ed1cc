"""CostService: the cost report and project budgets.

The report sums the usage ledger (:mod:`civicml.costs.ledger`) over a period and prices it with
the rate card of the settings; a pipeline execution's row is the sum of its steps' runs, a
project's row the sum of its runs and endpoints plus its stored bytes. Reading costs needs
``projects.read`` on the project; setting or clearing a budget ``members.write``, the
permission of whoever administers the project (project-admin, admin).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.costs import budgets as guard
from civicml.costs._tables import budgets
from civicml.costs.ledger import STORAGE_MONTH, UsageLine, add_line, lines, storage_bytes
from civicml.costs.ledger import month_bounds as _month_bounds
from civicml.costs.meter import Usage
from civicml.costs.schemas import (
    MAX_AMOUNT,
    Budget,
    BudgetState,
    BudgetStatus,
    CostLine,
    CostReport,
    GroupBy,
    price,
)
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.store.context import Context

__all__ = ["CostService", "record_endpoint_usage"]

_GROUPS = ("run", "pipeline", "endpoint", "project")
_TICK = timedelta(microseconds=1)


@dataclass(slots=True)
class _Sum:
    """A row being added up."""

    kind: str
    id: str
    name: str
    project: str
    started_at: datetime | None = None
    runs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    memory_gb_s: float = 0.0
    peak: int = 0
    invocations: int = 0
    storage_bytes: int = 0
    storage_cost: float = 0.0

    def add(self, row: Any) -> None:
        if row.subject_kind == "run":
            self.runs += 1
        self.wall_s += row.wall_s
        self.cpu_s += row.cpu_s
        self.gpu_s += row.gpu_s
        self.memory_gb_s += row.memory_gb_s
        self.peak = max(self.peak, int(row.peak_memory_bytes))
        self.invocations += int(row.invocations)
        if self.started_at is None or row.period_start < self.started_at:
            self.started_at = row.period_start

    def line(self, rates: dict[str, float]) -> CostLine:
        cost = price(rates, cpu_s=self.cpu_s, gpu_s=self.gpu_s, memory_gb_s=self.memory_gb_s)
        return CostLine(
            kind=self.kind,
            id=self.id,
            name=self.name,
            project=self.project,
            started_at=self.started_at,
            runs=self.runs,
            wall_s=self.wall_s,
            cpu_s=self.cpu_s,
            gpu_s=self.gpu_s,
            memory_gb_s=self.memory_gb_s,
            peak_memory_bytes=self.peak,
            invocations=self.invocations,
            storage_bytes=self.storage_bytes,
            cost=cost + self.storage_cost,
        )


class CostService:
    """The cost report and budgets of projects."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)

    # Report -------------------------------------------------------------------------------
    def report(
        self,
        project: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        by: GroupBy = "project",
    ) -> CostReport:
        """Usage and cost from ``since`` (default: the start of this month, UTC) to ``until``
        (default: now), one row per ``by`` (run, pipeline, endpoint or project).

        Storage is priced at the bytes stored now for the part of the period that has passed
        (30-day months); it is in the project rows and the total.

        Raises:
            InvalidInputError: ``by`` is unknown, or ``since`` is not before ``until``.
            NotFoundError: The project does not exist or the caller may not see it.
            PermissionDeniedError: The caller lacks ``projects.read`` on it.
        """
        if by not in _GROUPS:
            raise InvalidInputError(
                f"Cannot group costs by {by!r}.", hint="Use run, pipeline, endpoint or project."
            )
        now = self._ctx.clock.now()
        start = _utc(since, "since") if since is not None else _month_bounds(now)[0]
        end = _utc(until, "until") if until is not None else now + _TICK  # now included
        if start >= end:
            raise InvalidInputError(
                f"The period from {start.isoformat()} to {end.isoformat()} is empty.",
                hint="Give --since before --until (dates as YYYY-MM-DD).",
            )
        covered = self._covered(project)
        names = {p.id: p.name for p in covered}
        rates = guard.rates_of(self._ctx)
        with self._ctx.db.read() as conn:
            rows = lines(conn, list(names), start, end)
            stored = storage_bytes(conn, list(names))
        months = max(0.0, (min(end, now) - start) / STORAGE_MONTH)
        groups: dict[tuple[str, str], _Sum] = {}
        total = _Sum("project", "*", "total", project or "*")
        for row in rows:
            key = _group_key(by, row)
            if key is not None:
                if key not in groups:
                    groups[key] = _new_sum(by, key, row, names[row.project_id])
                groups[key].add(row)
            total.add(row)
        if by == "project":
            for project_id, name in names.items():
                row_sum = groups.setdefault(
                    ("project", project_id), _Sum("project", name, name, name)
                )
                row_sum.storage_bytes = stored.get(project_id, 0)
                row_sum.storage_cost = price(
                    rates,
                    cpu_s=0,
                    gpu_s=0,
                    memory_gb_s=0,
                    storage_gb_months=row_sum.storage_bytes / 1e9 * months,
                )
        total.storage_bytes = sum(stored.values())
        total.storage_cost = price(
            rates,
            cpu_s=0,
            gpu_s=0,
            memory_gb_s=0,
            storage_gb_months=total.storage_bytes / 1e9 * months,
        )
        report_lines = sorted(
            (g.line(rates) for g in groups.values()),
            key=lambda line: (-line.cost, -line.cpu_s, line.name),
        )
        return CostReport(
            since=start,
            until=end,
            by=by,
            currency=self._ctx.settings.currency,
            rates=rates,
            projects=sorted(names.values()),
            lines=report_lines,
            total=total.line(rates),
            budgets=self._statuses(covered),
        )

    def report_html(self, project: str | None = None, **kwargs: Any) -> str:
        """:meth:`report` as a self-contained HTML page with a bar chart (inline SVG, no
        scripts)."""
        from civicml.costs.report_html import render_report

        return render_report(self.report(project, **kwargs))

    def _covered(self, project: str | None) -> builtins.list[Project]:
        if project is not None:
            return [self._projects.get(project, "projects.read")]
        return self._projects.list()  # those with projects.read

    # Budgets ------------------------------------------------------------------------------
    def set_budget(
        self,
        project: str,
        *,
        amount: float,
        warn_fraction: float = 0.8,
        hard_stop: bool = False,
    ) -> BudgetStatus:
        """Set (or replace) the project's monthly budget, in the settings' currency.

        Raises:
            InvalidInputError: The amount or the fraction is out of range.
            PermissionDeniedError: The caller lacks ``members.write`` on the project.
        """
        _check_budget_values(amount, warn_fraction)
        proj = self._projects.get(project, "members.write")
        now = self._ctx.clock.now()
        currency = self._ctx.settings.currency
        with self._ctx.db.write() as uow:
            old = uow.conn.execute(select(budgets).where(budgets.c.project_id == proj.id)).first()
            values = {
                "amount": float(amount),
                "currency": currency,
                "warn_fraction": float(warn_fraction),
                "hard_stop": bool(hard_stop),
                "set_by": self._ctx.principal.user,
                "set_at": now,
            }
            if old is None:
                uow.conn.execute(budgets.insert().values(project_id=proj.id, **values))
            else:  # a changed budget is judged anew this month: warn again if still past it
                uow.conn.execute(
                    budgets.update()
                    .where(budgets.c.project_id == proj.id)
                    .values(**values, warned_month=None, stopped_month=None)
                )
            self._audit.record(
                uow,
                "budget.set",
                "budget",
                proj.id,
                project=proj.name,
                before=None if old is None else _budget_doc(old),
                after={k: v for k, v in values.items() if k not in ("set_by", "set_at")},
            )
        guard.forget(self._ctx)
        status = self.get_budget(project)
        if status is None:  # pragma: no cover - written just above
            raise NotFoundError(f"Project {proj.name!r} has no budget.")
        return status

    def get_budget(self, project: str) -> BudgetStatus | None:
        """The project's budget and this month's spend against it, or ``None``.

        Raises:
            PermissionDeniedError: The caller lacks ``projects.read`` on the project.
        """
        proj = self._projects.get(project, "projects.read")
        found = self._statuses([proj])
        return found[0] if found else None

    def clear_budget(self, project: str) -> None:
        """Remove the project's budget (nothing is refused for spend any more).

        Raises:
            NotFoundError: The project has no budget.
            PermissionDeniedError: The caller lacks ``members.write`` on the project.
        """
        proj = self._projects.get(project, "members.write")
        with self._ctx.db.write() as uow:
            old = uow.conn.execute(select(budgets).where(budgets.c.project_id == proj.id)).first()
            if old is None:
                raise NotFoundError(
                    f"Project {proj.name!r} has no budget.",
                    hint=f"Set one: civicml costs budget set {proj.name} --amount N",
                )
            uow.conn.execute(delete(budgets).where(budgets.c.project_id == proj.id))
            self._audit.record(
                uow,
                "budget.cleared",
                "budget",
                proj.id,
                project=proj.name,
                before=_budget_doc(old),
            )
        guard.forget(self._ctx)

    def _statuses(self, covered: Iterable[Project]) -> builtins.list[BudgetStatus]:
        by_id = {p.id: p for p in covered}
        if not by_id:
            return []
        now = self._ctx.clock.now()
        month = now.strftime("%Y-%m")
        found: builtins.list[BudgetStatus] = []
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(budgets).where(budgets.c.project_id.in_(list(by_id)))).all()
            for row in rows:
                spent = guard.month_spend(conn, self._ctx, row.project_id, now)
                fraction = spent / row.amount if row.amount > 0 else (1.0 if spent > 0 else 0.0)
                state = (
                    BudgetState.EXCEEDED
                    if guard.past(spent, row.amount)
                    else BudgetState.WARNING
                    if guard.past(spent, row.amount * row.warn_fraction)
                    else BudgetState.OK
                )
                found.append(
                    BudgetStatus(
                        budget=Budget(
                            project=by_id[row.project_id].name,
                            amount=row.amount,
                            currency=row.currency,
                            warn_fraction=row.warn_fraction,
                            hard_stop=row.hard_stop,
                            set_by=row.set_by,
                            set_at=row.set_at,
                        ),
                        month=month,
                        spend=spent,
                        fraction=fraction,
                        state=state,
                    )
                )
        return sorted(found, key=lambda s: s.budget.project)


def record_endpoint_usage(
    ctx: Context, items: Iterable[tuple[str, str, str, float, int]], now: datetime
) -> None:
    """Add endpoints' CPU seconds and invocations to their lines for ``now``'s hour, in one
    transaction. ``items``: (project id, endpoint id, endpoint name, cpu seconds, invocations).
    Housekeeping of the serving runtime: no caller permission applies."""
    from civicml.costs.ledger import hour_of

    batch = [i for i in items if i[3] > 0 or i[4] > 0]
    if not batch:
        return
    with ctx.db.write() as uow:
        for project_id, endpoint_id, name, cpu_s, invocations in batch:
            add_line(
                uow.conn,
                UsageLine(
                    project_id=project_id,
                    subject_kind="endpoint",
                    subject_id=endpoint_id,
                    label=name,
                    period_start=hour_of(now),
                    usage=Usage(cpu_s=cpu_s),
                    invocations=invocations,
                ),
                now,
            )
    for project_id in {i[0] for i in batch}:
        guard.evaluate(ctx, project_id)


def _group_key(by: str, row: Any) -> tuple[str, str] | None:
    if by == "run":
        return ("run", row.subject_id) if row.subject_kind == "run" else None
    if by == "endpoint":
        return ("endpoint", row.subject_id) if row.subject_kind == "endpoint" else None
    if by == "pipeline":
        return ("pipeline", row.execution_id) if row.execution_id else None
    return ("project", row.project_id)


def _new_sum(by: str, key: tuple[str, str], row: Any, project: str) -> _Sum:
    if by == "project":
        return _Sum("project", project, project, project)
    if by == "pipeline":
        return _Sum("pipeline", key[1], row.pipeline or "pipeline", project)
    return _Sum(by, key[1], row.label, project)


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _check_budget_values(amount: float, warn_fraction: float) -> None:
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not (0 <= amount <= MAX_AMOUNT)
    ):
        raise InvalidInputError(
            f"Budget amount {amount!r} is not valid.",
            hint=f"Give an amount per month from 0 to {MAX_AMOUNT:g}, e.g. --amount 500.",
        )
    if (
        isinstance(warn_fraction, bool)
        or not isinstance(warn_fraction, int | float)
        or not (0 < warn_fraction <= 1)
    ):
        raise InvalidInputError(
            f"Warning fraction {warn_fraction!r} is not valid.",
            hint="Give a share of the amount above 0 and at most 1, e.g. 0.8 for 80 %.",
        )


def _budget_doc(row: Any) -> dict[str, Any]:
    return {
        "amount": row.amount,
        "currency": row.currency,
        "warn_fraction": row.warn_fraction,
        "hard_stop": bool(row.hard_stop),
    }
