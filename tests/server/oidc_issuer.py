"""A real OpenID Connect issuer for tests: keys generated here, discovery document, JWKS, and the
OAuth 2.0 device grant (RFC 8628) and refresh grant, served over HTTP on a loopback port and
issuing real signed JWTs."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from civicml.core.settings import Settings
from tests.server.helpers import isolated_settings, serve

__all__ = ["AUDIENCE", "ROLE_MAP", "Issuer", "oidc_settings", "running_issuer"]

AUDIENCE = "civicml"
ROLE_MAP = {
    "ml-reviewers": ["reviewer"],
    "data-science": ["data-scientist", "viewer"],
    "benefits-analysts": ["benefits:data-scientist"],  # on one project only
}
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Device:
    """How the pending device login answers the client's polls (set by a test)."""

    outcome: str = "approve"  # "approve", "deny" or "expire" once pending_polls are done
    pending_polls: int = 0  # polls answered authorization_pending (or slow_down) first
    slow_down_at: frozenset[int] = frozenset()  # poll numbers answered slow_down
    refresh: bool = True  # whether the tokens include a refresh token
    expires_in: int = 300  # the access token's lifetime
    interval: int = 1
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class Issuer:
    """A small OpenID Connect issuer: its signing keys, and what its endpoints served."""

    keys: dict[str, Key] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)  # kids the JWKS serves
    url: str = ""
    jwks_hits: int = 0
    device: Device = field(default_factory=Device)
    polls: int = 0  # device-grant polls of the token endpoint
    refreshes: int = 0  # refresh-grant requests answered with tokens
    device_requests: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # every token issued (access and refresh)
    _codes: set[str] = field(default_factory=set)
    _refresh_tokens: set[str] = field(default_factory=set)

    def add(self, kid: str, key: Key, *, publish: bool = True) -> None:
        self.keys[kid] = key
        if publish:
            self.published.append(kid)

    def app(self) -> Starlette:
        async def health(_: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        async def discovery(_: Request) -> JSONResponse:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "jwks_uri": f"{self.url}/keys",
                    "device_authorization_endpoint": f"{self.url}/device",
                    "token_endpoint": f"{self.url}/token",
                    "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
                }
            )

        async def jwks(_: Request) -> JSONResponse:
            self.jwks_hits += 1
            keys = []
            for kid in self.published:
                public = self.keys[kid].as_dict(private=False)
                keys.append({**public, "kid": kid, "use": "sig"})
            return JSONResponse({"keys": keys})

        async def device(request: Request) -> JSONResponse:
            form = await _form(request)
            self.device_requests.append(form)
            code = secrets.token_urlsafe(24)
            self._codes.add(code)
            self.polls = 0
            return JSONResponse(
                {
                    "device_code": code,
                    "user_code": "WDJB-MJHT",
                    "verification_uri": f"{self.url}/device/verify",
                    "verification_uri_complete": f"{self.url}/device/verify?user_code=WDJB-MJHT",
                    "expires_in": 600,
                    "interval": self.device.interval,
                }
            )

        async def token(request: Request) -> JSONResponse:
            form = await _form(request)
            if form.get("client_id") != AUDIENCE:
                return _oauth_error("invalid_client", 401)
            if form.get("grant_type") == DEVICE_GRANT:
                if form.get("device_code") not in self._codes:
                    return _oauth_error("invalid_grant")
                self.polls += 1
                if self.polls in self.device.slow_down_at:
                    return _oauth_error("slow_down")
                if self.polls <= self.device.pending_polls:
                    return _oauth_error("authorization_pending")
                if self.device.outcome == "deny":
                    return _oauth_error("access_denied")
                if self.device.outcome == "expire":
                    return _oauth_error("expired_token")
                self._codes.discard(form["device_code"])
                return JSONResponse(self._tokens())
            if form.get("grant_type") == "refresh_token":
                if form.get("refresh_token") not in self._refresh_tokens:
                    return _oauth_error("invalid_grant")
                self._refresh_tokens.discard(form["refresh_token"])
                self.refreshes += 1
                return JSONResponse(self._tokens())
            return _oauth_error("unsupported_grant_type")

        return Starlette(
            routes=[
                Route("/api/v1/health", health),  # the serve helper waits for it
                Route("/realms/civic/.well-known/openid-configuration", discovery),
                Route("/realms/civic/keys", jwks),
                Route("/realms/civic/device", device, methods=["POST"]),
                Route("/realms/civic/token", token, methods=["POST"]),
            ]
        )

    def _tokens(self) -> dict[str, Any]:
        lifetime = self.device.expires_in
        access = self.token(
            exp=int(time.time()) + lifetime, jti=secrets.token_hex(8), **self.device.claims
        )
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime,
        }
        self.issued.append(access)
        if self.device.refresh:
            refresh = secrets.token_urlsafe(32)
            self._refresh_tokens.add(refresh)
            self.issued.append(refresh)
            answer["refresh_token"] = refresh
        return answer

    def token(
        self,
        kid: str = "rsa-1",
        alg: str = "RS256",
        *,
        key: Key | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.url,
            "aud": [AUDIENCE, "account"],
            "sub": "f3b1c2d4",
            "preferred_username": "rosa",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "realm_access": {"roles": ["ml-reviewers", "offline_access"]},
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode({"alg": alg, "kid": kid}, payload, key or self.keys[kid])


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8")
    return {k: v[0] for k, v in parse_qs(body).items()}


def _oauth_error(error: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


@contextlib.contextmanager
def running_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    issuer.add("rsa-1", RSAKey.generate_key(2048))
    issuer.add("ec-1", ECKey.generate_key("P-256"))
    with serve(issuer.app()) as url:
        issuer.url = f"{url}/realms/civic"
        yield issuer


def oidc_settings(root: Path, issuer: Issuer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth": "token",
        "auth_max_failures": 1_000_000,
        "oidc_issuer": issuer.url,
        "oidc_audience": AUDIENCE,
        "oidc_roles_claim": "realm_access.roles",
        "oidc_role_map": ROLE_MAP,
        "oidc_jwks_refetch_s": 0,
    }
    values.update(overrides)
    return isolated_settings(root, **values)
