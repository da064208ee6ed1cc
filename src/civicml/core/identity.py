"""Who is calling: the Principal carried by every service call.

Authentication arrives later (see DESIGN.md, step 8). Until then the principal comes from
``CIVICML_USER`` or the operating-system user, through :func:`resolve_principal`, the one function
the auth work replaces.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["DEFAULT_ROLES", "Principal", "resolve_principal"]

DEFAULT_ROLES: frozenset[str] = frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """A user and the roles they act in."""

    user: str
    roles: frozenset[str] = field(default=DEFAULT_ROLES)

    def to_dict(self) -> dict[str, object]:
        return {"user": self.user, "roles": sorted(self.roles)}


def resolve_principal(
    user: str | None = None, roles: Mapping[str, Sequence[str]] | None = None
) -> Principal:
    """The principal ``user`` (from ``CIVICML_USER``; default the OS user) with the roles the
    ``roles`` setting gives that user (:data:`DEFAULT_ROLES` when it names none)."""
    name = user
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "unknown"
    granted = (roles or {}).get(name)
    return Principal(user=name, roles=frozenset(granted) if granted else DEFAULT_ROLES)
