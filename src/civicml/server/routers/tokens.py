"""API tokens (``/api/v1/tokens``) and who the server takes the caller for (``/api/v1/whoami``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from civicml.governance.schemas import TokenCreate, TokenCreated, TokenInfo, WhoAmI
from civicml.governance.tokens import AuthenticatedToken
from civicml.server.auth import TOKEN_KEY
from civicml.server.deps import Services, services
from civicml.server.paging import Page, page

router = APIRouter(prefix="/api/v1", tags=["tokens"])
Svc = Annotated[Services, Depends(services)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, svc: Svc) -> TokenCreated:
    """Create an API token; the answer holds its secret, shown this once."""
    return svc.tokens.create(body)


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(
    svc: Svc,
    request: Request,
    response: Response,
    paging: Page,
    all: Annotated[bool, Query(description="Every user's tokens (platform admins only).")] = False,
) -> list[TokenInfo]:
    """Your tokens (never their secrets)."""
    return page(svc.tokens.list(all_users=all), paging, request, response)


@router.get("/tokens/{token_id}", response_model=TokenInfo)
def get_token(token_id: str, svc: Svc) -> TokenInfo:
    return svc.tokens.get(token_id)


@router.delete("/tokens/{token_id}", response_model=TokenInfo)
def revoke_token(token_id: str, svc: Svc) -> TokenInfo:
    """Revoke a token: refused from the next request on."""
    return svc.tokens.revoke(token_id)


@router.get("/whoami", response_model=WhoAmI)
def whoami(svc: Svc, request: Request) -> WhoAmI:
    """The caller as the server sees them: user, roles and (with auth on) the token."""
    token = request.scope.get(TOKEN_KEY)
    principal = svc.ctx.principal
    return WhoAmI(
        user=principal.user,
        roles=sorted(principal.roles),
        auth=svc.ctx.settings.auth,
        token=svc.tokens.get(token.id) if isinstance(token, AuthenticatedToken) else None,
    )
