"""The monitors service: scheduled monitors of endpoints, their baselines, constraints,
executions and ground truth, for ``ctx.principal``.

Creating, changing, removing and running monitors and uploading ground truth take
``monitoring.write`` on the project; reading them takes ``monitoring.read``. Computing a baseline
or an execution also reads the endpoint (``endpoints.read``), the model version
(``models.read``), the baseline dataset and the captured records (``datasets.read``: captures are
residents' inputs) — every built-in role with ``monitoring.write`` holds those. Every change is
one unit of work with its audit event (``monitor.created``, ``…updated``,
``…constraints_changed``, ``…baseline_changed``, ``…deleted``, ``…ground_truth_uploaded``,
``…executed``); executions are described in :mod:`civicml.monitors.engine`, scheduling in
:mod:`civicml.monitors.runner`.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.core.ids import new_id
from civicml.core.names import name_key, validate_name
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.monitors._rows import (
    MAX_LIST,
    anchor_of,
    audited,
    brief_baseline,
    check_limit,
    check_positive,
    every_text,
    execution_row,
    exists_error,
    find_monitor,
    latest_executions,
    monitor_row,
    to_execution,
    to_monitor,
    to_upload,
)
from civicml.monitors._tables import monitor_executions, monitor_labels, monitors
from civicml.monitors.baseline import compute_baseline, constraints_model
from civicml.monitors.engine import REPORT_FILES, claim, execute
from civicml.monitors.labels import label_table, to_parquet
from civicml.monitors.report_html import render_monitor_page
from civicml.monitors.schedule import parse_schedule, parse_window
from civicml.monitors.schemas import (
    Execution,
    ExecutionStatus,
    GroundTruthUpload,
    Monitor,
    MonitorBaseline,
    MonitorConfig,
    MonitorCreate,
    MonitorType,
    MonitorUpdate,
)
from civicml.registry.service import RegistryService
from civicml.serving._queries import endpoint_row
from civicml.serving.capture import CaptureWriter
from civicml.serving.service import EndpointService
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.artifacts import Stored
from civicml.store.context import Context

__all__ = ["MAX_LIST", "MonitorService"]

_TICK = timedelta(milliseconds=1)  # capture times are in milliseconds
_BASELINE_MEDIA = {
    "statistics.json": "application/json",
    "constraints.json": "application/json",
    "baseline.json": "application/json",
}


class MonitorService:
    """Scheduled monitors of a project's endpoints.

    Args:
        ctx: The stores, the caller and the clock.
        writer: This process's capture writer (flushed before a window is read).

    Example:
        >>> svc = MonitorService(ctx)  # doctest: +SKIP
        >>> request = MonitorCreate(  # doctest: +SKIP
        ...     name="quality", endpoint="eligibility", type="model_quality", every="1h"
        ... )
        >>> svc.create("benefits", request)  # doctest: +SKIP
        >>> svc.run("benefits", "quality").status  # doctest: +SKIP
        <ExecutionStatus.COMPLETED: 'completed'>
    """

    def __init__(self, ctx: Context, writer: CaptureWriter | None = None) -> None:
        self._ctx = ctx
        self._writer = writer
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)

    # Monitors ---------------------------------------------------------------------------------
    def create(self, project: str, request: MonitorCreate) -> Monitor:
        """Create a monitor and compute its baseline.

        Raises:
            PermissionDeniedError: The caller lacks ``monitoring.write`` (or may not read the
                endpoint, model or baseline data).
            NotFoundError: The endpoint, model version or baseline dataset does not exist.
            InvalidInputError: A bad name, schedule, window, option or constraints; no
                training data to baseline with; a model that does not fit the type.
            ConflictError: A monitor of that name exists in the project.
        """
        proj = self._projects.get(project, "monitoring.write")
        name = validate_name("Monitor", request.name)
        now = self._ctx.clock.now()
        schedule = parse_schedule(request.cron, request.every, now)
        window_s = parse_window(request.window, schedule)
        with self._ctx.db.read() as conn:
            existing = find_monitor(conn, proj, name)
        if existing is not None:
            raise exists_error(name, existing.name, proj)
        endpoint = EndpointService(self._ctx).get(proj.name, request.endpoint)
        if request.baseline_dataset is not None:
            validate_name("Dataset", request.baseline_dataset)
        mv = RegistryService(self._ctx).get_version(
            proj.name, endpoint.model_name, request.model_version or endpoint.model_version
        )
        config: dict[str, Any] = {
            "drift_share": request.drift_share,
            "min_rows": request.min_rows or self._ctx.settings.drift_min_rows,
            "positive_label": request.positive_label,
            "tolerance": request.tolerance,
            "shap_rows": self._ctx.settings.monitors_shap_rows,
            "anchor": None if schedule.every_s is None else schedule.anchor.isoformat(),
        }
        result = compute_baseline(
            self._ctx,
            proj.name,
            request.type,
            mv,
            dataset=request.baseline_dataset,
            version=request.baseline_version,
            config=config,
            constraints=request.constraints,
            facets=request.facets,
        )
        checked = MonitorConfig.model_validate(result.config)
        check_positive(request.type, checked)
        monitor_id = new_id()
        user = self._ctx.principal.user
        baseline, stored = self._baseline(result, 1, now, user)
        roles = sorted(self._projects.access.roles_on(proj.id, proj.name))
        values: dict[str, Any] = {
            "id": monitor_id,
            "project_id": proj.id,
            "name": name,
            "description": request.description,
            "type": request.type.value,
            "endpoint": endpoint.name,
            "cron": schedule.cron,
            "every_s": schedule.every_s,
            "window_s": window_s,
            "config": checked.model_dump(mode="json"),
            "baseline": baseline.model_dump(mode="json"),
            "constraints": result.constraints,
            "constraints_version": 1,
            "enabled": request.enabled,
            "next_run_at": schedule.next_after(now),
            "created_at": now,
            "created_by": user,
            "creator_roles": ",".join(roles),
            "updated_at": now,
            "updated_by": user,
        }
        try:
            with self._ctx.db.write() as uow:
                again = find_monitor(uow.conn, proj, name)
                if again is not None:
                    raise exists_error(name, again.name, proj)
                uow.conn.execute(insert(monitors).values(**values))
                self._index_baseline(uow, proj, monitor_id, 1, stored, now)
                LineageService(self._ctx).derived(
                    uow,
                    "monitor",
                    monitor_id,
                    name=name,
                    project_id=proj.id,
                    sources=[
                        ("endpoint", endpoint.id, endpoint.name),
                        (
                            "dataset_version",
                            baseline.dataset.id,
                            f"{baseline.dataset.dataset} v{baseline.dataset.version}",
                        ),
                        ("model_version", mv.id, f"{mv.name} v{mv.version}"),
                    ],
                    properties={"type": request.type.value},
                )
                self._audit.record(
                    uow,
                    "monitor.created",
                    "monitor",
                    monitor_id,
                    project=proj.name,
                    after=audited(values),
                )
        except IntegrityError as err:  # created concurrently
            raise exists_error(name, name, proj) from err
        return to_monitor(values, proj.name, None)

    def _baseline(
        self, result: Any, version: int, now: datetime, user: str
    ) -> tuple[MonitorBaseline, dict[str, Stored]]:
        stored = {n: self._ctx.artifacts.put_bytes(d) for n, d in result.files.items()}
        baseline = MonitorBaseline(
            dataset=result.dataset,
            model=result.model,
            source=result.source,
            version=version,
            computed_at=now,
            computed_by=user,
            metrics=result.metrics,
            files={n: s.digest for n, s in stored.items()},
        )
        return baseline, stored

    def _index_baseline(
        self,
        uow: Any,
        proj: Project,
        monitor_id: str,
        version: int,
        stored: dict[str, Stored],
        now: datetime,
    ) -> None:
        for file_name, found in stored.items():
            ArtifactIndex.add(
                uow,
                project_id=proj.id,
                owner_kind="monitor",
                owner_id=monitor_id,
                path=f"baseline/{version}/{file_name}",
                stored=found,
                created_by=self._ctx.principal.user,
                created_at=now,
                media_type=_BASELINE_MEDIA.get(file_name),
            )

    def list(self, project: str, *, endpoint: str | None = None) -> builtins.list[Monitor]:
        """The project's monitors by name (only those of ``endpoint`` when given)."""
        proj = self._projects.get(project, "monitoring.read")
        query = select(monitors).where(monitors.c.project_id == proj.id)
        if endpoint is not None:
            query = query.where(func.lower(monitors.c.endpoint) == name_key(endpoint))
        with self._ctx.db.read() as conn:
            rows = conn.execute(query.order_by(monitors.c.name)).all()
            latest = latest_executions(conn, [r.id for r in rows])
        return [to_monitor(r._mapping, proj.name, latest.get(r.id)) for r in rows]

    def get(self, project: str, name: str) -> Monitor:
        """One monitor (found regardless of letter case).

        Raises:
            NotFoundError: No such monitor (with the closest names), or project.
        """
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            row = monitor_row(conn, proj, name)
            latest = latest_executions(conn, [row.id])
        return to_monitor(row._mapping, proj.name, latest.get(row.id))

    def update(self, project: str, name: str, request: MonitorUpdate) -> Monitor:
        """Change the schedule, window, description, or pause / resume (a resumed or
        rescheduled monitor runs next at the first due instant after now)."""
        proj = self._projects.get(project, "monitoring.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = monitor_row(uow.conn, proj, name)
            changes: dict[str, Any] = {}
            config = dict(row.config)
            rescheduled = request.cron is not None or request.every is not None
            if rescheduled:
                schedule = parse_schedule(request.cron, request.every, now)
                config["anchor"] = None if schedule.every_s is None else now.isoformat()
                changes.update(cron=schedule.cron, every_s=schedule.every_s, config=config)
            else:
                schedule = parse_schedule(row.cron, every_text(row), anchor_of(row))
            if request.window is not None:
                changes["window_s"] = parse_window(request.window, schedule)
            if request.description is not None:
                changes["description"] = request.description
            if request.enabled is not None and request.enabled != row.enabled:
                changes["enabled"] = request.enabled
            if rescheduled or changes.get("enabled") is True:
                changes["next_run_at"] = schedule.next_after(now)
            if changes:
                changes.update(updated_at=now, updated_by=self._ctx.principal.user)
                uow.conn.execute(update(monitors).where(monitors.c.id == row.id).values(**changes))
                fresh = monitor_row(uow.conn, proj, name)
                self._audit.record(
                    uow,
                    "monitor.updated",
                    "monitor",
                    row.id,
                    project=proj.name,
                    before=audited(row._mapping),
                    after=audited(fresh._mapping),
                )
            else:
                fresh = row
            latest = latest_executions(uow.conn, [row.id])
        return to_monitor(fresh._mapping, proj.name, latest.get(row.id))

    def set_constraints(self, project: str, name: str, constraints: dict[str, Any]) -> Monitor:
        """Replace the monitor's constraints (the type's document, see docs/monitors.md).

        Raises:
            InvalidInputError: The document does not have the type's shape.
        """
        proj = self._projects.get(project, "monitoring.write")
        now = self._ctx.clock.now()
        with self._ctx.db.write() as uow:
            row = monitor_row(uow.conn, proj, name)
            kind = MonitorType(row.type)
            data = dict(constraints)
            if kind is MonitorType.BIAS_DRIFT:
                data.setdefault("source", "monitor")
            checked = constraints_model(kind, data).model_dump(mode="json")
            if kind is MonitorType.MODEL_QUALITY and checked["problem_type"] != row.config.get(
                "problem_type"
            ):
                raise InvalidInputError(
                    f"The constraints are for {checked['problem_type']}; the model's problem "
                    f"is {row.config.get('problem_type')}.",
                    hint="Edit the constraints 'civicml monitors show' prints.",
                )
            uow.conn.execute(
                update(monitors)
                .where(monitors.c.id == row.id)
                .values(
                    constraints=checked,
                    constraints_version=row.constraints_version + 1,
                    updated_at=now,
                    updated_by=self._ctx.principal.user,
                )
            )
            self._audit.record(
                uow,
                "monitor.constraints_changed",
                "monitor",
                row.id,
                project=proj.name,
                before={
                    "name": row.name,
                    "constraints": row.constraints,
                    "version": row.constraints_version,
                },
                after={
                    "name": row.name,
                    "constraints": checked,
                    "version": row.constraints_version + 1,
                },
            )
            fresh = monitor_row(uow.conn, proj, name)
            latest = latest_executions(uow.conn, [row.id])
        return to_monitor(fresh._mapping, proj.name, latest.get(row.id))

    def rebaseline(
        self,
        project: str,
        name: str,
        *,
        dataset: str | None = None,
        version: int | str | None = None,
        model_version: int | None = None,
    ) -> Monitor:
        """Compute a new baseline (by default from the training data of the version the endpoint
        serves now) and take its suggested constraints."""
        proj = self._projects.get(project, "monitoring.write")
        with self._ctx.db.read() as conn:
            row = monitor_row(conn, proj, name)
        endpoint = EndpointService(self._ctx).get(proj.name, row.endpoint)
        mv = RegistryService(self._ctx).get_version(
            proj.name, endpoint.model_name, model_version or endpoint.model_version
        )
        config = dict(row.config)
        result = compute_baseline(
            self._ctx,
            proj.name,
            MonitorType(row.type),
            mv,
            dataset=dataset,
            version=version,
            config=config,
            constraints=None,
            facets=None,
        )
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        old = MonitorBaseline.model_validate(row.baseline)
        baseline, stored = self._baseline(result, old.version + 1, now, user)
        with self._ctx.db.write() as uow:
            current = monitor_row(uow.conn, proj, name)
            if current.id != row.id:  # pragma: no cover - replaced meanwhile
                raise ConflictError(f"Monitor {name!r} was replaced meanwhile.", hint="Retry.")
            uow.conn.execute(
                update(monitors)
                .where(monitors.c.id == row.id)
                .values(
                    baseline=baseline.model_dump(mode="json"),
                    config=MonitorConfig.model_validate(result.config).model_dump(mode="json"),
                    constraints=result.constraints,
                    constraints_version=current.constraints_version + 1,
                    updated_at=now,
                    updated_by=user,
                )
            )
            self._index_baseline(uow, proj, row.id, baseline.version, stored, now)
            self._audit.record(
                uow,
                "monitor.baseline_changed",
                "monitor",
                row.id,
                project=proj.name,
                before={"name": row.name, "baseline": brief_baseline(old)},
                after={
                    "name": row.name,
                    "baseline": brief_baseline(baseline),
                    "constraints": result.constraints,
                },
            )
            fresh = monitor_row(uow.conn, proj, name)
            latest = latest_executions(uow.conn, [row.id])
        return to_monitor(fresh._mapping, proj.name, latest.get(row.id))

    def delete(self, project: str, name: str) -> Monitor:
        """Remove a monitor and its execution records (their reports stay listed for alerts
        and the audit trail keeps every event)."""
        proj = self._projects.get(project, "monitoring.write")
        with self._ctx.db.write() as uow:
            row = monitor_row(uow.conn, proj, name)
            latest = latest_executions(uow.conn, [row.id])
            uow.conn.execute(
                delete(monitor_executions).where(monitor_executions.c.monitor_id == row.id)
            )
            uow.conn.execute(delete(monitors).where(monitors.c.id == row.id))
            LineageService(self._ctx).mark_deleted(uow, "monitor", row.id)
            self._audit.record(
                uow,
                "monitor.deleted",
                "monitor",
                row.id,
                project=proj.name,
                before=audited(row._mapping),
            )
        return to_monitor(row._mapping, proj.name, latest.get(row.id))

    # Executions -------------------------------------------------------------------------------
    def run(self, project: str, name: str) -> Execution:
        """Run the monitor now on the window ending now (besides its schedule).

        Returns:
            The execution as stored (status completed, completed_with_violations, no_data or
            failed; a failed one says why in ``error``).
        """
        proj = self._projects.get(project, "monitoring.write")
        now = self._ctx.clock.now()
        claimant = f"manual:{self._ctx.principal.user}"[:128]
        with self._ctx.db.write() as uow:
            row = monitor_row(uow.conn, proj, name)
            execution_id = claim(
                uow.conn,
                row,
                fire_key=f"manual:{new_id()}",
                trigger="manual",
                end=now + _TICK,  # records captured at this very millisecond count too
                now=now,
                claimed_by=claimant,
                lease_s=self._ctx.settings.monitors_stale_s,
                created_by=self._ctx.principal.user,
            )
        if execution_id is None:  # pragma: no cover - a fresh key never conflicts
            raise ConflictError("The execution could not be claimed.", hint="Retry.")
        execute(self._ctx, row, proj.name, execution_id, claimed_by=claimant, writer=self._writer)
        return self.execution(proj.name, row.name, execution_id)

    def executions(self, project: str, name: str, *, limit: int = 100) -> builtins.list[Execution]:
        """The monitor's executions, newest first (at most ``limit``, ≤ 1,000)."""
        check_limit(limit)
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            row = monitor_row(conn, proj, name)
            rows = conn.execute(
                select(monitor_executions)
                .where(monitor_executions.c.monitor_id == row.id)
                .order_by(monitor_executions.c.started_at.desc(), monitor_executions.c.id.desc())
                .limit(limit)
            ).all()
            return [to_execution(conn, e, proj.name, row) for e in rows]

    def execution(self, project: str, name: str, execution_id: str) -> Execution:
        """One execution of the monitor.

        Raises:
            NotFoundError: No such monitor or execution of it.
        """
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            row = monitor_row(conn, proj, name)
            return to_execution(conn, execution_row(conn, row, execution_id), proj.name, row)

    def open_file(self, project: str, name: str, execution_id: str, file: str) -> BinaryIO:
        """A stored file of an execution (``report.json``, ``report.html``, ``drift.html``),
        checked against its SHA-256 first (the caller closes it)."""
        if file not in REPORT_FILES:
            raise InvalidInputError(
                f"Executions have no file {file!r}.", hint=f"Use one of {', '.join(REPORT_FILES)}."
            )
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            row = monitor_row(conn, proj, name)
            execution = execution_row(conn, row, execution_id)
            info = ArtifactIndex.get(conn, "monitor_execution", execution.id, file)
        return self._ctx.artifacts.open(info.digest)

    def page(self, project: str, name: str, *, limit: int = 200) -> str:
        """The monitor's HTML page: its figures over the last ``limit`` executions, plotted."""
        monitor = self.get(project, name)
        found = [
            e
            for e in self.executions(project, name, limit=limit)
            if e.status is not ExecutionStatus.RUNNING
        ]
        thresholds: dict[str, float] = {}
        if monitor.type is MonitorType.MODEL_QUALITY:
            for metric, rule in (monitor.constraints.get("metrics") or {}).items():
                thresholds[metric] = float(rule["threshold"])
        elif monitor.type is MonitorType.ATTRIBUTION_DRIFT:
            thresholds["ndcg"] = float(monitor.constraints.get("ndcg_threshold", 0.9))
        schedule = f"cron {monitor.cron} (UTC)" if monitor.cron else f"every {monitor.every_s} s"
        return render_monitor_page(monitor, found, thresholds=thresholds, schedule=schedule)

    def latest_status(self, project: str, name: str) -> ExecutionStatus | None:
        """The status of the monitor's latest finished execution (None: none yet)."""
        proj = self._projects.get(project, "monitoring.read")
        e = monitor_executions
        with self._ctx.db.read() as conn:
            row = monitor_row(conn, proj, name)
            status = conn.execute(
                select(e.c.status)
                .where(e.c.monitor_id == row.id, e.c.status != ExecutionStatus.RUNNING.value)
                .order_by(e.c.started_at.desc(), e.c.id.desc())
                .limit(1)
            ).scalar()
        return None if status is None else ExecutionStatus(status)

    # Ground truth -----------------------------------------------------------------------------
    def upload_ground_truth(
        self,
        project: str,
        endpoint: str,
        source: Any,
        *,
        format: str | None = None,
        inference_id: str = "inference_id",
        label: str = "label",
    ) -> GroundTruthUpload:
        """Store labels of an endpoint's captured predictions (see :mod:`civicml.monitors.labels`).

        Raises:
            NotFoundError: The endpoint does not exist.
            InvalidInputError: The labels cannot be read or lack a column, id or label.
        """
        proj = self._projects.get(project, "monitoring.write")
        with self._ctx.db.read() as conn:
            ep = endpoint_row(conn, proj, endpoint)
        frame = label_table(source, format=format, inference_id=inference_id, label=label)
        stored = self._ctx.artifacts.put_bytes(to_parquet(frame))
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        upload_id = new_id()
        values = {
            "id": upload_id,
            "project_id": proj.id,
            "endpoint_id": ep.id,
            "endpoint": ep.name,
            "digest": stored.digest,
            "rows": len(frame),
            "columns": [str(c) for c in frame.columns],
            "uploaded_at": now,
            "uploaded_by": user,
        }
        with self._ctx.db.write() as uow:
            uow.conn.execute(insert(monitor_labels).values(**values))
            ArtifactIndex.add(
                uow,
                project_id=proj.id,
                owner_kind="ground_truth",
                owner_id=upload_id,
                path="labels.parquet",
                stored=stored,
                created_by=user,
                created_at=now,
                media_type="application/vnd.apache.parquet",
            )
            self._audit.record(
                uow,
                "monitor.ground_truth_uploaded",
                "ground_truth",
                upload_id,
                project=proj.name,
                after={
                    "endpoint": ep.name,
                    "rows": len(frame),
                    "columns": values["columns"],
                    "digest": stored.digest,
                },
            )
        return to_upload(values, proj.name)

    def ground_truth(
        self, project: str, endpoint: str, *, limit: int = 100
    ) -> builtins.list[GroundTruthUpload]:
        """The endpoint's ground-truth uploads, newest first."""
        check_limit(limit)
        proj = self._projects.get(project, "monitoring.read")
        with self._ctx.db.read() as conn:
            ep = endpoint_row(conn, proj, endpoint)
            rows = conn.execute(
                select(monitor_labels)
                .where(monitor_labels.c.endpoint_id == ep.id)
                .order_by(monitor_labels.c.uploaded_at.desc(), monitor_labels.c.id.desc())
                .limit(limit)
            ).all()
        return [to_upload(r._mapping, proj.name) for r in rows]
