"""Who is calling: the Principal carried by every service call.

Authentication (API tokens, single sign-on, roles per project) is planned, not built yet. Until
it is, the principal comes from ``CIVICML_USER`` (or ``--user``, or the ``X-CivicML-User`` header a
client sends) or the operating-system user, through :func:`resolve_principal`, the one function
the authentication work will replace. Every name is checked by
:func:`civicml.core.names.validate_user_name`: the audit trail never records an actor made of
invisible or direction-changing characters.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from civicml.core.names import validate_user_name

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
    granted = (roles or {}).get(name)
    return Principal(user=name, roles=frozenset(granted) if granted else DEFAULT_ROLES)
