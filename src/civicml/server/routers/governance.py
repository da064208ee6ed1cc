"""Lineage and the audit trail."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from civicml.core.types import INT64_MAX
from civicml.governance.schemas import AuditEvent, AuditReport, LineageGraph
from civicml.server.deps import Services, services

router = APIRouter(prefix="/api/v1", tags=["governance"])
Svc = Annotated[Services, Depends(services)]


@router.get("/lineage/{kind}/{ref}", response_model=LineageGraph)
def lineage(
    kind: str,
    ref: str,
    svc: Svc,
    direction: Literal["upstream", "downstream", "both"] = "both",
    max_depth: int = 10,
) -> LineageGraph:
    return svc.lineage.query(kind, ref, direction=direction, max_depth=max_depth)


@router.get("/audit/events", response_model=list[AuditEvent])
def audit_events(
    svc: Svc,
    project: str | None = None,
    entity_kind: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    after_seq: Annotated[int, Query(ge=0, le=INT64_MAX, description="Events after this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most events (1-10,000).")] = 100,
) -> list[AuditEvent]:
    return svc.audit.list(
        project=project,
        entity_kind=entity_kind,
        entity_id=entity_id,
        action=action,
        after_seq=after_seq,
        limit=limit,
    )


@router.get("/audit/verify", response_model=AuditReport)
def audit_verify(svc: Svc) -> AuditReport:
    return svc.audit.verify()


@router.get("/audit/export")
def audit_export(svc: Svc) -> FileResponse:
    """Every event and the signed heads, as JSON Lines (for a SIEM)."""
    fd, name = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    path = Path(name)
    try:
        svc.audit.export(path)
    except BaseException:
        path.unlink(missing_ok=True)  # e.g. a damaged audit table (503): leave no temp file
        raise
    return FileResponse(
        path,
        media_type="application/x-ndjson",
        filename="civicml-audit.jsonl",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )
