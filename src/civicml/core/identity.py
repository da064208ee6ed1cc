"""Who is calling: the Principal carried by every service call.

Against a server with ``auth = "token"`` the principal is the owner of the request's API token
or OpenID Connect JWT, in the roles the token carries (``civicml.server.auth``). In embedded use
and against a loopback server with ``auth = "none"`` it comes from ``CIVICML_USER`` (or ``--user``,
or the ``X-CivicML-User`` header a client sends) or the operating-system user, through
:func:`resolve_principal`, with the roles the ``roles`` setting gives that user — ``admin`` when it
names none, because whoever holds the files of an embedded home owns it (docs/security.md).

``roles`` are the principal's roles on *every* project it may reach; per-project grants are read
from the database by :class:`civicml.governance.access.Access`. ``projects`` is the reach of the
credential (a token scoped to some projects): ``{"*"}`` for all. Every name is checked by
:func:`civicml.core.names.validate_user_name`: the audit trail never records an actor made of
invisible or direction-changing characters.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from civicml.core.names import user_key, validate_user_name

__all__ = ["ALL_PROJECTS", "DEFAULT_ROLES", "Principal", "resolve_principal"]

DEFAULT_ROLES: frozenset[str] = frozenset({"admin"})
#: The project reach of a credential that is not limited to some projects.
ALL_PROJECTS: frozenset[str] = frozenset({"*"})


@dataclass(frozen=True, slots=True)
class Principal:
    """A user, the roles they act in on every project they reach, and that reach."""

    user: str
    roles: frozenset[str] = field(default=DEFAULT_ROLES)
    #: Lower-case project names the credential reaches, or ``{"*"}`` for all of them.
    projects: frozenset[str] = field(default=ALL_PROJECTS)
    #: ``(lower-case project, role)`` pairs the credential itself grants on single projects
    #: (an identity provider's group mapped to ``"benefits:data-scientist"``).
    grants: frozenset[tuple[str, str]] = field(default=frozenset())

    def to_dict(self) -> dict[str, object]:
        return {"user": self.user, "roles": sorted(self.roles)}

    def roles_in(self, project: str) -> frozenset[str]:
        """The roles the credential grants on ``project`` alone."""
        if not self.grants:
            return frozenset()
        key = project.lower()
        return frozenset(role for where, role in self.grants if where == key)

    def reaches(self, project: str) -> bool:
        """Whether the credential's project scope includes ``project`` (case-blind)."""
        return "*" in self.projects or project.lower() in self.projects


def resolve_principal(
    user: str | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    *,
    source: str = "user name",
) -> Principal:
    """The principal ``user`` (from ``CIVICML_USER``; default the OS user) with the roles the
    ``roles`` setting gives that user (:data:`DEFAULT_ROLES` when it names none).

    Args:
        user: The name the caller gave; None or empty for the operating-system user.
        roles: The ``roles`` setting.
        source: Where ``user`` came from, for the error message (``"X-CivicML-User header"``).

    Raises:
        InvalidInputError: The name holds control, zero-width, bidirectional-override or other
            invisible characters, or is longer than 128 characters.
    """
    if user:
        name = validate_user_name(user, source=source)
    else:
        try:
            name = validate_user_name(getpass.getuser(), source="operating-system user name")
        except (KeyError, OSError):
            name = "unknown"
    key = user_key(name)  # [roles] keys compare as user names do (case, NFKC)
    granted = next((r for u, r in (roles or {}).items() if user_key(u) == key), None)
    return Principal(user=name, roles=frozenset(granted) if granted else DEFAULT_ROLES)
