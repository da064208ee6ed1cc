"""What the quality and personal-data checks share: the version they look at, a plaintext copy
of its Parquet file for DuckDB, and storing a report (files, row, status, lineage, audit) as one
unit of work."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.core.ids import new_id
from civicml.data._tables import dataset_checks, dataset_expectations, dataset_versions, datasets
from civicml.data.schemas import DatasetVersion
from civicml.governance._tables import projects
from civicml.governance.access import Access
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context

__all__ = [
    "REPORT_FILES",
    "Target",
    "has_blocking",
    "justification",
    "plaintext",
    "record_approval",
    "store_check",
    "target_of",
]

REPORT_FILES = {"report.json": "application/json", "report.html": "text/html; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Target:
    """A dataset version with its dataset and project, as the checks need them."""

    version_id: str
    dataset_id: str
    project_id: str
    project: str
    dataset: str
    version: int
    digest: str
    rows: int
    row: Any


def target_of(ctx: Context, version: DatasetVersion, need: str) -> Target:
    """The stored state of ``version`` (never the caller's copy), for a caller holding ``need``.

    Raises:
        NotFoundError: No such version, or the caller may not see its project.
        PermissionDeniedError: The caller sees the project but lacks ``need``.
    """
    with ctx.db.read() as conn:
        row = conn.execute(
            select(
                dataset_versions,
                datasets.c.name.label("dataset_name"),
                datasets.c.project_id,
                projects.c.name.label("project_name"),
            )
            .join(datasets, datasets.c.id == dataset_versions.c.dataset_id)
            .join(projects, projects.c.id == datasets.c.project_id)
            .where(dataset_versions.c.id == version.id)
        ).first()

    def missing() -> NotFoundError:
        return NotFoundError(
            f"Dataset version {version.name} v{version.version} does not exist.",
            hint="List its versions: civicml datasets versions "
            f"{version.name} -p {version.project}",
        )

    if row is None:
        raise missing()
    Access(ctx).require(row.project_id, row.project_name, need, hidden=missing)
    return Target(
        version_id=row.id,
        dataset_id=row.dataset_id,
        project_id=row.project_id,
        project=row.project_name,
        dataset=row.dataset_name,
        version=row.version,
        digest=row.digest,
        rows=row.row_count,
        row=row,
    )


@contextlib.contextmanager
def plaintext(ctx: Context, digest: str) -> Iterator[Path]:
    """A verified, decrypted copy of a stored Parquet file in the store's scratch folder,
    removed afterwards (DuckDB reads files; stored objects may be encrypted or in S3)."""
    folder = ctx.artifacts.scratch_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}-{os.urandom(8).hex()}.parquet.part"
    try:
        ctx.artifacts.copy_to(digest, path)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def store_check(
    ctx: Context,
    target: Target,
    *,
    kind: str,
    report_id: str,
    trigger: str,
    status: str,
    summary: dict[str, Any],
    document: dict[str, Any],
    html: str,
    version_values: dict[str, Any],
    dataset_values: dict[str, Any] | None = None,
    action: str,
) -> None:
    """Store a check's files, its row, the version's new status, its lineage node and its audit
    event in one unit of work (the files first: a row never names missing bytes)."""
    files = {
        "report.json": json.dumps(document, indent=2, allow_nan=False, default=str).encode(),
        "report.html": html.encode(),
    }
    stored = {path: ctx.artifacts.put_bytes(data) for path, data in files.items()}
    now, user = ctx.clock.now(), ctx.principal.user
    with ctx.db.write() as uow:
        uow.conn.execute(
            insert(dataset_checks).values(
                id=report_id,
                project_id=target.project_id,
                dataset_version_id=target.version_id,
                kind=kind,
                trigger=trigger,
                status=status,
                summary=summary,
                created_at=now,
                created_by=user,
            )
        )
        if version_values:
            uow.conn.execute(
                update(dataset_versions)
                .where(dataset_versions.c.id == target.version_id)
                .values(**version_values)
            )
        if dataset_values:
            uow.conn.execute(
                update(datasets).where(datasets.c.id == target.dataset_id).values(**dataset_values)
            )
        infos = ArtifactIndex.add_files(
            uow,
            project_id=target.project_id,
            owner_kind="dataset_check",
            owner_id=report_id,
            stored=stored,
            media_types=REPORT_FILES,
            created_by=user,
            created_at=now,
        )
        LineageService(ctx).derived(
            uow,
            "dataset_check",
            report_id,
            name=f"{kind} check of {target.dataset} v{target.version}",
            project_id=target.project_id,
            sources=[("dataset_version", target.version_id, f"{target.dataset} v{target.version}")],
            properties={"kind": kind, "status": status},
        )
        AuditTrail(ctx).record(
            uow,
            action,
            "dataset_version",
            target.version_id,
            project=target.project,
            after={
                "dataset": target.dataset,
                "version": target.version,
                "report": report_id,
                "trigger": trigger,
                "status": status,
                **summary,
                "files": {i.path: i.digest for i in infos},
            },
        )


def latest_check(ctx: Context, target: Target, kind: str) -> Any:
    """The newest check row of ``kind`` on the version, or None."""
    with ctx.db.read() as conn:
        return conn.execute(
            select(dataset_checks)
            .where(
                dataset_checks.c.dataset_version_id == target.version_id,
                dataset_checks.c.kind == kind,
            )
            .order_by(dataset_checks.c.created_at.desc(), dataset_checks.c.id.desc())
            .limit(1)
        ).first()


def read_check_file(ctx: Context, target: Target, kind: str, path: str) -> bytes:
    """A file of the newest check of ``kind`` on the version.

    Raises:
        NotFoundError: The version has no such check yet.
    """
    row = latest_check(ctx, target, kind)
    if row is None:
        what = "quality report" if kind == "quality" else "personal-data scan"
        command = "expect run" if kind == "quality" else "pii scan"
        raise NotFoundError(
            f"Dataset version {target.dataset} v{target.version} has no {what} yet.",
            hint=f"Run one: civicml datasets {command} {target.dataset} {target.version} "
            f"-p {target.project}",
        )
    with ctx.db.read() as conn:
        info = ArtifactIndex.get(conn, "dataset_check", row.id, path)
    return ctx.artifacts.read_bytes(info.digest)


def new_report_id() -> str:
    """A report id."""
    return new_id()


def record_approval(
    ctx: Context,
    target: Target,
    kind: str,
    justification: str,
    values: dict[str, Any],
    action: str,
) -> None:
    """Record a use approval on the version with its audit event, in one unit of work."""
    now, user = ctx.clock.now(), ctx.principal.user
    approvals = dict(target.row.use_approvals or {})
    approvals[kind] = {"by": user, "at": now.isoformat(), "justification": justification}
    with ctx.db.write() as uow:
        uow.conn.execute(
            update(dataset_versions)
            .where(dataset_versions.c.id == target.version_id)
            .values(use_approvals=approvals, **values)
        )
        AuditTrail(ctx).record(
            uow,
            action,
            "dataset_version",
            target.version_id,
            project=target.project,
            before={
                "quality_status": target.row.quality_status,
                "classification": target.row.classification,
            },
            after={
                "dataset": target.dataset,
                "version": target.version,
                "justification": justification,
                **values,
            },
        )


def justification(text: str) -> str:
    clean = (text or "").strip()
    if len(clean) < 10 or len(clean) > 2000:
        raise InvalidInputError(
            "A justification of 10 to 2000 characters is required.",
            hint="Say why this version may be used anyway; it is kept in the audit trail.",
        )
    return clean


def has_expectations(ctx: Context, dataset_id: str | None) -> bool:
    """Whether the dataset (None: one not created yet) has any expectation."""
    if dataset_id is None:
        return False
    with ctx.db.read() as conn:
        found = conn.execute(
            select(dataset_expectations.c.id)
            .where(dataset_expectations.c.dataset_id == dataset_id)
            .limit(1)
        ).first()
    return found is not None


def has_blocking(ctx: Context, dataset_id: str) -> bool:
    """Whether the dataset has a blocking expectation."""
    with ctx.db.read() as conn:
        return (
            conn.execute(
                select(func.count()).where(
                    dataset_expectations.c.dataset_id == dataset_id,
                    dataset_expectations.c.blocking.is_(True),
                )
            ).scalar_one()
            > 0
        )
