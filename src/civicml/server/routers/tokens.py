"""API tokens (``/api/v1/tokens``), who the server takes the caller for (``/api/v1/whoami``)
and where single sign-on happens (``/api/v1/auth/oidc``, public)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from civicml.core.errors import NotFoundError
from civicml.core.settings import Settings
from civicml.governance.schemas import (
    OIDCClientConfig,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    WhoAmI,
)
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


@router.get("/auth/oidc", response_model=OIDCClientConfig)
def oidc_client(request: Request) -> OIDCClientConfig:
    """Where `civicml login --oidc` signs in: the issuer and public client id (no secret).

    Public (no token), like health: a client needs it before it has a credential. 404 when
    single sign-on is off.
    """
    settings: Settings = request.app.state.settings
    if settings.oidc_issuer is None or settings.oidc_audience is None:
        raise NotFoundError(
            "Single sign-on (OpenID Connect) is not configured on this server.",
            hint="Log in with an API token instead (civicml login --url URL), or ask an "
            "administrator to set oidc_issuer and oidc_audience.",
        )
    return OIDCClientConfig(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id or settings.oidc_audience,
        audience=settings.oidc_audience,
        scopes=list(settings.oidc_scopes),
    )
