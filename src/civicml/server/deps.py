"""Per-request collaborators: the caller's principal and the services acting for them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fastapi import Request

from civicml.core.errors import AuthenticationError, InvalidInputError
from civicml.core.identity import Principal, resolve_principal
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.tokens import TokenService
from civicml.registry.service import RegistryService
from civicml.store.context import Context
from civicml.tracking.service import TrackingService
from civicml.tracking.writer import MetricWriter

__all__ = ["AppState", "Services", "caller_services", "principal_for_request", "services"]

USER_HEADER = "x-civicml-user"
#: The ASGI scope key where server/auth.py leaves the authenticated principal.
PRINCIPAL_KEY = "civicml.principal"


@dataclass
class AppState:
    """What the running app holds: the shared stores and the group-commit metric writer."""

    ctx: Context
    writer: MetricWriter


def principal_for_request(request: Request, default: Principal) -> Principal:
    """Who is calling.

    With ``auth = "token"`` it is the owner of the request's API token, in the token's roles
    (set by :class:`civicml.server.auth.AuthMiddleware`; ``X-CivicML-User`` is ignored). With
    ``auth = "none"`` (loopback only) a client names its user in ``X-CivicML-User`` (the SDK sends
    ``CIVICML_USER`` or the OS user), and the server's own user is used otherwise."""
    if request.app.state.settings.auth != "none":
        principal = request.scope.get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):  # the middleware always sets it: never here
            raise AuthenticationError(
                "This request was not authenticated.",
                hint="Send 'Authorization: Bearer cml_...'.",
            )
        return principal
    raw = request.headers.get(USER_HEADER, "").strip(" \t")  # str.strip() would eat U+0085
    if not raw:
        return default
    roles = request.app.state.civicml.ctx.settings.roles
    found = _NAMED.get(raw)
    if found is not None and found[0] is roles:
        return found[1]
    try:  # header bytes arrive as latin-1 text; the SDK sends the name as UTF-8
        name = raw.encode("latin-1").decode("utf-8")
    except UnicodeError as err:
        raise InvalidInputError(
            "The X-CivicML-User header is not UTF-8 text.",
            hint="Send the user name as UTF-8, e.g. 'X-CivicML-User: alice'.",
        ) from err
    # An invalid name (control, zero-width, bidi-override characters) is a 422, never ignored.
    principal = resolve_principal(name, roles, source="X-CivicML-User header")
    if len(_NAMED) >= _NAMED_MAX:
        _NAMED.clear()
    _NAMED[raw] = (roles, principal)
    return principal


#: Principals resolved from ``X-CivicML-User`` headers, by the header's text, with the
#: ``roles`` setting they were resolved under (a client sends the same name on every request;
#: resolving it checks each character and compares the name with every ``roles`` entry). Only
#: valid names enter; at :data:`_NAMED_MAX` names it starts again.
_NAMED: dict[str, tuple[object, Principal]] = {}
_NAMED_MAX = 1024


class Services:
    """The services, acting for one request's principal (built lazily, cheap to make)."""

    def __init__(self, ctx: Context, writer: MetricWriter) -> None:
        self.ctx = ctx
        self.writer = writer

    @cached_property
    def projects(self) -> ProjectService:
        return ProjectService(self.ctx)

    @cached_property
    def tracking(self) -> TrackingService:
        return TrackingService(self.ctx)

    @cached_property
    def registry(self) -> RegistryService:
        return RegistryService(self.ctx)

    @cached_property
    def lineage(self) -> LineageService:
        return LineageService(self.ctx)

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.ctx)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.ctx)


def services(request: Request) -> Services:
    state: AppState = request.app.state.civicml
    principal = principal_for_request(request, state.ctx.principal)
    ctx = state.ctx if principal == state.ctx.principal else state.ctx.as_principal(principal)
    return Services(ctx, state.writer)


async def caller_services(request: Request) -> Services:
    """:func:`services` as a dependency that costs no trip to a worker thread (it does no I/O):
    a synchronous dependency runs in FastAPI's thread pool, which on a busy server costs more
    than a small request's own work."""
    return services(request)
