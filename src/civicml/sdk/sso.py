"""Single sign-on for the CLI and SDK: the OAuth 2.0 device grant (RFC 8628) and refresh.

``civicml login --oidc`` asks the civicml server where to sign in (``GET /api/v1/auth/oidc``:
issuer and public client id), reads the issuer's discovery document, asks its
``device_authorization_endpoint`` for a device code, shows the user where to approve it, and
polls the ``token_endpoint`` as RFC 8628 section 3.5 says: no faster than ``interval``, five
seconds slower after each ``slow_down``, until the user approves (tokens), denies
(``access_denied``) or the code expires (``expired_token`` or the ``expires_in`` deadline).

What it gets — the access token (a JWT the server verifies), its expiry and, when the issuer
gives one, a refresh token — is stored per server in the credentials file (mode 0600,
:mod:`civicml.sdk.credentials`). :class:`SSOSession` hands the SDK a bearer that is still
valid, refreshing it (``grant_type=refresh_token``) shortly before it expires; without a
refresh token an expired session is an :class:`AuthenticationError` telling the user to log
in again. Identity-provider URLs must be https:// (http:// only on loopback), the same rule as
the server's ``oidc_issuer``; TLS is verified as for the civicml server (``ca_bundle``).
Tokens are never logged nor put in a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from civicml.core.errors import (
    AuthenticationError,
    CivicMLError,
    ConfigurationError,
    InvalidInputError,
)
from civicml.core.settings import check_identity_url
from civicml.governance.schemas import OIDCClientConfig
from civicml.sdk.credentials import save_oidc, stored_oidc

__all__ = ["DeviceCode", "IdentityProviderError", "SSOSession", "device_login"]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
_MAX_DOCUMENT = 1_048_576
_REFRESH_MARGIN_S = 30.0  # refresh this long before the access token expires
_SLOW_DOWN_S = 5.0  # RFC 8628 section 3.5
_AGAIN = "Log in again: civicml login --url URL --oidc"

#: Sleep between polls; a module attribute so tests can record the waits instead.
_SLEEP: Callable[[float], None] = time.sleep


class IdentityProviderError(CivicMLError):
    """The identity provider could not be reached or answered something unusable."""

    status = 502


@dataclass(frozen=True, slots=True)
class DeviceCode:
    """A pending device authorization: what the user sees and what the client polls with."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_at: float


def open_http(ca_bundle: Path | None) -> httpx.Client:
    """An httpx client for the identity provider, trusting what the civicml client trusts."""
    from civicml.sdk.remote import _trust  # here: remote imports this module

    return httpx.Client(
        timeout=_TIMEOUT,
        verify=_trust(ca_bundle),
        follow_redirects=False,
        headers={"user-agent": "civicml-sdk", "accept": "application/json"},
    )


def server_config(http: httpx.Client, server: str) -> OIDCClientConfig:
    """Where the civicml server at ``server`` has its users sign in."""
    url = f"{server.rstrip('/')}/api/v1/auth/oidc"
    try:
        response = http.get(url)
    except httpx.HTTPError as err:
        raise IdentityProviderError(
            f"Cannot ask the civicml server at {server} where to sign in ({type(err).__name__}).",
            hint="Check --url, and --ca-bundle for an agency's own certificate authority.",
        ) from err
    if response.status_code == 404:
        raise InvalidInputError(
            f"The civicml server at {server} has no single sign-on (OpenID Connect) configured.",
            hint="Log in with an API token: civicml login --url URL",
        )
    if response.status_code != 200:
        raise IdentityProviderError(
            f"The civicml server at {server} answered HTTP {response.status_code} to "
            "GET /api/v1/auth/oidc."
        )
    return OIDCClientConfig.model_validate(response.json())


def _url(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise IdentityProviderError(
            f"The identity provider's discovery document names no {what}.",
            hint="The identity provider must allow the OAuth 2.0 device grant (RFC 8628) "
            "for civicml's client (docs/security.md, 'Single sign-on').",
        )
    try:
        return check_identity_url(value, what)
    except ValueError as err:
        raise ConfigurationError(str(err) + ".") from None


def _document(response: httpx.Response, what: str) -> dict[str, Any]:
    if len(response.content) > _MAX_DOCUMENT:
        raise IdentityProviderError(f"The identity provider's {what} is too large.")
    try:
        value = response.json()
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise IdentityProviderError(
            f"The identity provider's {what} is not a JSON object (HTTP {response.status_code})."
        )
    return value


def _post(http: httpx.Client, url: str, form: dict[str, str], what: str) -> httpx.Response:
    try:
        return http.post(url, data=form)
    except httpx.HTTPError as err:
        raise IdentityProviderError(
            f"Cannot reach the identity provider's {what} ({type(err).__name__}).",
            hint="Try again shortly; check the network and --ca-bundle.",
        ) from err


def discover(http: httpx.Client, issuer: str) -> tuple[str, str]:
    """The issuer's ``device_authorization_endpoint`` and ``token_endpoint``."""
    check = _url(issuer, "oidc_issuer")
    try:
        response = http.get(f"{check.rstrip('/')}/.well-known/openid-configuration")
    except httpx.HTTPError as err:
        raise IdentityProviderError(
            f"Cannot read the identity provider's discovery document at {issuer} "
            f"({type(err).__name__}).",
            hint="Check that the identity provider is reachable from here, and --ca-bundle.",
        ) from err
    if response.status_code != 200:
        raise IdentityProviderError(
            f"The identity provider at {issuer} answered HTTP {response.status_code} for its "
            "discovery document."
        )
    config = _document(response, "discovery document")
    if config.get("issuer") not in (None, issuer):
        raise IdentityProviderError(
            f"The discovery document at {issuer} names another issuer.",
            hint="An administrator should check oidc_issuer on the civicml server.",
        )
    device = _url(config.get("device_authorization_endpoint"), "device_authorization_endpoint")
    token = _url(config.get("token_endpoint"), "token_endpoint")
    return device, token


def start(
    http: httpx.Client,
    endpoint: str,
    client_id: str,
    scopes: list[str],
    *,
    clock: Callable[[], float] = time.time,
) -> DeviceCode:
    """Ask the device authorization endpoint for a device code (RFC 8628 section 3.1)."""
    scope = " ".join(dict.fromkeys(["openid", *scopes]))
    response = _post(
        http, endpoint, {"client_id": client_id, "scope": scope}, "device authorization endpoint"
    )
    body = _document(response, "device authorization answer")
    if response.status_code != 200:
        raise _refused(body, "The identity provider refused to start a device login")
    try:
        return DeviceCode(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=_url(
                body.get("verification_uri") or body.get("verification_url"), "verification_uri"
            ),
            verification_uri_complete=(
                _url(body["verification_uri_complete"], "verification_uri_complete")
                if body.get("verification_uri_complete")
                else None
            ),
            interval=max(float(body.get("interval") or 5), 0.0),
            expires_at=clock() + float(body["expires_in"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise IdentityProviderError(
            "The identity provider's device authorization answer lacks device_code, "
            "user_code or expires_in."
        ) from err


def poll(
    http: httpx.Client,
    token_endpoint: str,
    client_id: str,
    code: DeviceCode,
    *,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Poll the token endpoint until the user approves (RFC 8628 section 3.4-3.5); the tokens.

    Raises:
        AuthenticationError: The user denied the request, or the code expired.
        IdentityProviderError: The identity provider answered something unusable.
    """
    interval = code.interval
    form = {"grant_type": DEVICE_GRANT, "device_code": code.device_code, "client_id": client_id}
    while True:
        if clock() + interval >= code.expires_at:
            raise _expired()
        _SLEEP(interval)
        response = _post(http, token_endpoint, form, "token endpoint")
        body = _document(response, "token answer")
        if response.status_code == 200:
            return _tokens(body, clock)
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += _SLOW_DOWN_S
            continue
        if error == "access_denied":
            raise AuthenticationError(
                "The sign-in was denied at the identity provider; nothing was stored.",
                hint=f"{_AGAIN} (and approve the request this time).",
            )
        if error == "expired_token":
            raise _expired()
        raise _refused(body, "The identity provider refused the device login")


def refresh(
    http: httpx.Client, session: dict[str, Any], *, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """A fresh session from the stored one's refresh token (``grant_type=refresh_token``)."""
    endpoint = _url(session.get("token_endpoint"), "token_endpoint")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": str(session["refresh_token"]),
        "client_id": str(session.get("client_id") or ""),
    }
    response = _post(http, endpoint, form, "token endpoint")
    body = _document(response, "token answer")
    if response.status_code != 200:
        raise AuthenticationError(
            "The single sign-on session has expired and the identity provider refused to "
            f"refresh it ({_error_code(body)}).",
            hint=_AGAIN,
        )
    fresh = _tokens(body, clock)
    fresh.setdefault("refresh_token", session["refresh_token"])  # not rotated: keep the old
    return {**session, **fresh}


def _tokens(body: dict[str, Any], clock: Callable[[], float]) -> dict[str, Any]:
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise IdentityProviderError("The identity provider's token answer has no access_token.")
    try:
        lifetime = float(body.get("expires_in") or 300)
    except (TypeError, ValueError):
        lifetime = 300.0
    found: dict[str, Any] = {"access_token": access, "expires_at": clock() + lifetime}
    if isinstance(body.get("refresh_token"), str) and body["refresh_token"]:
        found["refresh_token"] = body["refresh_token"]
    return found


def _error_code(body: dict[str, Any]) -> str:
    error = body.get("error")
    return error if isinstance(error, str) and error.isprintable() and len(error) < 80 else "?"


def _refused(body: dict[str, Any], what: str) -> CivicMLError:
    return IdentityProviderError(
        f"{what} ({_error_code(body)}).",
        hint="The identity provider must allow the device grant for civicml's public client "
        "(docs/security.md, 'Single sign-on').",
    )


def _expired() -> AuthenticationError:
    return AuthenticationError(
        "The sign-in code expired before it was approved; nothing was stored.",
        hint=_AGAIN,
    )


def device_login(
    server: str,
    *,
    home: Path | None,
    ca_bundle: Path | None,
    on_code: Callable[[DeviceCode], None],
    clock: Callable[[], float] = time.time,
) -> tuple[OIDCClientConfig, Path]:
    """Sign in to ``server`` with the device grant and store the session (mode 0600).

    ``on_code`` is called once with the code to show the user. Returns where the server signs
    in and the credentials file's path.
    """
    with open_http(ca_bundle) as http:
        config = server_config(http, server)
        device_endpoint, token_endpoint = discover(http, config.issuer)
        code = start(http, device_endpoint, config.client_id, config.scopes, clock=clock)
        on_code(code)
        tokens = poll(http, token_endpoint, config.client_id, code, clock=clock)
    session = {
        **tokens,
        "token_endpoint": token_endpoint,
        "client_id": config.client_id,
        "issuer": config.issuer,
    }
    return config, save_oidc(server, session, home)


class SSOSession:
    """The stored single sign-on session for one server: a valid bearer on demand."""

    def __init__(
        self,
        server: str,
        session: dict[str, Any],
        *,
        home: Path | None,
        ca_bundle: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._server = server
        self._session = session
        self._home = home
        self._ca_bundle = ca_bundle
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def load(cls, server: str, *, home: Path | None, ca_bundle: Path | None) -> SSOSession | None:
        """The session ``civicml login --oidc`` stored for ``server``, if any."""
        found = stored_oidc(server, home)
        return None if found is None else cls(server, found, home=home, ca_bundle=ca_bundle)

    def bearer(self) -> str:
        """The access token, refreshed first when it expires within 30 seconds.

        Raises:
            AuthenticationError: It has expired and there is no refresh token, or the identity
                provider refused to refresh it.
        """
        with self._lock:
            try:
                expires = float(self._session.get("expires_at") or 0)
            except (TypeError, ValueError):
                expires = 0.0
            if self._clock() < expires - _REFRESH_MARGIN_S:
                return str(self._session["access_token"])
            if not self._session.get("refresh_token"):
                raise AuthenticationError(
                    f"The single sign-on session for {self._server} has expired.",
                    hint=_AGAIN,
                )
            with open_http(self._ca_bundle) as http:
                self._session = refresh(http, self._session, clock=self._clock)
            save_oidc(self._server, self._session, self._home)
            return str(self._session["access_token"])
