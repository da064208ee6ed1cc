"""Oversight: approval policies and gates, model cards, and the model dashboard.

Approving a version (``POST .../versions/{version}/approve``) lives with the registry routes; it
evaluates the gate described here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.errors import NotFoundError
from civicml.oversight import (
    ApprovalService,
    CardService,
    CardVersion,
    Dashboard,
    DashboardService,
    GateResult,
    ModelCard,
    etag,
)
from civicml.registry.schemas import ApprovalPolicyRecord
from civicml.server.deps import Services, services
from civicml.server.html import html_response
from civicml.server.paging import Page, page

router = APIRouter(tags=["oversight"])
Svc = Annotated[Services, Depends(services)]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=1000,
        description="The ETag you read: the change is refused with 412 when the resource "
        "changed since ('*': only if it exists).",
    ),
]
_MODEL = "/api/v1/projects/{project}/models/{name}"
_VERSION = _MODEL + "/versions/{version}"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyBody(_Body):
    policy: str | dict[str, Any] = Field(
        description="The policy: TOML or JSON text, or the parsed object (docs/governance.md)."
    )


class CardEdit(_Body):
    fields: dict[str, Any] = Field(
        description="Values by dotted path, e.g. {'intended_uses.risk_rating': 'High'}; null "
        "clears a field."
    )
    note: str = Field(default="", max_length=2000, description="Why the card changed.")


class CardStatusBody(_Body):
    status: str = Field(description="Draft, PendingReview, Approved or Archived.")
    note: str = Field(default="", max_length=2000, description="Why.")


# Policies and gates ---------------------------------------------------------------------------
@router.put(_MODEL + "/policy", response_model=ApprovalPolicyRecord)
def set_policy(
    project: str,
    name: str,
    body: PolicyBody,
    svc: Svc,
    response: Response,
    if_match: IfMatch = None,
) -> ApprovalPolicyRecord:
    """Store a new version of the model's approval policy (the latest applies); a stale
    ``If-Match`` (another version was set since you read it) is a 412."""
    record = ApprovalService(svc.ctx).set_policy(project, name, body.policy, if_match=if_match)
    response.headers["ETag"] = etag(record)
    return record


@router.get(_MODEL + "/policy", response_model=ApprovalPolicyRecord)
def get_policy(project: str, name: str, svc: Svc, response: Response) -> ApprovalPolicyRecord:
    """The approval policy that applies to the model now, with its ``ETag``."""
    record = ApprovalService(svc.ctx).policy(project, name)
    if record is None:
        raise NotFoundError(
            f"Model {name!r} has no approval policy.",
            hint=f"Set one: civicml models policy set {name} POLICY.toml -p {project}",
        )
    response.headers["ETag"] = etag(record)
    return record


@router.get(_MODEL + "/policy/history", response_model=list[ApprovalPolicyRecord])
def policy_history(
    project: str, name: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[ApprovalPolicyRecord]:
    """Every version of the model's approval policy, newest first."""
    return page(svc.registry.approval_policy_history(project, name), paging, request, response)


@router.get(_VERSION + "/gate", response_model=GateResult)
def gate(project: str, name: str, version: str, svc: Svc) -> GateResult:
    """Evaluate the version's approval gate now (changes nothing)."""
    return ApprovalService(svc.ctx).check(project, name, version)


# Model cards ----------------------------------------------------------------------------------
@router.get(_VERSION + "/card", response_model=ModelCard)
def get_card(
    project: str,
    name: str,
    version: str,
    svc: Svc,
    response: Response,
    card_version: Annotated[int | None, Query(ge=0)] = None,
) -> ModelCard:
    """The model card of the version, filled from the platform now, with its ``ETag``."""
    card = CardService(svc.ctx).get(project, name, version, card_version=card_version)
    response.headers["ETag"] = etag(card)
    return card


@router.patch(_VERSION + "/card", response_model=ModelCard)
def edit_card(
    project: str,
    name: str,
    version: str,
    body: CardEdit,
    svc: Svc,
    response: Response,
    if_match: IfMatch = None,
) -> ModelCard:
    """Write fields of the card: a new immutable card version, audited. A stale ``If-Match``
    (the card was edited or changed status since you read it) is a 412."""
    card = CardService(svc.ctx).update(
        project, name, version, body.fields, note=body.note, if_match=if_match
    )
    response.headers["ETag"] = etag(card)
    return card


@router.post(_VERSION + "/card/status", response_model=ModelCard)
def card_status(
    project: str,
    name: str,
    version: str,
    body: CardStatusBody,
    svc: Svc,
    response: Response,
    if_match: IfMatch = None,
) -> ModelCard:
    """Move the card to another status (no new card version); a stale ``If-Match`` is a 412."""
    card = CardService(svc.ctx).set_status(
        project, name, version, body.status, note=body.note, if_match=if_match
    )
    response.headers["ETag"] = etag(card)
    return card


@router.get(_VERSION + "/card/history", response_model=list[CardVersion])
def card_history(
    project: str,
    name: str,
    version: str,
    svc: Svc,
    paging: Page,
    request: Request,
    response: Response,
) -> list[CardVersion]:
    """Every version of the card's written fields, oldest first."""
    history = CardService(svc.ctx).history(project, name, version)
    return page(history, paging, request, response)


@router.get(_VERSION + "/card/html", response_class=Response)
def card_html(
    project: str,
    name: str,
    version: str,
    svc: Svc,
    card_version: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The card as a self-contained HTML page (inline CSS and SVG; nothing fetched)."""
    page = CardService(svc.ctx).export(project, name, version, "html", card_version=card_version)
    return html_response(page)


@router.get(_VERSION + "/card/markdown", response_class=Response)
def card_markdown(
    project: str,
    name: str,
    version: str,
    svc: Svc,
    card_version: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The card as Markdown."""
    text = CardService(svc.ctx).export(
        project, name, version, "markdown", card_version=card_version
    )
    return Response(text, media_type="text/markdown; charset=utf-8")


# Dashboard ------------------------------------------------------------------------------------
@router.get("/api/v1/projects/{project}/dashboard", response_model=Dashboard)
def dashboard(project: str, svc: Svc, include_archived: bool = False) -> Dashboard:
    """Every model version of the project: status, deployments, metrics, bias, card, gate."""
    return DashboardService(svc.ctx).dashboard(project, include_archived=include_archived)
