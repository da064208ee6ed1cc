"""Schemas of costs that cross a boundary: reports, budgets and a run's measured usage."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_AMOUNT",
    "Budget",
    "BudgetState",
    "BudgetStatus",
    "CostLine",
    "CostReport",
    "GroupBy",
    "RunUsage",
]

#: The largest budget amount (and the largest single usage figure a client may report).
MAX_AMOUNT = 1e12
GroupBy = Literal["run", "pipeline", "endpoint", "project"]


class RunUsage(BaseModel):
    """What a run's work used, as measured where it ran (added to what the run had)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    wall_s: float = Field(ge=0, le=MAX_AMOUNT, description="Wall-clock seconds.")
    cpu_s: float = Field(ge=0, le=MAX_AMOUNT, description="CPU seconds.")
    peak_memory_bytes: int = Field(
        default=0, ge=0, le=2**62, description="Peak resident memory of the process (bytes)."
    )
    memory_gb_s: float = Field(
        default=0.0, ge=0, le=MAX_AMOUNT, description="Resident GB integrated over seconds."
    )
    gpu_s: float = Field(default=0.0, ge=0, le=MAX_AMOUNT, description="GPU-seconds.")


class CostLine(BaseModel):
    """One row of a cost report: a run, pipeline execution, endpoint or project."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: GroupBy = Field(description="What the row is: run, pipeline, endpoint or project.")
    id: str = Field(description="Run id, pipeline execution id, endpoint id or project name.")
    name: str = Field(description="experiment/run, pipeline name, endpoint name or project.")
    project: str = Field(description="Project name.")
    started_at: datetime | None = Field(
        default=None, description="Earliest period of the row (a run's start)."
    )
    runs: int = Field(default=0, description="Runs counted in the row.")
    wall_s: float = Field(description="Wall-clock seconds of the work.")
    cpu_s: float = Field(description="CPU seconds.")
    gpu_s: float = Field(description="GPU-seconds.")
    memory_gb_s: float = Field(description="Resident memory, GB times seconds.")
    peak_memory_bytes: int = Field(description="Largest peak resident memory in the row.")
    invocations: int = Field(default=0, description="Endpoint invocations answered.")
    storage_bytes: int = Field(
        default=0, description="Project rows: bytes stored, deduplicated by content."
    )
    cost: float = Field(description="Priced by the rate card, in the report's currency.")


class BudgetState(StrEnum):
    """Where a project's month-to-date spend stands against its budget."""

    OK = "ok"
    WARNING = "warning"
    EXCEEDED = "exceeded"


class Budget(BaseModel):
    """A project's monthly budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str = Field(description="Project name.")
    amount: float = Field(description="Amount per calendar month (UTC), in currency.")
    currency: str = Field(description="ISO 4217 code, e.g. 'EUR'.")
    warn_fraction: float = Field(description="Share of the amount that triggers the warning.")
    hard_stop: bool = Field(
        description="Refuse new runs and pipeline executions once spend reaches the amount."
    )
    set_by: str = Field(description="Who set it.")
    set_at: datetime = Field(description="When (UTC).")


class BudgetStatus(BaseModel):
    """A budget with the month-to-date spend it is held against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget: Budget = Field(description="The budget.")
    month: str = Field(description="The calendar month (UTC), e.g. '2026-12'.")
    spend: float = Field(description="Month-to-date spend, in currency.")
    fraction: float = Field(description="spend / amount (0 when the amount is 0 and unspent).")
    state: BudgetState = Field(description="ok, warning (past warn_fraction) or exceeded.")


class CostReport(BaseModel):
    """Usage and cost over a period, in rows of one kind, with totals and the rate card."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: datetime = Field(description="Start of the period (UTC, inclusive).")
    until: datetime = Field(description="End of the period (UTC, exclusive).")
    by: GroupBy = Field(description="What each row is.")
    currency: str = Field(description="Currency of every amount.")
    rates: dict[str, float] = Field(description="The rate card used.")
    projects: list[str] = Field(description="Projects covered.")
    lines: list[CostLine] = Field(description="Rows, most expensive first.")
    total: CostLine = Field(description="Everything in the period, storage included.")
    budgets: list[BudgetStatus] = Field(
        default_factory=list, description="Budgets of the covered projects, this month."
    )

    def fraction_of_total(self, line: CostLine) -> float:
        """A row's share of the total cost (0 when nothing cost anything)."""
        return line.cost / self.total.cost if self.total.cost > 0 else 0.0


def price(
    rates: dict[str, float],
    *,
    cpu_s: float,
    gpu_s: float,
    memory_gb_s: float,
    storage_gb_months: float = 0.0,
) -> float:
    """The cost of quantities under a rate card (hours are 3,600 seconds)."""
    total = (
        rates.get("cpu_hour", 0.0) * cpu_s / 3600
        + rates.get("gpu_hour", 0.0) * gpu_s / 3600
        + rates.get("memory_gb_hour", 0.0) * memory_gb_s / 3600
        + rates.get("storage_gb_month", 0.0) * storage_gb_months
    )
    return total if math.isfinite(total) else 0.0
