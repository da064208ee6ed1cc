"""A run's measured usage: added to the run's line in the usage ledger (docs/costs.md).

The figures are measured where the work ran (:func:`civicml.costs.measure`) and sent here by
the pipeline runner, ``cm.train.*`` and tuning trials — embedded directly, remote through
``POST /api/v1/runs/{run_id}/usage``. Each call adds to what the run had, so a run measured in
several pieces (a trial and the training inside it) sums them; the line carries the run's
project, experiment/name, start and, for a pipeline step, its execution, so the report can sum
runs into pipeline executions and projects without reading runs again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from civicml.core.errors import NotFoundError
from civicml.costs.budgets import evaluate
from civicml.costs.ledger import UsageLine, add_line
from civicml.costs.meter import Usage
from civicml.costs.schemas import RunUsage
from civicml.governance._tables import projects
from civicml.governance.projects import ProjectService
from civicml.store.context import Context
from civicml.tracking import _tables as t

__all__ = ["EXECUTION_TAG", "PIPELINE_TAG", "add_run_usage", "record_run_usage"]

log = logging.getLogger("civicml.costs")

EXECUTION_TAG = "civicml.pipeline.execution"
PIPELINE_TAG = "civicml.pipeline"


def record_run_usage(ctx: Context, run_id: str, usage: Usage | RunUsage) -> None:
    """Add ``usage`` to run ``run_id``'s line (in any status: a failed run cost too).

    Raises:
        NotFoundError: No such run, or one of a project the caller may not see.
        PermissionDeniedError: The caller lacks ``experiments.write`` on the run's project.
        ValidationError: A figure is negative or not finite (from :class:`RunUsage`).
    """
    checked = usage if isinstance(usage, RunUsage) else RunUsage(**_fields(usage))
    with ctx.db.read() as conn:
        found = _run_line_home(conn, run_id)
    if found is None:
        raise NotFoundError(f"Run {run_id!r} does not exist.")
    row, tags = found
    ProjectService(ctx).get(row.project, "experiments.write")
    with ctx.db.write() as uow:
        add_line(uow.conn, _line(row, tags, run_id, checked), ctx.clock.now())
    evaluate(ctx, row.project_id)


def add_run_usage(conn: Connection, now: datetime, run_id: str, usage: Usage) -> str | None:
    """Add ``usage`` to run ``run_id``'s line inside the caller's transaction (the caller has
    checked ``experiments.write``); returns the run's project id, for
    :func:`civicml.costs.budgets.evaluate` after commit (None: no such run)."""
    found = _run_line_home(conn, run_id)
    if found is None:
        return None
    row, tags = found
    add_line(conn, _line(row, tags, run_id, RunUsage(**_fields(usage))), now)
    return str(row.project_id)


def _run_line_home(conn: Connection, run_id: str) -> tuple[Any, dict[str, str]] | None:
    row = conn.execute(
        select(
            t.runs.c.project_id,
            t.runs.c.name,
            t.runs.c.start_time,
            projects.c.name.label("project"),
            t.experiments.c.name.label("experiment"),
        )
        .join(projects, projects.c.id == t.runs.c.project_id)
        .join(t.experiments, t.experiments.c.id == t.runs.c.experiment_id)
        .where(t.runs.c.id == run_id)
    ).first()
    if row is None:
        return None
    tags = dict(
        conn.execute(
            select(t.tags.c.key, t.tags.c.value).where(
                t.tags.c.run_id == run_id, t.tags.c.key.in_([EXECUTION_TAG, PIPELINE_TAG])
            )
        ).all()
    )
    return row, {str(k): str(v) for k, v in tags.items()}


def _line(row: Any, tags: dict[str, str], run_id: str, checked: RunUsage) -> UsageLine:
    return UsageLine(
        project_id=row.project_id,
        subject_kind="run",
        subject_id=run_id,
        label=f"{row.experiment}/{row.name}",
        period_start=row.start_time,
        usage=Usage(**checked.model_dump()),
        execution_id=_short(tags.get(EXECUTION_TAG), 32),  # tags are free text: keep ids only
        pipeline=_short(tags.get(PIPELINE_TAG), 128),
    )


def _fields(usage: Usage) -> dict[str, float | int]:
    return {
        "wall_s": usage.wall_s,
        "cpu_s": usage.cpu_s,
        "peak_memory_bytes": usage.peak_memory_bytes,
        "memory_gb_s": usage.memory_gb_s,
        "gpu_s": usage.gpu_s,
    }


def _short(value: str | None, limit: int) -> str | None:
    return value if value and len(value) <= limit else None
