"""Reading monitor rows and turning them into schemas (shared by the service's methods)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.names import already_exists, name_key
from civicml.governance.schemas import Project
from civicml.monitors._tables import monitor_executions, monitors
from civicml.monitors.quality import match_labels
from civicml.monitors.schemas import (
    Execution,
    ExecutionBrief,
    ExecutionStatus,
    GroundTruthUpload,
    Monitor,
    MonitorBaseline,
    MonitorConfig,
    MonitorType,
    MonitorViolation,
)
from civicml.store.artifact_index import ArtifactIndex

__all__ = [
    "MAX_LIST",
    "anchor_of",
    "audited",
    "brief_baseline",
    "check_limit",
    "check_positive",
    "every_text",
    "execution_row",
    "exists_error",
    "find_monitor",
    "latest_executions",
    "monitor_row",
    "to_execution",
    "to_monitor",
    "to_upload",
]

MAX_LIST = 1_000


def find_monitor(conn: Connection, proj: Project, name: str) -> Any:
    return conn.execute(
        select(monitors).where(
            monitors.c.project_id == proj.id, func.lower(monitors.c.name) == name_key(name)
        )
    ).first()


def monitor_row(conn: Connection, proj: Project, name: str) -> Any:
    row = find_monitor(conn, proj, name)
    if row is None:
        names = conn.execute(select(monitors.c.name).where(monitors.c.project_id == proj.id))
        raise NotFoundError(
            f"Monitor {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, list(names.scalars()))
            or f"List them: civicml monitors list -p {proj.name}",
        )
    return row


def execution_row(conn: Connection, row: Any, execution_id: str) -> Any:
    found = conn.execute(
        select(monitor_executions).where(
            monitor_executions.c.id == execution_id,
            monitor_executions.c.monitor_id == row.id,
        )
    ).first()
    if found is None:
        raise NotFoundError(
            f"Monitor {row.name!r} has no execution {execution_id[:64]!r}.",
            hint=f"List them: civicml monitors executions {row.name}",
        )
    return found


def latest_executions(conn: Connection, ids: Sequence[str]) -> dict[str, ExecutionBrief]:
    if not ids:
        return {}
    e = monitor_executions
    newest = (
        select(e.c.monitor_id, func.max(e.c.started_at).label("at"))
        .where(e.c.monitor_id.in_(list(ids)))
        .group_by(e.c.monitor_id)
        .subquery()
    )
    rows = conn.execute(
        select(e)
        .join(newest, (e.c.monitor_id == newest.c.monitor_id) & (e.c.started_at == newest.c.at))
        .order_by(e.c.id.desc())
    ).all()
    found: dict[str, ExecutionBrief] = {}
    for r in rows:
        found.setdefault(
            r.monitor_id,
            ExecutionBrief(
                id=r.id,
                status=ExecutionStatus(r.status),
                started_at=r.started_at,
                n_violations=r.n_violations,
            ),
        )
    return found


def every_text(row: Any) -> str | None:
    return None if row.every_s is None else f"{int(row.every_s)}s"


def anchor_of(row: Any) -> datetime:
    anchor = (row.config or {}).get("anchor")
    if isinstance(anchor, str):
        return datetime.fromisoformat(anchor.replace("Z", "+00:00"))
    created: datetime = row.created_at
    return created


def to_monitor(values: Any, project: str, latest: ExecutionBrief | None) -> Monitor:
    return Monitor(
        id=values["id"],
        project=project,
        name=values["name"],
        description=values["description"],
        type=MonitorType(values["type"]),
        endpoint=values["endpoint"],
        cron=values["cron"],
        every_s=values["every_s"],
        window_s=values["window_s"],
        enabled=values["enabled"],
        next_run_at=values["next_run_at"],
        config=MonitorConfig.model_validate(values["config"]),
        baseline=MonitorBaseline.model_validate(values["baseline"]),
        constraints=dict(values["constraints"]),
        constraints_version=values["constraints_version"],
        latest=latest,
        created_at=values["created_at"],
        created_by=values["created_by"],
        updated_at=values["updated_at"],
        updated_by=values["updated_by"],
    )


def to_execution(conn: Connection, e: Any, project: str, row: Any) -> Execution:
    return Execution(
        id=e.id,
        project=project,
        monitor=row.name,
        type=MonitorType(row.type),
        trigger=e.trigger,
        status=ExecutionStatus(e.status),
        window_start=e.window_start,
        window_end=e.window_end,
        started_at=e.started_at,
        ended_at=e.ended_at,
        records=e.records,
        labeled=e.labeled,
        metrics=dict(e.metrics or {}),
        violations=[MonitorViolation.model_validate(v) for v in e.violations or []],
        error=e.error,
        created_by=e.created_by,
        files=ArtifactIndex.list(conn, "monitor_execution", e.id),
    )


def to_upload(values: Any, project: str) -> GroundTruthUpload:
    return GroundTruthUpload(
        id=values["id"],
        project=project,
        endpoint=values["endpoint"],
        rows=values["rows"],
        columns=list(values["columns"]),
        digest=values["digest"],
        uploaded_at=values["uploaded_at"],
        uploaded_by=values["uploaded_by"],
    )


def check_positive(kind: MonitorType, config: MonitorConfig) -> None:
    if config.positive_label is None or not config.classes:
        return
    if int(match_labels([config.positive_label], list(config.classes))[0]) < 0:
        raise InvalidInputError(
            f"The positive label {config.positive_label!r} is none of the model's classes "
            f"{list(config.classes)}.",
            hint="Name one of the classes the endpoint predicts (the default is the second).",
        )
    if kind not in (MonitorType.MODEL_QUALITY, MonitorType.BIAS_DRIFT):
        raise InvalidInputError(
            f"positive_label does not apply to a {kind.value} monitor.",
            hint="Leave it out; it is for model_quality and bias_drift monitors.",
        )


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise InvalidInputError(
            f"limit must be between 1 and {MAX_LIST}, not {limit!r}.", hint="Try 100."
        )


def exists_error(name: str, existing: str, proj: Project) -> ConflictError:
    return ConflictError(
        already_exists("Monitor", name, existing, scope=f"project {proj.name!r}"),
        hint=f"Choose another name, or remove it: civicml monitors remove {existing} "
        f"-p {proj.name}",
    )


def brief_baseline(baseline: MonitorBaseline) -> dict[str, Any]:
    return {
        "version": baseline.version,
        "dataset": f"{baseline.dataset.dataset} v{baseline.dataset.version}",
        "model": f"{baseline.model.name} v{baseline.model.version}",
        "source": baseline.source,
        "files": baseline.files,
    }


def audited(values: Any) -> dict[str, Any]:
    baseline = MonitorBaseline.model_validate(values["baseline"])
    return {
        "name": values["name"],
        "type": values["type"],
        "endpoint": values["endpoint"],
        "cron": values["cron"],
        "every_s": values["every_s"],
        "window_s": values["window_s"],
        "enabled": values["enabled"],
        "description": values["description"],
        "baseline": brief_baseline(baseline),
        "constraints_version": values["constraints_version"],
        "creator_roles": values["creator_roles"],
    }
