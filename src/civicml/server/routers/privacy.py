"""Privacy: retention periods and legal holds of datasets and endpoints' captured requests,
retention now, and erasure requests with their certificates.

Reading the rules takes ``datasets.read``; changing them, holds and enforcing retention
``privacy.retention``; erasures and certificates ``privacy.erase`` (writing the successor
versions also ``datasets.write``).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from civicml.privacy.erasure import ErasureService
from civicml.privacy.retention import RetentionService
from civicml.privacy.rules import RuleService
from civicml.privacy.schemas import (
    Erasure,
    ErasureCreate,
    HoldSet,
    RetentionResult,
    RetentionRule,
    RetentionSet,
)
from civicml.server.deps import Services, services
from civicml.server.html import html_response

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/privacy", tags=["privacy"])
Svc = Annotated[Services, Depends(services)]
Kind = Annotated[
    Literal["dataset", "endpoint"], Path(description="dataset, or endpoint (its captures).")
]
Name = Annotated[str, Path(min_length=1, max_length=128, description="Its name.")]
ErasureId = Annotated[str, Path(min_length=1, max_length=64, description="The erasure's id.")]


@router.get("/retention", response_model=list[RetentionRule])
def list_rules(project: str, svc: Svc) -> list[RetentionRule]:
    """The project's retention periods and legal holds (`datasets.read`)."""
    return RuleService(svc.ctx).list(project)


@router.put("/retention/{kind}/{name}", response_model=RetentionRule)
def set_retention(
    project: str, kind: Kind, name: Name, body: RetentionSet, svc: Svc
) -> RetentionRule:
    """Set (or clear, with null) a retention period (`privacy.retention`)."""
    return RuleService(svc.ctx).set_retention(project, kind, name, body.days)


@router.post("/retention/enforce", response_model=RetentionResult)
def enforce(project: str, svc: Svc) -> RetentionResult:
    """Apply the project's retention periods now (`privacy.retention`)."""
    return RetentionService(svc.ctx).enforce(project)


@router.put("/holds/{kind}/{name}", response_model=RetentionRule)
def hold(project: str, kind: Kind, name: Name, body: HoldSet, svc: Svc) -> RetentionRule:
    """Place a legal hold (`privacy.retention`)."""
    return RuleService(svc.ctx).hold(project, kind, name, body.reason)


@router.delete("/holds/{kind}/{name}", response_model=RetentionRule)
def release(project: str, kind: Kind, name: Name, svc: Svc) -> RetentionRule:
    """Clear a legal hold (`privacy.retention`)."""
    return RuleService(svc.ctx).release(project, kind, name)


@router.post("/erasures", response_model=Erasure, status_code=201)
def erase(
    project: str, body: ErasureCreate, svc: Svc, request: Request, response: Response
) -> Erasure:
    """Erase a data subject from the project's dataset versions and captured requests; flag
    the models trained on them; issue the certificate (`privacy.erase`)."""
    host = getattr(request.app.state, "serving", None)
    writer = None if host is None else host.capture
    done = ErasureService(svc.ctx, writer).erase(
        project, body.key_column, body.value, reason=body.reason
    )
    where = f"/api/v1/projects/{quote(done.project, safe='')}/privacy/erasures"
    response.headers["Location"] = f"{where}/{done.id}"
    return done


@router.get("/erasures", response_model=list[Erasure])
def list_erasures(project: str, svc: Svc) -> list[Erasure]:
    """The project's erasures, newest first, at most 500 (`privacy.erase`)."""
    return ErasureService(svc.ctx).list(project)


@router.get("/erasures/{erasure_id}", response_model=Erasure)
def get_erasure(project: str, erasure_id: ErasureId, svc: Svc) -> Erasure:
    """One erasure (`privacy.erase`)."""
    return ErasureService(svc.ctx).get(project, erasure_id)


@router.get("/erasures/{erasure_id}/certificate", response_model=None)
def certificate(
    project: str,
    erasure_id: ErasureId,
    svc: Svc,
    format: Annotated[
        Literal["json", "html"], Query(description="certificate.json or the HTML page.")
    ] = "json",
) -> Response:
    """The erasure certificate (`privacy.erase`)."""
    data = ErasureService(svc.ctx).certificate(project, erasure_id, html=format == "html")
    if format == "html":
        return html_response(data)
    return Response(data, media_type="application/json")
