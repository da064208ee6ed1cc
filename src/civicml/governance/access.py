"""Authorization, deny by default: who may do what on which project.

Every service method that reads or changes something of a project asks :class:`Access` first
(through :meth:`civicml.governance.projects.ProjectService.get` and friends), so the SDK, the CLI
and the REST API cannot differ. The roles a principal holds on a project are

* the roles it holds on every project (``Principal.roles``: from its API token or OpenID Connect
  claims against a server, from the ``roles`` setting in embedded use), and
* the roles granted on that project (``civicml projects grant``, table ``project_grants``),
  and those its credential grants there (an identity provider's group mapped to
  ``"project:role"``, ``Principal.grants``),

limited to the projects its credential reaches (``Principal.projects``). A role gives the
permissions :func:`civicml.core.permissions.role_table` lists; platform permissions
(``projects.create``, ``audit.verify``, ``tokens.admin``) come only from roles held on every
project. A caller with no permission at all on a project is told it does not exist (404, the same
answer as for a project that does not), so nobody learns what they may not see; a caller who
may see the project but not do this is refused (403) naming the permission.

Project grants are read from the database at most once per ``auth_cache_ttl_s`` per user and
process (:data:`GRANT_CACHE`); a grant or revocation drops the cache of the process that made it
at once. A principal whose global roles already give the permission never reads them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache

from sqlalchemy import select

from civicml.core.errors import NotFoundError, PermissionDeniedError, closest
from civicml.core.identity import Principal
from civicml.core.names import user_key
from civicml.core.permissions import PERMISSIONS, PLATFORM_PERMISSIONS, role_table
from civicml.core.settings import Settings
from civicml.governance._tables import project_grants, projects
from civicml.store.context import Context

__all__ = ["GRANT_CACHE", "Access", "GrantCache", "global_permissions", "project_missing"]

_Grants = dict[str, frozenset[str]]  # project id -> roles granted there


class GrantCache:
    """Per-project grants of recent users, by (database, user key), for a few seconds each."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[_Grants, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, db: str, user: str, ttl: float) -> _Grants | None:
        with self._lock:
            found = self._entries.get((db, user))
            if found is None or time.monotonic() - found[1] >= ttl:
                return None
            return found[0]

    def put(self, db: str, user: str, grants: _Grants) -> None:
        with self._lock:
            self._entries[(db, user)] = (grants, time.monotonic())
            self._entries.move_to_end((db, user))
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def forget(self, db: str) -> None:
        """Drop every entry of database ``db`` (a grant or revocation was just committed)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == db]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The process-wide grant cache.
GRANT_CACHE = GrantCache()


@lru_cache(maxsize=64)
def _table(custom: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, frozenset[str]]:
    return role_table(dict(custom))


@lru_cache(maxsize=4096)
def _permissions(
    roles: frozenset[str], custom: tuple[tuple[str, tuple[str, ...]], ...]
) -> frozenset[str]:
    table = _table(custom)
    return frozenset().union(*(table.get(r, frozenset()) for r in roles))


def _custom_key(custom: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k, tuple(v)) for k, v in custom.items())) if custom else ()


def global_permissions(principal: Principal, settings: Settings) -> frozenset[str]:
    """What ``principal`` may do on every project it reaches (cached; no database)."""
    return _permissions(principal.roles, _custom_key(settings.custom_roles))


def project_missing(name: str, visible: Iterable[str], may_create: bool) -> NotFoundError:
    """The one answer for a project that does not exist *or* that the caller may not see."""
    hint = closest(name, visible) or (
        f"Create it: civicml projects create {name}"
        if may_create
        else "Check the name, or ask a project admin to grant you a role on it "
        "(civicml projects grant)."
    )
    return NotFoundError(f"Project {name!r} does not exist.", hint=hint)


class Access:
    """The permission checks for ``ctx.principal`` (cheap to make: one per service)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._custom = _custom_key(ctx.settings.custom_roles)
        self._global = _permissions(ctx.principal.roles, self._custom)
        self._db_key = ctx.db.url

    # Questions --------------------------------------------------------------------------------
    @property
    def global_permissions(self) -> frozenset[str]:
        """What the principal may do on every project it reaches."""
        return self._global

    def roles_on(self, project_id: str, project_name: str) -> frozenset[str]:
        """The principal's roles on a project: its global roles and the project's grants."""
        principal = self._ctx.principal
        if not principal.reaches(project_name):
            return frozenset()
        held = principal.roles | principal.roles_in(project_name)
        return held | self._grants().get(project_id, frozenset())

    def permissions_on(self, project_id: str, project_name: str) -> frozenset[str]:
        """Every permission the principal holds on the project (empty: it may not see it)."""
        principal = self._ctx.principal
        if not principal.reaches(project_name):
            return frozenset()
        granted = self._grants().get(project_id, frozenset()) | principal.roles_in(project_name)
        if not granted:
            return self._global
        return self._global | _permissions(granted, self._custom)

    def allows(self, project_id: str, project_name: str, permission: str) -> bool:
        """Whether the principal may ``permission`` on the project."""
        if not self._ctx.principal.reaches(project_name):
            return False
        if permission in self._global:  # the hot path: no database, no cache
            return True
        principal = self._ctx.principal
        granted = self._grants().get(project_id, frozenset()) | principal.roles_in(project_name)
        return bool(granted) and permission in _permissions(granted, self._custom)

    def role_names(self) -> frozenset[str]:
        """Every role there is: built in and custom."""
        return frozenset(_table(self._custom))

    def may(self, permission: str) -> bool:
        """Whether the principal holds the platform (or every-project) ``permission``."""
        return permission in self._global

    # Checks -----------------------------------------------------------------------------------
    def require(
        self,
        project_id: str,
        project_name: str,
        permission: str,
        *,
        hidden: Callable[[], NotFoundError] | None = None,
    ) -> None:
        """Refuse unless the principal may ``permission`` on the project.

        Raises:
            NotFoundError: The principal holds no permission at all on the project: ``hidden()``
                when given (the object looked up by id "does not exist"), else the project
                "does not exist", exactly as for a project that does not.
            PermissionDeniedError: It may see the project but not do this.
        """
        if permission not in PERMISSIONS:  # pragma: no cover - a typo in civicml itself
            raise ValueError(f"unknown permission {permission!r}")
        if self.allows(project_id, project_name, permission):
            return
        held = self.permissions_on(project_id, project_name)
        if not held:
            if hidden is not None:
                raise hidden()
            raise project_missing(project_name, self.visible_names(), self.may("projects.create"))
        raise self._denied(permission, f"in project {project_name!r}")

    def require_in(
        self, project_id: str, permission: str, *, hidden: Callable[[], NotFoundError]
    ) -> None:
        """:meth:`require` for an object found by id, whose project is known by id only.

        Raises:
            NotFoundError: ``hidden()``: the caller may not see the object's project.
            PermissionDeniedError: It may see the project but not do this.
        """
        if "*" in self._ctx.principal.projects and permission in self._global:
            return  # the hot path: no database
        with self._ctx.db.read() as conn:
            name = conn.execute(select(projects.c.name).where(projects.c.id == project_id)).scalar()
        if name is None:  # pragma: no cover - every stored object names an existing project
            raise hidden()
        self.require(project_id, name, permission, hidden=hidden)

    def require_platform(self, permission: str) -> None:
        """Refuse unless the principal holds the platform ``permission``.

        Raises:
            PermissionDeniedError: It does not.
        """
        if permission not in PLATFORM_PERMISSIONS:  # pragma: no cover - a civicml typo
            raise ValueError(f"unknown platform permission {permission!r}")
        if permission not in self._global:
            raise self._denied(permission, "on this platform")

    def visible_names(self) -> list[str]:
        """Names of the projects the principal may see (``projects.read``)."""
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(projects.c.id, projects.c.name)).all()
        return [r.name for r in rows if self.allows(r.id, r.name, "projects.read")]

    # Internals --------------------------------------------------------------------------------
    def _denied(self, permission: str, where: str) -> PermissionDeniedError:
        principal = self._ctx.principal
        what = PERMISSIONS[permission]
        return PermissionDeniedError(
            f"{principal.user} may not do this {where}: it takes the permission {permission!r} "
            f"({what}), which none of your roles there gives.",
            hint="Ask a project admin for a role that has it (docs/security.md lists them; "
            "civicml projects members shows who holds what).",
        )

    def _grants(self) -> _Grants:
        user = user_key(self._ctx.principal.user)
        ttl = self._ctx.settings.auth_cache_ttl_s
        found = GRANT_CACHE.get(self._db_key, user, ttl)
        if found is not None:
            return found
        grants: dict[str, set[str]] = {}
        with self._ctx.db.read() as conn:
            query = select(project_grants.c.project_id, project_grants.c.role).where(
                project_grants.c.user_key == user
            )
            for project_id, role in conn.execute(query):
                grants.setdefault(project_id, set()).add(role)
        frozen = {k: frozenset(v) for k, v in grants.items()}
        if ttl > 0:
            GRANT_CACHE.put(self._db_key, user, frozen)
        return frozen
