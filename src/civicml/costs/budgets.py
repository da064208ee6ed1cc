"""Budget enforcement: the month-to-date spend of a project against its budget.

:func:`check_budget` is called where new work starts (every run's creation, every pipeline
execution), so its common case — the project has no budget, or is under it — answers from an
in-process cache without touching the database: budgets are re-read at most every
:data:`CACHE_S` seconds, and a project's spend likewise. A budget set, changed or cleared in this
process applies at once; one set by another process (the CLI beside a server) within
:data:`CACHE_S`. Crossing the warning threshold logs a warning and records the audit event
``budget.warning`` once per month (the first process to notice wins a conditional update); the
first refusal of a month records ``budget.exceeded``. A refusal stores and deletes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from civicml.core.errors import ConflictError
from civicml.core.names import name_key
from civicml.costs._tables import budgets
from civicml.costs.ledger import STORAGE_MONTH, lines, month_bounds, storage_bytes
from civicml.costs.schemas import price
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.store.context import Context

__all__ = ["CACHE_S", "BudgetExceededError", "check_budget", "forget", "month_spend", "past"]

log = logging.getLogger("civicml.costs")

#: Longest time a budget, or a project's spend, is answered from this process's cache.
CACHE_S = 5.0


class BudgetExceededError(ConflictError):
    """The project's month-to-date spend has reached its budget, which has a hard stop: new runs
    and pipeline executions are refused (409) until the budget is raised or cleared, or the
    month ends. Nothing stored is lost."""


@dataclass(slots=True)
class _Known:
    """This process's view of one database's budgets."""

    loaded: float = -1e18
    by_name: dict[str, Any] = field(default_factory=dict)  # name key -> budget row
    spend: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # id -> (t, $, m)


_CACHE: weakref.WeakKeyDictionary[Any, _Known] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def rates_of(ctx: Context) -> dict[str, float]:
    """The rate card of the settings, as a plain mapping."""
    return ctx.settings.rates.model_dump()


def month_spend(conn: Connection, ctx: Context, project_id: str, now: datetime) -> float:
    """What ``project_id`` has spent this calendar month (UTC) by ``now``: its runs and
    endpoints priced by the rate card, and its stored bytes for the part of the month gone."""
    start, end = month_bounds(now)
    rates = rates_of(ctx)
    total = 0.0
    for row in lines(conn, [project_id], start, end):
        total += price(rates, cpu_s=row.cpu_s, gpu_s=row.gpu_s, memory_gb_s=row.memory_gb_s)
    stored = storage_bytes(conn, [project_id])[project_id]
    months = max(0.0, (now - start) / STORAGE_MONTH)
    return total + price(
        rates, cpu_s=0, gpu_s=0, memory_gb_s=0, storage_gb_months=stored / 1e9 * months
    )


def past(spent: float, limit: float) -> bool:
    """Whether ``spent`` has reached ``limit``: nothing spent never has (a budget of 0 with
    free rates refuses nothing; with any price, the first cost reaches it)."""
    return spent > 0 and spent >= limit


def forget(ctx: Context, project_id: str | None = None) -> None:
    """Drop this process's cached budgets (``None``) or one project's cached spend."""
    with _LOCK:
        known = _CACHE.get(ctx.db)
        if known is None:
            return
        if project_id is None:
            known.loaded = -1e18
            known.spend.clear()
        else:
            known.spend.pop(project_id, None)


def check_budget(ctx: Context, project: str) -> None:
    """Refuse new work in ``project`` when its hard-stop budget is spent; warn once a month
    when spend passes the warning threshold. Microseconds when the cache is fresh.

    Raises:
        BudgetExceededError: Spend has reached a budget with ``hard_stop`` (409).
    """
    now_mono = time.monotonic()
    with _LOCK:
        known = _CACHE.get(ctx.db)
        if known is None:
            known = _CACHE[ctx.db] = _Known()
        stale = now_mono - known.loaded >= CACHE_S
    if stale:
        _load(ctx, known, now_mono)
    row = known.by_name.get(name_key(project))
    if row is None:
        return
    _enforce(ctx, known, row, now_mono)


def evaluate(ctx: Context, project_id: str) -> None:
    """After usage was recorded for ``project_id``: refresh its spend and give the month's
    warning if it has just passed the threshold (never raises for a hard stop)."""
    forget(ctx, project_id)
    now_mono = time.monotonic()
    with _LOCK:
        known = _CACHE.get(ctx.db)
        if known is None:
            known = _CACHE[ctx.db] = _Known()
        stale = now_mono - known.loaded >= CACHE_S
    if stale:
        _load(ctx, known, now_mono)
    for row in list(known.by_name.values()):
        if row.project_id == project_id:
            _spend(ctx, known, row, now_mono)


def _load(ctx: Context, known: _Known, now_mono: float) -> None:
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(budgets, projects.c.name.label("project")).join(
                projects, projects.c.id == budgets.c.project_id
            )
        ).all()
    with _LOCK:
        known.by_name = {name_key(r.project): r for r in rows}
        known.loaded = now_mono


def _spend(ctx: Context, known: _Known, row: Any, now_mono: float) -> float:
    """The project's month-to-date spend (cached for CACHE_S), warning once past the threshold."""
    now = ctx.clock.now()
    month = now.strftime("%Y-%m")
    cached = known.spend.get(row.project_id)
    if cached is not None and now_mono - cached[0] < CACHE_S and cached[2] == month:
        return cached[1]
    with ctx.db.read() as conn:
        spent = month_spend(conn, ctx, row.project_id, now)
    with _LOCK:
        known.spend[row.project_id] = (now_mono, spent, month)
    if past(spent, row.amount * row.warn_fraction) and row.warned_month != month:
        _record_once(ctx, row, month, spent, "warned_month", "budget.warning")
    return spent


def _enforce(ctx: Context, known: _Known, row: Any, now_mono: float) -> None:
    spent = _spend(ctx, known, row, now_mono)
    if not row.hard_stop or not past(spent, row.amount):
        return
    # Only a caller who may start work there learns of the budget (others: 404 or 403).
    ProjectService(ctx).get(row.project, "experiments.write")
    month = ctx.clock.now().strftime("%Y-%m")
    if row.stopped_month != month:
        _record_once(ctx, row, month, spent, "stopped_month", "budget.exceeded")
    raise BudgetExceededError(
        f"Project {row.project!r} has spent {spent:,.2f} {row.currency} this month "
        f"({month}), reaching its budget of {row.amount:,.2f} {row.currency} with a hard stop: "
        "no new runs or pipeline executions start until it is raised or the month ends.",
        hint=f"A project admin raises it: civicml costs budget set {row.project} --amount N "
        f"(or clears it: civicml costs budget clear {row.project}). See the spend: civicml "
        f"costs --project {row.project}.",
    )


def _record_once(
    ctx: Context, row: Any, month: str, spent: float, column: str, action: str
) -> None:
    """Mark ``column`` for ``month`` and write the audit event, if no process did it yet."""
    audit = AuditTrail(ctx)
    with ctx.db.write() as uow:
        marked = uow.conn.execute(
            update(budgets)
            .where(
                budgets.c.project_id == row.project_id,
                func.coalesce(budgets.c[column], "") != month,
            )
            .values({column: month})
        ).rowcount
        if not marked:
            return
        audit.record(
            uow,
            action,
            "budget",
            row.project_id,
            project=row.project,
            after={
                "month": month,
                "spend": round(spent, 6),
                "amount": row.amount,
                "currency": row.currency,
                "warn_fraction": row.warn_fraction,
                "hard_stop": bool(row.hard_stop),
            },
        )
    if action == "budget.warning":
        log.warning(
            "project %s has spent %.2f %s this month (%s): past %d%% of its budget of %.2f",
            row.project,
            spent,
            row.currency,
            month,
            round(row.warn_fraction * 100),
            row.amount,
        )
    forget(ctx)  # the row changed: reload it before using its months again
