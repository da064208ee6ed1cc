"""``ml.tokens``: create, list and revoke API tokens (embedded or remote alike)."""

from __future__ import annotations

from typing import Any, Literal

from civicml.governance.schemas import TokenCreate, TokenCreated, TokenInfo, WhoAmI

__all__ = ["TokensHandle"]


class TokensHandle:
    """API tokens of the server (remote) or of the local platform (embedded)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def create(
        self,
        name: str,
        *,
        kind: Literal["personal", "service"] = "personal",
        owner: str | None = None,
        roles: list[str] | None = None,
        projects: list[str] | None = None,
        endpoint: str | None = None,
        expires_in_days: int | None = 90,
    ) -> TokenCreated:
        """Create a token; ``.secret`` of the answer is the token, shown this once.

        Example:
            >>> made = ml.tokens.create("ci", kind="service", owner="ci-bot")  # doctest: +SKIP
            >>> made.secret  # doctest: +SKIP
            'cml_...'
        """
        request = TokenCreate(
            name=name,
            kind=kind,
            owner=owner,
            roles=roles,
            projects=projects or ["*"],
            endpoint=endpoint,
            expires_in_days=expires_in_days,
        )
        return self._backend.create_token(request)  # type: ignore[no-any-return]

    def list(self, *, all: bool = False) -> list[TokenInfo]:
        """Your tokens (every user's, for a platform admin asking ``all=True``); never secrets."""
        return list(self._backend.list_tokens(all))

    def get(self, token_id: str) -> TokenInfo:
        return self._backend.get_token(token_id)  # type: ignore[no-any-return]

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token: refused from its next request on."""
        return self._backend.revoke_token(token_id)  # type: ignore[no-any-return]

    def whoami(self) -> WhoAmI:
        """Who the server (or the local platform) takes you for."""
        return self._backend.whoami()  # type: ignore[no-any-return]
