"""API tokens: personal and service-account bearer tokens for the server.

A token is ``cml_`` followed by 43 URL-safe characters (``secrets.token_urlsafe(32)``: 256
random bits). It is shown once, in the answer to its creation; the database keeps only its
SHA-256 (``token_hash``) and its first eight characters (``prefix``, to recognise it in a list).
A token carries the roles it acts in and the projects it may reach, may expire, may be limited to
invoking one endpoint, and is revoked by setting ``revoked_at``.

Who may do what: anyone creates, lists and revokes their own *personal* tokens, with at most
their own roles; a platform ``admin`` also creates *service-account* tokens (for CI pipelines and
endpoint callers), lists everyone's tokens and revokes any.

Verification (:meth:`TokenService.authenticate`) is cached per token hash in the process
(:data:`TOKEN_CACHE`) for ``auth_cache_ttl_s`` seconds, so a busy endpoint does not read the
database per request. Revoking a token drops it from the cache of the process that revoked it
at once; another server process on the same database stops accepting it within
``auth_cache_ttl_s`` (docs/security.md). Expiry is checked on every request.

No secret, hash or ``Authorization`` header is ever logged, audited or put in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from civicml.core.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.core.identity import Principal
from civicml.core.ids import new_id
from civicml.core.names import same_user, validate_name, validate_user_name
from civicml.core.permissions import ADMIN_ROLE, role_table
from civicml.governance._tables import api_tokens
from civicml.governance.access import Access
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import TokenCreate, TokenCreated, TokenInfo
from civicml.store.context import Context

__all__ = [
    "ADMIN_ROLE",
    "TOKEN_CACHE",
    "TOKEN_PREFIX",
    "AuthenticatedToken",
    "TokenCache",
    "TokenService",
    "hash_secret",
    "well_formed",
]

log = logging.getLogger("civicml.governance.tokens")

TOKEN_PREFIX = "cml_"  # noqa: S105 (the public prefix, not a secret)
#: The role an endpoint-caller token carries unless told otherwise.
INVOKER_ROLE = "invoker"
_SECRET = re.compile(r"cml_[A-Za-z0-9_-]{43}")
_SHOWN = 8  # characters of the secret kept to recognise it: "cml_" and 4 random ones
_LAST_USED_EVERY = timedelta(minutes=1)
_MAX_ROLES = 32
_MAX_PROJECTS = 256


def hash_secret(secret: str) -> str:
    """The SHA-256 (hex) of a token, the only form of it that is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def well_formed(secret: str) -> bool:
    """Whether ``secret`` has the form of a civicml token (``cml_`` + 43 URL-safe characters)."""
    return _SECRET.fullmatch(secret) is not None


@dataclass(frozen=True, slots=True)
class AuthenticatedToken:
    """A verified token: who it acts as and what it may reach."""

    id: str
    owner: str
    kind: str
    roles: frozenset[str]
    projects: frozenset[str]
    endpoint: str | None
    expires_at: datetime | None
    revoked: bool

    @property
    def principal(self) -> Principal:
        return Principal(user=self.owner, roles=self.roles, projects=self.projects)

    def may_reach(self, project: str) -> bool:
        """Whether the token's project scope includes ``project`` (names compare case-blind)."""
        return "*" in self.projects or project.lower() in self.projects


class TokenCache:
    """Verified tokens of this process, by (database, token hash), for a few seconds each."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[AuthenticatedToken, float]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, db: str, digest: str, ttl: float) -> AuthenticatedToken | None:
        with self._lock:
            found = self._entries.get((db, digest))
            if found is None:
                return None
            token, at = found
            if time.monotonic() - at >= ttl:
                del self._entries[(db, digest)]
                return None
            return token

    def put(self, db: str, digest: str, token: AuthenticatedToken) -> None:
        with self._lock:
            self._entries[(db, digest)] = (token, time.monotonic())
            self._entries.move_to_end((db, digest))
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def forget(self, db: str, token_id: str) -> None:
        """Drop the token ``token_id`` (revoked): its next request reads the database."""
        with self._lock:
            for key in [
                k for k, (t, _) in self._entries.items() if k[0] == db and t.id == token_id
            ]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The process-wide verification cache (revocation in this process invalidates it at once).
TOKEN_CACHE = TokenCache()


class TokenService:
    """Create, list, revoke and verify API tokens, acting for ``ctx.principal``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        # The cache's database key, computed once: Settings.database_url builds a string on each
        # read, which the per-request hot path (verify_cached) should not pay for.
        self._db_key = ctx.settings.database_url

    @property
    def _is_admin(self) -> bool:
        return Access(self._ctx).may("tokens.admin")

    # Creating ---------------------------------------------------------------------------------
    def create(self, request: TokenCreate) -> TokenCreated:
        """Create a token; the answer holds its secret, which is never shown again.

        Raises:
            PermissionDeniedError: A personal token asks for a role its creator does not hold,
                or someone other than a platform admin asks for a service-account token.
            InvalidInputError: A name, role, project or endpoint is malformed.
        """
        principal = self._ctx.principal
        name = _label(request.name)
        roles = _roles(request.roles)
        projects = _projects(request.projects)
        endpoint = _endpoint(request.endpoint)
        if endpoint is not None:  # an endpoint caller: reaches that project, invokes by default
            projects = [endpoint.partition("/")[0]]
            roles = [INVOKER_ROLE] if roles is None else roles
        if request.kind == "service":
            if not self._is_admin:
                raise PermissionDeniedError(
                    f"{principal.user!r} may not create service-account tokens: that takes the "
                    f"platform role {ADMIN_ROLE!r}.",
                    hint="Ask a platform admin, or create a personal token (kind 'personal').",
                )
            if not request.owner:
                raise InvalidInputError(
                    "A service-account token needs the account's name (owner).",
                    hint="Name it, e.g. --owner ci-pipeline.",
                    details=[{"loc": ["body", "owner"], "problem": "missing"}],
                )
            owner = validate_user_name(request.owner, source="service account name")
            granted = sorted(roles or ())
        else:
            if request.owner and not same_user(validate_user_name(request.owner), principal.user):
                raise PermissionDeniedError(
                    f"A personal token acts as its creator, {principal.user!r}, not as "
                    f"{request.owner!r}.",
                    hint="Leave the owner out, or ask a platform admin for a service-account "
                    "token.",
                )
            owner = principal.user
            granted = sorted(principal.roles if roles is None else roles)
            # A role one does not hold by name is allowed when it gives permissions and only
            # permissions one holds everywhere (an admin may make a viewer token); a label
            # (a role with no permission, which an approval policy may name) only when held.
            access = Access(self._ctx)
            table = role_table(self._ctx.settings.custom_roles)
            mine = access.global_permissions
            extra = {
                r
                for r in set(granted) - principal.roles
                if not table.get(r) or not table[r] <= mine
            }
            if endpoint is not None and INVOKER_ROLE in extra:
                # Invoking an endpoint one may invoke oneself needs no role held everywhere.
                ProjectService(self._ctx).get(endpoint.partition("/")[0], "endpoints.invoke")
                extra.discard(INVOKER_ROLE)
            if extra:
                extra_roles = sorted(extra)
                raise PermissionDeniedError(
                    f"A personal token may carry at most your own roles and permissions; you do "
                    f"not hold {', '.join(repr(r) for r in extra_roles)}.",
                    hint=f"Your roles are {', '.join(sorted(principal.roles)) or 'none'}.",
                )
        now = self._ctx.clock.now()
        expires = (
            None
            if request.expires_in_days is None
            else now + timedelta(days=request.expires_in_days)
        )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row: dict[str, Any] = {
            "id": new_id(),
            "name": name,
            "owner": owner,
            "kind": request.kind,
            "prefix": secret[:_SHOWN],
            "token_hash": hash_secret(secret),
            "projects": projects,
            "roles": granted,
            "endpoint": endpoint,
            "created_at": now,
            "created_by": principal.user,
            "expires_at": expires,
            "revoked_at": None,
            "revoked_by": None,
            "last_used_at": None,
        }
        with self._ctx.db.write() as uow:
            uow.conn.execute(insert(api_tokens).values(**row))
            info = _info(row, now)
            self._audit.record(uow, "token.created", "api_token", info.id, after=_audited(info))
        return TokenCreated(token=info, secret=secret)

    # Reading ----------------------------------------------------------------------------------
    def list(self, *, all_users: bool = False) -> list[TokenInfo]:
        """The caller's tokens (every token, for a platform admin asking for ``all_users``).

        Raises:
            PermissionDeniedError: ``all_users`` asked by someone who is not a platform admin.
        """
        query = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
        if all_users:
            self._require_admin("list everyone's tokens")
        user = self._ctx.principal.user
        now = self._ctx.clock.now()
        with self._ctx.db.read() as conn:  # owners compare as user names do (NFKC, case-blind)
            return [
                _info(r._mapping, now)
                for r in conn.execute(query)
                if all_users or same_user(r.owner, user)
            ]

    def get(self, token_id: str) -> TokenInfo:
        """One token the caller owns (any token, for a platform admin).

        Raises:
            NotFoundError: No such token, or one the caller may not see.
        """
        with self._ctx.db.read() as conn:
            row = self._visible(conn, token_id)
        return _info(row._mapping, self._ctx.clock.now())

    # Revoking ---------------------------------------------------------------------------------
    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token: it is refused from the next request on (see the module docstring).
        Revoking a revoked token changes nothing.

        Raises:
            NotFoundError: No such token, or one the caller may neither see nor revoke.
        """
        now = self._ctx.clock.now()
        db = self._db_key
        with self._ctx.db.write() as uow:
            row = self._visible(uow.conn, token_id)
            if row.revoked_at is not None:
                return _info(row._mapping, now)
            uow.conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == row.id)
                .values(revoked_at=now, revoked_by=self._ctx.principal.user)
            )
            values = {**row._mapping, "revoked_at": now, "revoked_by": self._ctx.principal.user}
            info = _info(values, now)
            self._audit.record(
                uow,
                "token.revoked",
                "api_token",
                info.id,
                before={"status": "active"},
                after=_audited(info),
            )
            uow.after_commit(f"token-revoked-{info.id}", lambda: TOKEN_CACHE.forget(db, info.id))
        TOKEN_CACHE.forget(db, info.id)
        return info

    # Verifying --------------------------------------------------------------------------------
    def authenticate(self, secret: str) -> AuthenticatedToken:
        """The token ``secret`` names, checked: known, not revoked, not expired.

        Raises:
            AuthenticationError: The token is malformed, unknown, revoked or expired (the
                message says which, never the token).
        """
        token = self.verify_cached(secret)
        if token is not None:
            return token
        digest = hash_secret(secret)
        settings = self._ctx.settings
        token = self._load(digest)
        if settings.auth_cache_ttl_s > 0:
            TOKEN_CACHE.put(self._db_key, digest, token)
        return self._check(token)

    def verify_cached(self, secret: str) -> AuthenticatedToken | None:
        """:meth:`authenticate` from this process's cache only (no I/O): the token, or None
        when it is not cached (then call :meth:`authenticate`).

        Raises:
            AuthenticationError: The token is malformed, or cached as revoked or expired.
        """
        if not well_formed(secret):
            raise AuthenticationError(
                "The bearer token is malformed: a civicml API token is 'cml_' followed by 43 "
                "characters.",
                hint=_LOGIN_HINT,
            )
        settings = self._ctx.settings
        token = TOKEN_CACHE.get(self._db_key, hash_secret(secret), settings.auth_cache_ttl_s)
        return None if token is None else self._check(token)

    def _check(self, token: AuthenticatedToken) -> AuthenticatedToken:
        if token.revoked:
            raise AuthenticationError("The API token was revoked.", hint=_LOGIN_HINT)
        if token.expires_at is not None and self._ctx.clock.now() >= token.expires_at:
            raise AuthenticationError("The API token has expired.", hint=_LOGIN_HINT)
        return token

    def record_failures(self, client: str, reason: str, count: int) -> None:
        """Audit failed authentications from ``client`` (an address; never the credential)."""
        with self._ctx.db.write() as uow:
            self._audit.record(
                uow,
                "auth.failed",
                "client",
                client[:300],
                after={"reason": reason, "failures": count},
            )

    # Internals --------------------------------------------------------------------------------
    def _load(self, digest: str) -> AuthenticatedToken:
        with self._ctx.db.read() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest)).first()
        if row is None or not hmac.compare_digest(str(row.token_hash), digest):
            raise AuthenticationError(
                "The API token is not known to this server.", hint=_LOGIN_HINT
            )
        now = self._ctx.clock.now()
        if row.revoked_at is None and (
            row.last_used_at is None or now - row.last_used_at >= _LAST_USED_EVERY
        ):
            self._touch(row.id, now)
        return AuthenticatedToken(
            id=row.id,
            owner=row.owner,
            kind=row.kind,
            roles=frozenset(row.roles or ()),
            projects=frozenset(p if p == "*" else p.lower() for p in row.projects or ()),
            endpoint=row.endpoint,
            expires_at=row.expires_at,
            revoked=row.revoked_at is not None,
        )

    def _touch(self, token_id: str, now: datetime) -> None:
        """Record ``last_used_at`` (at most once a minute per token; never fails a request)."""
        try:
            with self._ctx.db.write() as uow:
                uow.conn.execute(
                    update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now)
                )
        except Exception as err:  # a busy database must not refuse a valid token
            log.warning("could not record when a token was last used: %s", type(err).__name__)

    def _visible(self, conn: Any, token_id: str) -> Any:
        row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        if row is None or (
            not same_user(row.owner, self._ctx.principal.user) and not self._is_admin
        ):
            raise NotFoundError(
                f"API token {token_id!r} does not exist.",
                hint="List your tokens: civicml tokens list",
            )
        return row

    def _require_admin(self, what: str) -> None:
        if not self._is_admin:
            raise PermissionDeniedError(
                f"{self._ctx.principal.user!r} may not {what}: that takes the platform role "
                f"{ADMIN_ROLE!r}.",
                hint="Leave out --all to see your own tokens.",
            )


_LOGIN_HINT = (
    "Send a valid token as 'Authorization: Bearer cml_...'; create one with "
    "'civicml tokens create' and store it with 'civicml login'."
)


def _label(name: str) -> str:
    return validate_name("Token", name)


def _roles(roles: list[str] | None) -> list[str] | None:
    if roles is None:
        return None
    if len(roles) > _MAX_ROLES:
        raise InvalidInputError(
            f"A token carries at most {_MAX_ROLES} roles, not {len(roles)}.",
            hint="Name fewer roles.",
        )
    return sorted({validate_name("Role", r) for r in roles})


def _projects(projects: list[str]) -> list[str]:
    if not projects:
        raise InvalidInputError(
            "A token must reach at least one project.",
            hint="Name projects, or '*' for all of them.",
            details=[{"loc": ["body", "projects"], "problem": "empty"}],
        )
    if len(projects) > _MAX_PROJECTS:
        raise InvalidInputError(
            f"A token names at most {_MAX_PROJECTS} projects, not {len(projects)}.",
            hint="Use '*' for all projects.",
        )
    if "*" in projects:
        return ["*"]
    return sorted({validate_name("Project", p) for p in projects})


def _endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    project, sep, name = endpoint.partition("/")
    if not sep:
        raise InvalidInputError(
            f"Endpoint {endpoint!r} is not 'project/endpoint'.",
            hint="Write the endpoint as PROJECT/NAME, e.g. benefits/eligibility.",
            details=[{"loc": ["body", "endpoint"], "problem": "not project/endpoint"}],
        )
    return f"{validate_name('Project', project)}/{validate_name('Endpoint', name)}"


def _status(values: Any, now: datetime) -> str:
    if values["revoked_at"] is not None:
        return "revoked"
    if values["expires_at"] is not None and now >= values["expires_at"]:
        return "expired"
    return "active"


def _info(values: Any, now: datetime) -> TokenInfo:
    return TokenInfo(
        id=values["id"],
        name=values["name"],
        owner=values["owner"],
        kind=values["kind"],
        prefix=values["prefix"],
        projects=list(values["projects"] or ()),
        roles=list(values["roles"] or ()),
        endpoint=values["endpoint"],
        created_at=values["created_at"],
        created_by=values["created_by"],
        expires_at=values["expires_at"],
        revoked_at=values["revoked_at"],
        revoked_by=values["revoked_by"],
        last_used_at=values["last_used_at"],
        status=_status(values, now),
    )


def _audited(info: TokenInfo) -> dict[str, Any]:
    """What the audit trail keeps of a token: never the secret or its hash."""
    return info.model_dump(
        mode="json",
        include={
            "name",
            "owner",
            "kind",
            "prefix",
            "projects",
            "roles",
            "endpoint",
            "expires_at",
            "status",
        },
    )
