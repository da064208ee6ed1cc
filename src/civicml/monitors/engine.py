"""One monitor execution: claimed once, computed, stored with its report, status and audit event.

**Claim.** An execution starts as a ``running`` row inserted under ``UNIQUE(monitor_id,
fire_key)`` — the due instant of a scheduled run, ``manual:<id>`` for a run by hand — with
``INSERT … ON CONFLICT DO NOTHING RETURNING`` (psycopg answers -1 as the rowcount of such an
insert, so the row coming back is the proof). Of any number of schedulers only the inserter
computes it.

**Store.** ``report.json`` and ``report.html`` (and, for data quality, the drift engine's own
``drift.html`` with its plots) go to the artifact store first; then one unit of work ends the
execution (compare-and-set on ``status = running`` and its claimant), indexes the files, records
a ``reports`` row with the same id — kind = the monitor type, summary ``status`` /
``violations`` (and a drift verdict for data quality), subject = the monitor's name — which the
alert engine's ``monitoring`` rules read, a lineage node (endpoint, baseline dataset version and
model version → execution) and the audit event ``monitor.executed``. An execution that fails is
stored the same way with status ``failed`` and its error.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from civicml.core.errors import CivicMLError
from civicml.core.ids import new_id
from civicml.data.service import DatasetService
from civicml.evaluation.models import load_tabular_model
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.monitoring._tables import reports
from civicml.monitoring.report_html import render_html
from civicml.monitoring.schemas import BaselineConstraints, DatasetStatistics, DriftReport
from civicml.monitors._tables import monitor_executions, monitor_labels
from civicml.monitors.baseline import explainer_for
from civicml.monitors.checks import (
    Outcome,
    check_attribution,
    check_bias,
    check_data_quality,
    check_quality_window,
)
from civicml.monitors.labels import read_labels
from civicml.monitors.report_html import render_execution
from civicml.monitors.schemas import (
    AttributionConstraints,
    BiasDriftConstraints,
    ExecutionStatus,
    ModelQualityConstraints,
    MonitorBaseline,
    MonitorConfig,
    MonitorType,
)
from civicml.monitors.window import read_window
from civicml.registry.service import RegistryService
from civicml.serving._queries import find_endpoint
from civicml.serving.capture import CaptureWriter
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context

__all__ = ["REPORT_FILES", "claim", "execute"]

log = logging.getLogger("civicml.monitors")

#: Files an execution stores, and their media types.
REPORT_FILES: dict[str, str] = {
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
    "drift.html": "text/html; charset=utf-8",
}
_ERROR_MAX = 4000


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def claim(
    conn: Connection,
    row: Any,
    *,
    fire_key: str,
    trigger: str,
    end: datetime,
    now: datetime,
    claimed_by: str,
    lease_s: float,
    created_by: str,
) -> str | None:
    """Insert the ``running`` row of an execution of monitor ``row``; its id, or None when
    another process holds that ``fire_key`` already."""
    execution_id = new_id()
    inserted = conn.execute(
        _insert(conn, monitor_executions)
        .values(
            id=execution_id,
            monitor_id=row.id,
            project_id=row.project_id,
            fire_key=fire_key,
            trigger=trigger,
            status=ExecutionStatus.RUNNING.value,
            window_start=end - timedelta(seconds=row.window_s),
            window_end=end,
            started_at=now,
            ended_at=None,
            claimed_by=claimed_by[:128],
            lease_until=now + timedelta(seconds=lease_s),
            records=None,
            labeled=None,
            metrics={},
            violations=[],
            n_violations=0,
            error=None,
            created_by=created_by,
        )
        .on_conflict_do_nothing(index_elements=["monitor_id", "fire_key"])
        .returning(monitor_executions.c.id)  # rowcount is -1 for this INSERT on psycopg
    ).first()
    return None if inserted is None else execution_id


def execute(
    ctx: Context,
    row: Any,
    project: str,
    execution_id: str,
    *,
    claimed_by: str,
    writer: CaptureWriter | None = None,
) -> bool:
    """Compute the claimed execution ``execution_id`` of monitor ``row`` and store it; False
    when the claim was no longer this process's (taken for dead and marked failed)."""
    with ctx.db.read() as conn:
        execution = conn.execute(
            select(monitor_executions).where(monitor_executions.c.id == execution_id)
        ).one()
    baseline = MonitorBaseline.model_validate(row.baseline)
    try:
        outcome = _compute(ctx, row, project, execution, baseline, writer)
        error = outcome.note if outcome.status is ExecutionStatus.NO_DATA else None
    except CivicMLError as err:
        outcome = Outcome(ExecutionStatus.FAILED, 0)
        error = f"{type(err).__name__}: {err}" + (f" ({err.hint})" if err.hint else "")
    except Exception as err:  # a bug or a broken model file: recorded, never raised
        log.exception("monitor %s/%s: execution %s failed", project, row.name, execution_id)
        outcome = Outcome(ExecutionStatus.FAILED, 0)
        error = f"{type(err).__name__}: {str(err)[:500]}"
    return _store(ctx, row, project, execution, baseline, outcome, error, claimed_by)


def _labels(ctx: Context, row: Any, project_id: str, since: datetime) -> Any:
    with ctx.db.read() as conn:
        endpoint = find_endpoint(conn, project_id, row.endpoint)
        if endpoint is None:
            return read_labels([])
        uploads = conn.execute(
            select(monitor_labels.c.digest)
            .where(
                monitor_labels.c.endpoint_id == endpoint.id,
                monitor_labels.c.uploaded_at >= since,
            )
            .order_by(monitor_labels.c.uploaded_at, monitor_labels.c.id)
        ).scalars()
        digests = list(uploads)
    return read_labels([ctx.artifacts.read_bytes(d) for d in digests])


def _compute(
    ctx: Context,
    row: Any,
    project: str,
    execution: Any,
    baseline: MonitorBaseline,
    writer: CaptureWriter | None,
) -> Outcome:
    kind = MonitorType(row.type)
    config = MonitorConfig.model_validate(row.config)
    start, end = execution.window_start, execution.window_end
    window = read_window(
        ctx,
        project,
        row.endpoint,
        start,
        end,
        writer=writer,
        inputs=kind is not MonitorType.MODEL_QUALITY,
    )
    if window.rows == 0:
        return Outcome(ExecutionStatus.NO_DATA, 0, note="No captured records in the window.")
    datasets = DatasetService(ctx)
    if kind is MonitorType.DATA_QUALITY:
        dv = datasets.get_version_by_id(baseline.dataset.id)
        reference = datasets.to_pandas(dv, columns=config.columns)
        statistics = DatasetStatistics.model_validate_json(
            ctx.artifacts.read_bytes(baseline.files["statistics.json"])
        )
        return check_data_quality(
            window,
            reference,
            statistics,
            BaselineConstraints.model_validate(row.constraints),
            columns=config.columns,
            drift_share=config.drift_share,
            min_rows=config.min_rows,
        )
    if kind is MonitorType.ATTRIBUTION_DRIFT:
        mv = RegistryService(ctx).get_version(project, baseline.model.name, baseline.model.version)
        model = load_tabular_model(ctx, mv)
        reference = datasets.to_pandas(
            datasets.get_version_by_id(baseline.dataset.id), columns=model.feature_names
        )
        explainer, rows = explainer_for(model, reference, config.shap_rows)
        saved = json.loads(ctx.artifacts.read_bytes(baseline.files["baseline.json"]))
        inputs = model.validate(window.inputs[[c for c in model.feature_names]])
        window.inputs = inputs
        return check_attribution(
            window,
            explainer,
            saved["attributions"],
            AttributionConstraints.model_validate(row.constraints),
            rows=rows,
            min_rows=config.min_rows,
        )
    labels = _labels(ctx, row, execution.project_id, start)
    if kind is MonitorType.MODEL_QUALITY:
        return check_quality_window(
            window,
            labels,
            ModelQualityConstraints.model_validate(row.constraints),
            classes=list(config.classes),
            positive=config.positive_label,
            min_rows=config.min_rows,
        )
    return check_bias(
        window,
        labels,
        BiasDriftConstraints.model_validate(row.constraints),
        classes=list(config.classes),
        positive=config.positive_label,
        min_rows=config.min_rows,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _store(
    ctx: Context,
    row: Any,
    project: str,
    execution: Any,
    baseline: MonitorBaseline,
    outcome: Outcome,
    error: str | None,
    claimed_by: str,
) -> bool:
    violations = [v.model_dump(mode="json") for v in outcome.violations]
    document = {
        "monitor": row.name,
        "type": row.type,
        "endpoint": row.endpoint,
        "execution": execution.id,
        "trigger": execution.trigger,
        "status": outcome.status.value,
        "window": {"start": _iso(execution.window_start), "end": _iso(execution.window_end)},
        "records": outcome.records,
        "labeled": outcome.labeled,
        "metrics": _finite(outcome.metrics),
        "violations": violations,
        "note": outcome.note if outcome.status is not ExecutionStatus.NO_DATA else None,
        "error": error,
        "baseline": baseline.model_dump(mode="json", include={"dataset", "model", "source"}),
        "constraints_version": row.constraints_version,
        "details": _clean(outcome.details),
    }
    title = f"Monitor {row.name}: {row.type} of endpoint {row.endpoint}"
    files = {
        "report.json": json.dumps(document, indent=2, allow_nan=False, default=str).encode(),
        "report.html": render_execution(document, title=title).encode(),
    }
    drift = outcome.details.get("drift")
    if drift is not None:
        files["drift.html"] = render_html(
            DriftReport.model_validate(drift), title=f"{title}: distributions"
        ).encode()
    stored = {path: ctx.artifacts.put_bytes(data) for path, data in files.items()}
    now, user = ctx.clock.now(), ctx.principal.user
    summary: dict[str, Any] = {
        "status": outcome.status.value,
        "violations": len(violations),
        "current_rows": outcome.records,
        "reference_rows": baseline.dataset.rows,
        "monitor": row.name,
        "monitor_type": row.type,
    }
    if drift is not None:
        summary.update(
            verdict=drift["verdict"],
            dataset_drift=drift["dataset_drift"],
            n_drifted=drift["n_drifted"],
            n_columns=drift["n_columns"],
            share_drifted=drift["share_drifted"],
        )
    with ctx.db.write() as uow:
        done = uow.conn.execute(
            update(monitor_executions)
            .where(
                monitor_executions.c.id == execution.id,
                monitor_executions.c.status == ExecutionStatus.RUNNING.value,
                monitor_executions.c.claimed_by == claimed_by[:128],
            )
            .values(
                status=outcome.status.value,
                ended_at=now,
                records=outcome.records,
                labeled=outcome.labeled,
                metrics=_finite(outcome.metrics),
                violations=violations,
                n_violations=len(violations),
                error=None if error is None else error[:_ERROR_MAX],
            )
        ).rowcount
        if not done:
            return False
        infos = ArtifactIndex.add_files(
            uow,
            project_id=row.project_id,
            owner_kind="monitor_execution",
            owner_id=execution.id,
            stored=stored,
            media_types={k: REPORT_FILES[k] for k in stored},
            created_by=user,
            created_at=now,
        )
        uow.conn.execute(
            insert(reports).values(
                id=execution.id,
                project_id=row.project_id,
                kind=row.type,
                title=title[:256],
                created_at=now,
                created_by=user,
                summary=summary,
                inputs={
                    "monitor": row.name,
                    "monitor_type": row.type,
                    "execution": execution.id,
                    "window_start": _iso(execution.window_start),
                    "window_end": _iso(execution.window_end),
                },
            )
        )
        sources = [
            (
                "dataset_version",
                baseline.dataset.id,
                f"{baseline.dataset.dataset} v{baseline.dataset.version}",
            ),
            (
                "model_version",
                baseline.model.id,
                f"{baseline.model.name} v{baseline.model.version}",
            ),
        ]
        endpoint = find_endpoint(uow.conn, row.project_id, row.endpoint)
        if endpoint is not None:
            sources.insert(0, ("endpoint", endpoint.id, endpoint.name))
        LineageService(ctx).derived(
            uow,
            "monitor_execution",
            execution.id,
            name=f"{row.name} {_iso(execution.window_end)}",
            project_id=row.project_id,
            sources=sources,
            properties={"monitor": row.name, "type": row.type, "status": outcome.status.value},
        )
        AuditTrail(ctx).record(
            uow,
            "monitor.executed",
            "monitor_execution",
            execution.id,
            project=project,
            after={
                "monitor": row.name,
                "type": row.type,
                "endpoint": row.endpoint,
                "trigger": execution.trigger,
                "status": outcome.status.value,
                "violations": len(violations),
                "records": outcome.records,
                "window_start": _iso(execution.window_start),
                "window_end": _iso(execution.window_end),
                "error": None if error is None else error[:500],
                "files": {i.path: i.digest for i in infos},
            },
        )
    return True


def _finite(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """Metrics as JSON can hold them (a non-finite value becomes null)."""
    return {k: (v if v is None or math.isfinite(v) else None) for k, v in metrics.items()}


def _clean(value: Any) -> Any:
    """Plain JSON: non-finite floats as null, numpy scalars as Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fail_stale(ctx: Context, now: datetime) -> int:
    """Mark ``running`` executions whose lease expired (their process stopped) ``failed``."""
    e = monitor_executions
    stale = (e.c.status == ExecutionStatus.RUNNING.value) & (e.c.lease_until < now)
    with ctx.db.read() as conn:
        if conn.execute(select(e.c.id).where(stale).limit(1)).first() is None:
            return 0  # the common case: nothing to write
    with ctx.db.write() as uow:
        done = uow.conn.execute(
            update(e)
            .where(stale)
            .values(
                status=ExecutionStatus.FAILED.value,
                ended_at=now,
                error="The process running this execution stopped before it ended (its lease "
                "expired); the next due instant runs again.",
            )
        ).rowcount
    return int(done or 0)
