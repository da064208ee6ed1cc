"""Shadow comparison reports: stored, listed and served like the other reports.

:meth:`ShadowReportService.create` reads the endpoint's captured records (the writer of this
process is flushed and the shadow queue drained first), runs :func:`~civicml.serving.comparison.
compare`, stores ``report.json`` and ``report.html`` in the artifact store, then records the
report in one unit of work: the ``shadow_reports`` row, its two artifact-index entries (owner
kind ``shadow_report``), its lineage node (the endpoint and the shadow's model version
``ContributedTo`` it) and the audit event ``endpoint.shadow_report_created``. Reports outlive the
endpoint: they are evidence for (or against) a promotion.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError
from civicml.core.ids import new_id, validate_name
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.serving._queries import endpoint_row, variant_rows
from civicml.serving._tables import shadow_reports
from civicml.serving.capture import CaptureService
from civicml.serving.comparison import (
    DEFAULT_MAX_LATENCY_INCREASE,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_PAIRS,
    DEFAULT_TOLERANCE,
    ShadowComparison,
    compare,
)
from civicml.serving.comparison_html import render_html
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import VariantRole
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context
from civicml.store.schemas import ArtifactInfo

__all__ = ["REPORT_FILES", "ShadowReport", "ShadowReportService", "ShadowSummary"]

#: The files stored with every shadow report, and their media types.
REPORT_FILES: dict[str, str] = {
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
}
_OWNER = "shadow_report"


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShadowSummary(_Schema):
    """A shadow report's verdict in brief (the whole comparison is its ``report.json``)."""

    recommendation: str = Field(description="'promote' or 'do_not_promote'.")
    reasons: list[str] = Field(description="Why, one line per check.")
    pairs: int = Field(ge=0, description="Live answers compared with a shadow answer.")
    agreement_rate: float | None = Field(description="Share of pairs that agree; null: none.")
    shadow_errors: int = Field(ge=0, description="Shadow copies that failed.")
    live_p99_ms: float | None = Field(description="Live p99 model latency (ms).")
    shadow_p99_ms: float | None = Field(description="Shadow p99 model latency (ms).")


class ShadowReport(_Schema):
    """A stored shadow comparison report."""

    id: str = Field(description="Report id.")
    project: str = Field(description="Project name.")
    endpoint: str = Field(description="Endpoint name (as it was when the report was made).")
    live_variant: str = Field(description="The live variant(s) compared, comma-separated.")
    shadow_variant: str = Field(description="The shadow variant compared.")
    title: str = Field(description="Heading of the report.")
    created_at: datetime = Field(description="When it was made (UTC).")
    created_by: str = Field(description="Who made it.")
    summary: ShadowSummary = Field(description="The verdict in brief.")
    files: list[ArtifactInfo] = Field(
        description="'report.json' (the ShadowComparison) and 'report.html' (one page)."
    )


class ShadowReportService:
    """Makes shadow comparison reports from captured pairs and reads them back.

    Args:
        ctx: The stores, principal and clock every call runs with.
        host: This process's model host: its shadow queue is drained and its capture writer
            flushed first, so the newest pairs are in.

    Example:
        >>> report = ShadowReportService(ctx, host).create("benefits", "web")  # doctest: +SKIP
        >>> report.summary.recommendation  # doctest: +SKIP
        'promote'
    """

    def __init__(self, ctx: Context, host: ModelHost | None = None) -> None:
        self._ctx = ctx
        self._host = host
        self._projects = ProjectService(ctx)

    def create(
        self,
        project: str,
        endpoint: str,
        *,
        shadow_variant: str | None = None,
        since: datetime | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        min_pairs: int = DEFAULT_MIN_PAIRS,
        min_agreement: float = DEFAULT_MIN_AGREEMENT,
        max_latency_increase: float = DEFAULT_MAX_LATENCY_INCREASE,
    ) -> ShadowReport:
        """Compare the shadow's captured answers with the live ones and store the report.

        Args:
            project: Project name.
            endpoint: Endpoint name.
            shadow_variant: The shadow to compare (default: the endpoint's shadow now; name one
                to report on a shadow since removed).
            since: Only records captured at or after this moment.
            tolerance: Regression: values agree within ``tolerance * max(1, |live|)``.
            min_pairs: Fewest pairs a ``promote`` needs.
            min_agreement: Lowest agreement rate (0-1) a ``promote`` accepts.
            max_latency_increase: Highest relative p99 latency increase a ``promote`` accepts.

        Raises:
            InvalidInputError: A threshold out of range.
            NotFoundError: The project or endpoint does not exist.
            ConflictError: No shadow was named and the endpoint has none.
            PermissionDeniedError: The caller may not write endpoints or read captured data
                (``datasets.read``: captures are residents' inputs).
        """
        _check_options(tolerance, min_pairs, min_agreement, max_latency_increase)
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            variants = variant_rows(conn, row.id)
        if shadow_variant is None:
            current = next((v for v in variants if v.role == VariantRole.SHADOW.value), None)
            if current is None:
                raise ConflictError(
                    f"Endpoint {row.name!r} has no shadow variant to compare.",
                    hint=f"Set one (civicml endpoints shadow set {row.name} --model M "
                    "--version N --percent 10), or name a past one with --shadow NAME.",
                )
            shadow_variant = current.name
        else:
            validate_name("Variant", shadow_variant)
        if self._host is not None:
            self._host.drain_shadow(timeout=30.0)
        writer = None if self._host is None else self._host.capture
        records = CaptureService(self._ctx, writer).records(proj.name, row.name, since)
        result = compare(
            records,
            shadow_variant=shadow_variant,
            tolerance=tolerance,
            min_pairs=min_pairs,
            min_agreement=min_agreement,
            max_latency_increase=max_latency_increase,
        )
        title = f"Shadow {shadow_variant} vs live on endpoint {row.name}"
        files = {
            "report.json": result.model_dump_json(indent=2).encode(),
            "report.html": render_html(result, title=title).encode(),
        }
        stored = {path: self._ctx.artifacts.put_bytes(data) for path, data in files.items()}
        summary = _summary(result)
        live = ", ".join(result.live_variants)[:128]
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        report_id = new_id()
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                insert(shadow_reports).values(
                    id=report_id,
                    project_id=proj.id,
                    endpoint_id=row.id,
                    endpoint=row.name,
                    live_variant=live,
                    shadow_variant=shadow_variant,
                    title=title,
                    summary=summary.model_dump(mode="json"),
                    created_at=now,
                    created_by=user,
                )
            )
            infos = ArtifactIndex.add_files(
                uow,
                project_id=proj.id,
                owner_kind=_OWNER,
                owner_id=report_id,
                stored=stored,
                media_types=REPORT_FILES,
                created_by=user,
                created_at=now,
            )
            sources = [("endpoint", row.id, row.name)]
            shadow_row = next((v for v in variants if v.name == shadow_variant), None)
            if shadow_row is not None:
                sources.append(
                    (
                        "model_version",
                        shadow_row.model_version_id,
                        f"{shadow_row.model_name} v{shadow_row.model_version}",
                    )
                )
            LineageService(self._ctx).derived(
                uow,
                _OWNER,
                report_id,
                name=title[:256],
                project_id=proj.id,
                sources=sources,
                properties={"recommendation": result.recommendation, "pairs": result.pairs},
            )
            AuditTrail(self._ctx).record(
                uow,
                "endpoint.shadow_report_created",
                "endpoint",
                row.id,
                project=proj.name,
                after={
                    "report": report_id,
                    "shadow_variant": shadow_variant,
                    "live_variants": result.live_variants,
                    "recommendation": result.recommendation,
                    "pairs": result.pairs,
                    "agreement_rate": result.agreement_rate,
                    "files": {i.path: i.digest for i in infos},
                },
            )
        return ShadowReport(
            id=report_id,
            project=proj.name,
            endpoint=row.name,
            live_variant=live,
            shadow_variant=shadow_variant,
            title=title,
            created_at=now,
            created_by=user,
            summary=summary,
            files=infos,
        )

    def list(self, project: str, endpoint: str) -> builtins.list[ShadowReport]:
        """The shadow reports of the endpoint, newest first."""
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            rows = conn.execute(
                select(shadow_reports)
                .where(shadow_reports.c.endpoint_id == row.id)
                .order_by(shadow_reports.c.created_at.desc(), shadow_reports.c.id.desc())
            ).all()
            return [_report(conn, r, proj.name) for r in rows]

    def get(self, project: str, endpoint: str, report_id: str) -> ShadowReport:
        """One shadow report of the endpoint.

        Raises:
            NotFoundError: The project, endpoint or report does not exist.
        """
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            return _report(conn, self._row(conn, proj.id, project, endpoint, report_id), proj.name)

    def open_file(self, project: str, endpoint: str, report_id: str, name: str) -> BinaryIO:
        """A stored file of the report, checked against its SHA-256 (the caller closes it).

        Raises:
            InvalidInputError: ``name`` is not ``report.json`` or ``report.html``.
            NotFoundError: The project, endpoint or report does not exist.
        """
        if name not in REPORT_FILES:
            raise InvalidInputError(
                f"Shadow reports have no file {name!r}.",
                hint=f"Use one of {', '.join(REPORT_FILES)}.",
            )
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = self._row(conn, proj.id, project, endpoint, report_id)
            info = ArtifactIndex.get(conn, _OWNER, row.id, name)
        return self._ctx.artifacts.open(info.digest)

    def read(self, project: str, endpoint: str, report_id: str) -> ShadowComparison:
        """The full comparison of a report (its ``report.json``)."""
        with self.open_file(project, endpoint, report_id, "report.json") as handle:
            return ShadowComparison.model_validate_json(handle.read())

    def _row(self, conn: Any, project_id: str, project: str, endpoint: str, report_id: str) -> Any:
        proj = self._projects.get(project, "endpoints.read")
        row = endpoint_row(conn, proj, endpoint)
        found = conn.execute(
            select(shadow_reports).where(
                shadow_reports.c.id == report_id,
                shadow_reports.c.endpoint_id == row.id,
                shadow_reports.c.project_id == project_id,
            )
        ).first()
        if found is None:
            raise NotFoundError(
                f"Endpoint {row.name!r} has no shadow report {report_id!r}.",
                hint=f"List them: civicml endpoints shadow reports {row.name} --project "
                f"{proj.name}",
            )
        return found


def _check_options(
    tolerance: float, min_pairs: int, min_agreement: float, max_latency_increase: float
) -> None:
    checks = (
        ("tolerance", tolerance, 0.0, 1e9),
        ("min_agreement", min_agreement, 0.0, 1.0),
        ("max_latency_increase", max_latency_increase, 0.0, 1000.0),
    )
    for name, value, low, high in checks:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise InvalidInputError(
                f"{name} {value!r} must be a number from {low:g} to {high:g}.",
                hint="E.g. tolerance 0.01, min_agreement 0.95, max_latency_increase 0.2.",
            )
    if isinstance(min_pairs, bool) or not isinstance(min_pairs, int) or not 1 <= min_pairs <= 1e9:
        raise InvalidInputError(
            f"min_pairs {min_pairs!r} must be a whole number from 1.", hint="E.g. 100."
        )


def _summary(result: ShadowComparison) -> ShadowSummary:
    return ShadowSummary(
        recommendation=result.recommendation,
        reasons=result.reasons,
        pairs=result.pairs,
        agreement_rate=result.agreement_rate,
        shadow_errors=result.shadow_errors,
        live_p99_ms=result.live_latency.p99_ms,
        shadow_p99_ms=result.shadow_latency.p99_ms,
    )


def _report(conn: Any, row: Any, project: str) -> ShadowReport:
    return ShadowReport(
        id=row.id,
        project=project,
        endpoint=row.endpoint,
        live_variant=row.live_variant,
        shadow_variant=row.shadow_variant,
        title=row.title,
        created_at=row.created_at,
        created_by=row.created_by,
        summary=ShadowSummary.model_validate(row.summary),
        files=ArtifactIndex.list(conn, _OWNER, row.id),
    )
