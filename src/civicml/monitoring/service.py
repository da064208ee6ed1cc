"""The monitoring service: drift reports between two dataset versions, stored and recorded.

``drift`` reads both versions (verified against their SHA-256), runs the pure engine
(:func:`~civicml.monitoring.drift.drift_report` with Model Monitor style constraints), stores
``report.json`` and ``report.html`` in the artifact store first, then records the report in one
unit of work: the ``reports`` row, its two artifact-index entries, its lineage node with a
``ContributedTo`` edge from each dataset version, and the ``report.created`` audit event.

A version with fewer rows than ``min_rows`` (the ``drift_min_rows`` setting, 30 by default) on
either side gives the verdict ``insufficient_data`` with the counts: no column is judged, so a
handful of captured requests never reads as "drift detected" (or as "no drift").

Columns that only one side has are not an error: the shared columns are compared, and each
missing or extra column is reported as a ``missing_column_check`` / ``extra_column_check``
violation (as Model Monitor does). Naming a column with ``columns=`` that a side lacks, or two
versions with no column in common, is an :class:`~civicml.core.errors.InvalidInputError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, BinaryIO, TypeAlias

from sqlalchemy import Connection, insert, select

from civicml.core.errors import InvalidInputError, NotFoundError, closest
from civicml.core.ids import new_id
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.monitoring._tables import reports
from civicml.monitoring.drift import drift_report
from civicml.monitoring.records import (
    DatasetVersionRef,
    Report,
    ReportInputs,
    ReportKind,
    ReportSummary,
)
from civicml.monitoring.report_html import render_html
from civicml.monitoring.schemas import DriftReport
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context

__all__ = ["REPORT_FILES", "MonitoringService", "VersionSelector"]

#: A dataset version by (name, number) or (name, "latest").
VersionSelector: TypeAlias = tuple[str, int | str]

#: The files stored with every report, and their media types.
REPORT_FILES: dict[str, str] = {
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
}
_KINDS: tuple[ReportKind, ...] = ("drift",)


class MonitoringService:
    """Makes drift reports between dataset versions and reads them back.

    Args:
        ctx: The stores, principal and clock every call runs with.

    Example:
        >>> mon = MonitoringService(ctx)  # doctest: +SKIP
        >>> report = mon.drift(  # doctest: +SKIP
        ...     "benefits", current=("captured", 2), baseline=("applications", 1)
        ... )
        >>> report.summary.verdict  # doctest: +SKIP
        'drift'
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)
        self._datasets = DatasetService(ctx)

    # Making reports ---------------------------------------------------------------------------
    def drift(
        self,
        project: str,
        *,
        current: VersionSelector,
        baseline: VersionSelector,
        columns: Sequence[str] | None = None,
        title: str | None = None,
        categorical: Sequence[str] | None = None,
        numerical: Sequence[str] | None = None,
        drift_share: float = 0.5,
        min_rows: int | None = None,
    ) -> Report:
        """Compare dataset version ``current`` with ``baseline`` and store the drift report.

        Args:
            project: Project both dataset versions belong to.
            current: ``(dataset name, version)`` to check, e.g. ``("captured", 2)``; the version
                may be ``"latest"``.
            baseline: ``(dataset name, version)`` of the reference, e.g. the training data.
            columns: Compare only these columns (each must be in both versions); default: every
                column the two share. Missing and extra columns are violations, not errors.
            title: Heading of the report; default ``"Drift: captured v2 vs applications v1"``.
            categorical: Columns to treat as categorical whatever their type.
            numerical: Columns to treat as numeric whatever their type.
            drift_share: The dataset drifts when at least this share of columns drift.
            min_rows: Fewest rows each version needs for a verdict; default: the
                ``drift_min_rows`` setting. Below it the verdict is ``insufficient_data``.

        Returns:
            The stored report; its ``files`` are ``report.json`` and ``report.html``.

        Raises:
            NotFoundError: The project, a dataset or a version does not exist.
            InvalidInputError: A bad selector, title or option; a named column missing from a
                version; or two versions with no column in common.
        """
        floor = self._ctx.settings.drift_min_rows if min_rows is None else min_rows
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 1:
            raise InvalidInputError(
                f"min_rows must be a whole number from 1, got {min_rows!r}.",
                hint="Leave it out to use the drift_min_rows setting (30 by default).",
            )
        proj = self._projects.get(project, "monitoring.write")
        cur = self._resolve(proj.name, current, "current")
        base = self._resolve(proj.name, baseline, "baseline")
        heading = _title(title, cur, base)
        wanted = _check_columns(columns, cur, base)
        result = drift_report(
            self._datasets.to_pandas(base, columns=wanted),
            self._datasets.to_pandas(cur, columns=wanted),
            columns=wanted,
            check_constraints=True,
            categorical=categorical,
            numerical=numerical,
            drift_share=drift_share,
            min_rows=floor,
        )
        files = {
            "report.json": result.model_dump_json(indent=2).encode(),
            "report.html": render_html(result, title=heading).encode(),
        }
        stored = {path: self._ctx.artifacts.put_bytes(data) for path, data in files.items()}
        summary = _summary(result)
        inputs = ReportInputs(
            baseline=_ref(base),
            current=_ref(cur),
            columns=wanted,
            drift_share=drift_share,
            min_rows=floor,
        )
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        report_id = new_id()
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                insert(reports).values(
                    id=report_id,
                    project_id=proj.id,
                    kind="drift",
                    title=heading,
                    created_at=now,
                    created_by=user,
                    summary=summary.model_dump(mode="json"),
                    inputs=inputs.model_dump(mode="json"),
                )
            )
            infos = ArtifactIndex.add_files(
                uow,
                project_id=proj.id,
                owner_kind="report",
                owner_id=report_id,
                stored=stored,
                media_types=REPORT_FILES,
                created_by=user,
                created_at=now,
            )
            self._lineage.derived(
                uow,
                "report",
                report_id,
                name=heading,
                project_id=proj.id,
                sources=[("dataset_version", v.id, f"{v.name} v{v.version}") for v in (base, cur)],
                properties={"kind": "drift", "verdict": summary.verdict},
            )
            self._audit.record(
                uow,
                "report.created",
                "report",
                report_id,
                project=proj.name,
                after={
                    "kind": "drift",
                    "title": heading,
                    "verdict": summary.verdict,
                    "n_columns": summary.n_columns,
                    "n_drifted": summary.n_drifted,
                    "current_rows": summary.current_rows,
                    "min_rows": floor,
                    "violations": summary.violations,
                    "baseline": f"{base.name} v{base.version}",
                    "current": f"{cur.name} v{cur.version}",
                    "files": {i.path: i.digest for i in infos},
                },
            )
        return Report(
            id=report_id,
            project=proj.name,
            kind="drift",
            title=heading,
            created_at=now,
            created_by=user,
            summary=summary,
            inputs=inputs,
            files=infos,
        )

    # Reading ----------------------------------------------------------------------------------
    def _may_read(self, row: Any) -> None:
        self._projects.access.require(
            row.project_id, row.project_name, "monitoring.read", hidden=lambda: _missing(row.id)
        )

    def get_report(self, report_id: str) -> Report:
        """The report ``report_id``.

        Raises:
            NotFoundError: No report has that id.
        """
        with self._ctx.db.read() as conn:
            row = _report_row(conn, report_id)
            self._may_read(row)
            return _report(conn, row)

    def list_reports(self, project: str, kind: str | None = None) -> list[Report]:
        """The reports of ``project``, newest first; only those of ``kind`` when given.

        Raises:
            NotFoundError: The project does not exist.
            InvalidInputError: ``kind`` is not a known report kind.
        """
        if kind is not None and kind not in _KINDS:
            raise InvalidInputError(
                f"Report kind {kind!r} is not known.", hint=f"Use one of {', '.join(_KINDS)}."
            )
        proj = self._projects.get(project, "monitoring.read")
        # Only the kinds this stage writes: a scheduled monitor's executions are rows here too
        # (for the alert engine), read through civicml.monitors.
        query = _select().where(reports.c.project_id == proj.id, reports.c.kind.in_(_KINDS))
        if kind is not None:
            query = query.where(reports.c.kind == kind)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                query.order_by(reports.c.created_at.desc(), reports.c.id.desc())
            ).all()
            return [_report(conn, r) for r in rows]

    def open_report_file(self, report_id: str, name: str) -> BinaryIO:
        """A stored file of the report, checked against its SHA-256 first (the caller closes it).

        Args:
            report_id: The report.
            name: ``"report.html"`` or ``"report.json"``.

        Raises:
            InvalidInputError: ``name`` is not one of the report's files.
            NotFoundError: No report has that id, or the bytes are gone from the artifact store.
            ArtifactIntegrityError: The stored bytes no longer match the digest.
        """
        if name not in REPORT_FILES:
            raise InvalidInputError(
                f"Reports have no file {name!r}.", hint=f"Use one of {', '.join(REPORT_FILES)}."
            )
        with self._ctx.db.read() as conn:
            self._may_read(_report_row(conn, report_id))
            info = ArtifactIndex.get(conn, "report", report_id, name)
        return self._ctx.artifacts.open(info.digest)

    def read_report(self, report_id: str) -> DriftReport:
        """The engine's full result of a drift report (per-column tests, violations)."""
        with self.open_report_file(report_id, "report.json") as handle:
            return DriftReport.model_validate_json(handle.read())

    # Internals --------------------------------------------------------------------------------
    def _resolve(self, project: str, selector: VersionSelector, role: str) -> DatasetVersion:
        if (
            not isinstance(selector, tuple | list)
            or len(selector) != 2
            or not isinstance(selector[0], str)
        ):
            raise InvalidInputError(
                f"The {role} dataset version {selector!r} is not (dataset name, version).",
                hint=f"Write e.g. {role}=('applications', 1) or ('applications', 'latest').",
            )
        name, version = selector
        return self._datasets.get_version(project, name, version)


def _title(title: str | None, cur: DatasetVersion, base: DatasetVersion) -> str:
    if title is None:
        return f"Drift: {cur.name} v{cur.version} vs {base.name} v{base.version}"
    text = title.strip()
    if not text or len(text) > 256:
        raise InvalidInputError(
            f"Report title {title[:40]!r} is not valid.", hint="Use 1-256 characters."
        )
    return text


def _check_columns(
    columns: Sequence[str] | None, cur: DatasetVersion, base: DatasetVersion
) -> list[str] | None:
    base_names = [c.name for c in base.columns]
    cur_names = {c.name for c in cur.columns}
    if columns is None:
        if not any(n in cur_names for n in base_names):
            raise InvalidInputError(
                f"{cur.name} v{cur.version} and {base.name} v{base.version} have no column in "
                "common, so there is nothing to compare.",
                hint=f"The baseline has {base_names[:20]}; compare versions of the same data.",
            )
        return None
    if isinstance(columns, str):
        columns = [columns]
    wanted = list(dict.fromkeys(columns))
    if not wanted:
        raise InvalidInputError(
            "columns is empty.", hint="Name at least one column, or leave it out for all."
        )
    for version, names in ((base, set(base_names)), (cur, cur_names)):
        missing = [c for c in wanted if c not in names]
        if missing:
            raise InvalidInputError(
                f"Column {missing[0]!r} is not in {version.name} v{version.version}.",
                hint=closest(missing[0], names) or f"It has: {', '.join(sorted(names)[:20])}.",
            )
    return wanted


def _ref(version: DatasetVersion) -> DatasetVersionRef:
    return DatasetVersionRef(
        dataset=version.name,
        version=version.version,
        id=version.id,
        digest=version.digest,
        rows=version.row_count,
    )


def _summary(result: DriftReport) -> ReportSummary:
    return ReportSummary(
        verdict=result.verdict,
        dataset_drift=result.dataset_drift,
        reference_rows=result.reference_rows,
        current_rows=result.current_rows,
        insufficient_data=result.insufficient_data,
        n_columns=result.n_columns,
        n_drifted=result.n_drifted,
        share_drifted=result.share_drifted,
        drifted_columns=[c.column for c in result.columns if c.drift_detected is True],
        violations=len(result.violations),
        violation_types=dict(Counter(v.constraint_check_type for v in result.violations)),
    )


def _select() -> Any:
    return select(reports, projects.c.name.label("project_name")).join(
        projects, projects.c.id == reports.c.project_id
    )


def _report_row(conn: Connection, report_id: str) -> Any:
    row = conn.execute(
        _select().where(reports.c.id == report_id, reports.c.kind.in_(_KINDS))
    ).first()
    if row is None:
        raise _missing(report_id)
    return row


def _missing(report_id: str) -> NotFoundError:
    return NotFoundError(
        f"Report {report_id!r} does not exist.",
        hint="List the reports: civicml monitoring reports list -p PROJECT",
    )


def _report(conn: Connection, row: Any) -> Report:
    return Report(
        id=row.id,
        project=row.project_name,
        kind=row.kind,
        title=row.title,
        created_at=row.created_at,
        created_by=row.created_by,
        summary=ReportSummary.model_validate(row.summary),
        inputs=ReportInputs.model_validate(row.inputs),
        files=ArtifactIndex.list(conn, "report", row.id),
    )
