"""Authentication of every request (setting ``auth``), and the loopback rule for ``auth="none"``.

With ``auth = "token"`` the :class:`AuthMiddleware` runs outside the routes *and* the fast
invocations lane, so no request reaches either without a valid API token in
``Authorization: Bearer cml_...``; only :data:`PUBLIC_PATHS` (health, the OpenAPI document) are
open. A missing, malformed, unknown, expired or revoked token is answered 401 with
``WWW-Authenticate: Bearer`` and the one error body. The principal is the token's owner in the
token's roles; ``X-CivicML-User`` is ignored. A token limited to one endpoint may only invoke
that endpoint (403 elsewhere); a token scoped to projects may not reach a ``/projects/{name}``
route of another project (403).

Failed authentications are counted per client address in fixed windows
(``auth_max_failures`` per ``auth_failure_window_s``); past the limit the client is answered
429 with ``Retry-After`` (a token cached as valid still passes). They are audited as
``auth.failed`` at most twice per client and window (the first failure, and the one that reached
the limit) and at most :data:`AUDIT_PER_MINUTE` times a minute in all, so a flood cannot fill
the audit table. Nothing here logs or answers the credential.

With ``oidc_issuer`` set, a bearer value that has the form of a JWT is verified as an OpenID
Connect token instead (:mod:`civicml.server.oidc`); its failures are counted and audited the
same way, and an issuer that cannot be reached gives 503 while API tokens keep working.

With ``auth = "none"`` the server believes ``X-CivicML-User`` (see ``deps.principal_for_request``)
and :func:`check_bind` lets it listen only on a loopback address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from civicml.core.errors import (
    AuthenticationError,
    CivicMLError,
    ConfigurationError,
    PermissionDeniedError,
    TooManyRequestsError,
)
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.governance.tokens import AuthenticatedToken, TokenService
from civicml.server.deps import PRINCIPAL_KEY
from civicml.server.oidc import OIDCVerifier, looks_like_jwt
from civicml.server.routers.serving import invocation_target

__all__ = [
    "AUDIT_PER_MINUTE",
    "PRINCIPAL_KEY",
    "PUBLIC_PATHS",
    "TOKEN_KEY",
    "AuthMiddleware",
    "FailureLimiter",
    "check_bind",
    "is_loopback",
]

log = logging.getLogger("civicml.server")

#: Paths answered without authentication.
PUBLIC_PATHS = frozenset(
    {
        "/api/v1/health",
        "/api/v1/health/live",
        "/api/v1/health/ready",
        "/api/v1/ready",
        "/api/v1/auth/oidc",
        "/openapi.json",
    }
)
#: Where the middleware leaves the request's principal and token (ASGI scope keys).
TOKEN_KEY = "civicml.token"  # noqa: S105 (a scope key, not a secret)
#: Most ``auth.failed`` audit events per minute, all clients together.
AUDIT_PER_MINUTE = 60

_PROJECT_PATH = re.compile(r"/api/v1/projects/([^/]+)(?:/.*)?")
_ANONYMOUS = Principal(user="anonymous", roles=frozenset())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve a non-loopback ``host`` without authentication.

    Raises:
        ConfigurationError: ``host`` is not a loopback address and ``auth`` is ``"none"``.
    """
    if settings.auth == "none" and not is_loopback(host):
        raise ConfigurationError(
            f'Refusing to listen on {host!r} without authentication: with auth = "none" '
            "anyone who can reach the port acts as any user.",
            hint='Set auth = "token" (CIVICML_AUTH=token), create a token with \'civicml '
            "tokens create' on this server's home, and start again; or listen on 127.0.0.1.",
        )


class FailureLimiter:
    """Failed authentications per client address, in fixed windows (thread-safe)."""

    def __init__(self, max_failures: int, window_s: int, max_clients: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_clients = max_clients
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._audit_window = (0.0, 0)

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            found = self._counts.get(client)
            if found is None:
                return 0
            start, count = found
            left = start + self.window_s - time.monotonic()
            if left <= 0:
                del self._counts[client]
                return 0
            return int(left) + 1 if count >= self.max_failures else 0

    def fail(self, client: str) -> int:
        """Count one failure; returns the client's failures in this window."""
        now = time.monotonic()
        with self._lock:
            start, count = self._counts.get(client, (now, 0))
            if now - start >= self.window_s:
                start, count = now, 0
            if len(self._counts) >= self._max_clients and client not in self._counts:
                self._prune(now)
            self._counts[client] = (start, count + 1)
            return count + 1

    def may_audit(self) -> bool:
        """Whether one more ``auth.failed`` event fits this minute's budget."""
        now = time.monotonic()
        with self._lock:
            start, count = self._audit_window
            if now - start >= 60:
                start, count = now, 0
            if count >= AUDIT_PER_MINUTE:
                return False
            self._audit_window = (start, count + 1)
            return True

    def _prune(self, now: float) -> None:
        for key in [k for k, (s, _) in self._counts.items() if now - s >= self.window_s]:
            del self._counts[key]
        while len(self._counts) >= self._max_clients:  # still full: forget the oldest
            del self._counts[next(iter(self._counts))]


class AuthMiddleware:
    """ASGI middleware: every request but :data:`PUBLIC_PATHS` needs a valid API token."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.enabled = settings.auth == "token"
        self.limiter = FailureLimiter(settings.auth_max_failures, settings.auth_failure_window_s)
        self._service: TokenService | None = None  # made on the first request (after startup)
        self.oidc = OIDCVerifier(settings) if settings.oidc_issuer is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        client = _client(scope)
        try:
            principal, token = await self._authenticate(scope, client)
            if token is not None:
                _check_scope(scope, token)
        except CivicMLError as err:
            presented = any(k == b"authorization" for k, _ in scope["headers"])
            await _refuse(send, err, invalid_token=presented)
            return
        scope[PRINCIPAL_KEY] = principal
        if token is not None:
            scope[TOKEN_KEY] = token
        await self.app(scope, receive, send)

    def admit_cached(self, scope: Scope) -> bool:
        """Admit a request whose credentials this process has verified before, without I/O:
        True when authentication is off, or the bearer token (or OIDC token) is in the cache
        and its scope covers the request — the request's principal (and token) are then in
        ``scope`` as :meth:`__call__` puts them. False for everything else (no or a malformed
        header, an unknown or expired token, a scope that refuses): :meth:`__call__` decides
        those, with its failure limit and audit. The server's direct lane
        (:class:`~civicml.server.direct.DirectLane`) asks this first."""
        if not self.enabled or scope["path"] in PUBLIC_PATHS:
            return True
        token: AuthenticatedToken | None = None
        try:
            secret = _bearer(scope)
            oidc = self.oidc
            if oidc is not None and looks_like_jwt(secret):
                principal = oidc.cached(secret)
                if principal is None:
                    return False
            else:
                service = self._service
                token = None if service is None else service.verify_cached(secret)
                if token is None:
                    return False
                principal = token.principal
                _check_scope(scope, token)
        except CivicMLError:
            return False
        scope[PRINCIPAL_KEY] = principal
        if token is not None:
            scope[TOKEN_KEY] = token
        return True

    async def _authenticate(
        self, scope: Scope, client: str
    ) -> tuple[Principal, AuthenticatedToken | None]:
        """The caller's principal, and the API token it came from (None for an OIDC JWT)."""
        service = self._service
        if service is None:
            service = self._service = TokenService(scope["app"].state.civicml.ctx)
        try:
            secret = _bearer(scope)
            oidc = self.oidc
            if oidc is not None and looks_like_jwt(secret):
                principal = oidc.cached(secret)  # no I/O, no cryptography: the hot path
                if principal is None:
                    self._check_limit(client)
                    principal = await run_in_threadpool(oidc.verify, secret)
                return principal, None
            token = service.verify_cached(secret)  # no I/O: the hot path
            if token is None:
                self._check_limit(client)
                token = await run_in_threadpool(service.authenticate, secret)
            return token.principal, token
        except AuthenticationError as err:
            failures = self.limiter.fail(client)
            if failures in (1, self.limiter.max_failures) and self.limiter.may_audit():
                await run_in_threadpool(self._audit, scope, client, err.message, failures)
            raise

    def _check_limit(self, client: str) -> None:
        wait = self.limiter.retry_after(client)
        if wait:
            raise TooManyRequestsError(
                f"Too many failed authentications from {client}; try again in {wait} s.",
                hint="Check the token you send (civicml tokens list shows yours).",
                retry_after=wait,
            )

    @staticmethod
    def _audit(scope: Scope, client: str, reason: str, failures: int) -> None:
        ctx = scope["app"].state.civicml.ctx.as_principal(_ANONYMOUS)
        try:
            TokenService(ctx).record_failures(client, reason, failures)
        except Exception as err:  # auditing must not turn a 401 into a 500
            log.warning("could not audit a failed authentication: %s", type(err).__name__)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _bearer(scope: Scope) -> str:
    """The token of ``Authorization: Bearer <token>``.

    Raises:
        AuthenticationError: No Authorization header, or not a bearer one.
    """
    values = [v for k, v in scope["headers"] if k == b"authorization"]
    if not values:
        raise AuthenticationError(
            "This server needs an API token: the request has no Authorization header.",
            hint="Send 'Authorization: Bearer cml_...' (civicml login, --token or "
            "CIVICML_TOKEN); create a token with 'civicml tokens create'.",
        )
    header: str = bytes(values[0]).decode("latin-1")
    scheme, _, secret = header.strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError(
            "The Authorization header is not one bearer token.",
            hint="Send exactly one header 'Authorization: Bearer cml_...'.",
        )
    return secret.strip()


def _check_scope(scope: Scope, token: AuthenticatedToken) -> None:
    """Refuse what the token's endpoint or project scope does not cover (403)."""
    if token.endpoint is None and "*" in token.projects:
        return  # reaches every project: nothing to parse on the hot path
    path: str = scope["path"]
    target = invocation_target(scope)
    if token.endpoint is not None:
        if target is None or f"{target[0]}/{target[1]}".lower() != token.endpoint.lower():
            raise PermissionDeniedError(
                f"This token may only invoke the endpoint {token.endpoint!r}.",
                hint="Use a token made for this work (civicml tokens create).",
            )
        return
    match = _PROJECT_PATH.fullmatch(path)
    project = target[0] if target is not None else (match.group(1) if match else None)
    if project is not None and not token.may_reach(project):
        raise PermissionDeniedError(
            f"This token does not reach the project {project!r}.",
            hint="Use a token scoped to that project, or to all projects ('*').",
        )


async def _refuse(send: Send, err: CivicMLError, *, invalid_token: bool = False) -> None:
    body = json.dumps(err.to_body()).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if isinstance(err, AuthenticationError):
        challenge = b'Bearer realm="civicml"'
        if invalid_token:  # RFC 6750: a token was presented and is not accepted
            challenge += b', error="invalid_token"'
        headers.append((b"www-authenticate", challenge))
    retry: Any = getattr(err, "retry_after", None)
    if retry is not None:
        headers.append((b"retry-after", str(max(1, int(retry))).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
