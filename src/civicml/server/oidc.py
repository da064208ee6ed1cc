"""OpenID Connect: bearer JWTs from the organisation's identity provider (settings ``oidc_*``).

When ``oidc_issuer`` is set, a bearer value that has the form of a JWT (three dot-separated
parts, not starting with ``cml_``) is verified here rather than as an API token:

* the issuer's keys come from ``{issuer}/.well-known/openid-configuration`` → ``jwks_uri``,
  fetched with httpx (time-outs) and cached for ``oidc_jwks_cache_s``; a ``kid`` the cache does
  not hold makes one refetch (key rotation), at most once per ``oidc_jwks_refetch_s`` so forged
  ``kid`` values cannot make the server hammer the issuer;
* the header's ``alg`` must be in ``oidc_algorithms`` (never ``none`` nor an HMAC algorithm,
  refused by the settings) and fit the key's type and curve, so a public key is never used as
  an HMAC secret; the signature is checked by ``joserfc``;
* ``iss`` must equal the issuer exactly, ``aud`` must hold ``oidc_audience``, ``exp`` must be
  present; ``exp``, ``nbf`` and ``iat`` are checked with ``oidc_leeway_s`` of clock skew;
* the user is the ``oidc_user_claim`` (``preferred_username``, falling back to ``sub``),
  checked by :func:`civicml.core.names.validate_user_name`; the roles are those
  ``oidc_role_map`` gives the values of ``oidc_roles_claim`` (a dotted path such as
  ``realm_access.roles``); values the map does not name give no role.

A verified token is cached per SHA-256 of the token (bounded LRU) until its ``exp``, so a
request after the first costs neither network nor cryptography. A token that fails is an
:class:`AuthenticationError` (401, counted by the failure limiter); an issuer that cannot be
reached when its keys are needed is a :class:`ServiceUnavailableError` (503, Retry-After). The
token itself is never logged nor put in a message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import Key, import_key

from civicml.core.errors import AuthenticationError, CivicMLError, ServiceUnavailableError
from civicml.core.identity import Principal
from civicml.core.names import validate_user_name
from civicml.core.settings import Settings

__all__ = ["OIDCVerifier", "VerifiedJWT", "looks_like_jwt"]

log = logging.getLogger("civicml.server.oidc")

#: Key type (and EC curve) each allowed algorithm needs.
_KEY_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
_HINT = (
    "Sign in again with the organisation's identity provider and send the fresh ID or access "
    "token as 'Authorization: Bearer <jwt>', or use a civicml API token."
)
_MAX_TOKEN = 16_384  # characters: a JWT larger than this is not one an IdP issued
_MAX_DOCUMENT = 1_048_576  # bytes of a discovery document or JWKS
_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
_RETRY_AFTER = 30


def looks_like_jwt(value: str) -> bool:
    """Whether a bearer value has the form of a JWS compact JWT (and is not an API token)."""
    return not value.startswith("cml_") and value.count(".") == 2 and len(value) <= _MAX_TOKEN


@dataclass(frozen=True, slots=True)
class VerifiedJWT:
    """Who a verified JWT names, and until when (epoch seconds) it is valid."""

    principal: Principal
    expires: float


class OIDCVerifier:
    """Verifies bearer JWTs against one issuer (thread-safe; one per server process)."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_cached: int = 10_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        if settings.oidc_issuer is None or settings.oidc_audience is None:
            raise ValueError("OIDCVerifier needs oidc_issuer and oidc_audience")
        self.issuer: str = settings.oidc_issuer
        self.audience: str = settings.oidc_audience
        # Only asymmetric algorithms, even if the settings were built without validation.
        self.algorithms = tuple(a for a in settings.oidc_algorithms if a in _KEY_FOR_ALG)
        self.roles_claim = settings.oidc_roles_claim
        self.role_map = {k: tuple(v) for k, v in settings.oidc_role_map.items()}
        self.user_claim = settings.oidc_user_claim
        self.leeway = int(settings.oidc_leeway_s)
        self.jwks_cache_s = settings.oidc_jwks_cache_s
        self.refetch_s = settings.oidc_jwks_refetch_s
        self._now = now
        self._max_cached = max_cached
        self._verified: OrderedDict[str, VerifiedJWT] = OrderedDict()
        self._keys: dict[str, Key] = {}
        self._unnamed: list[Key] = []  # keys without a kid
        self._keys_at: float | None = None  # monotonic time of the last successful fetch
        self._tried_at: float | None = None  # monotonic time of the last fetch attempt
        self._jwks_uri: str | None = None
        self._attempts = 0  # fetch attempts, successful or not
        self._failed = False  # whether the last attempt failed
        self._lock = threading.Lock()  # guards the caches
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self.fetches = 0  # JWKS documents fetched (for tests and diagnostics)

    # -- the hot path ---------------------------------------------------------------------

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and not yet expired; None otherwise."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        with self._lock:
            found = self._verified.get(digest)
            if found is None:
                return None
            if self._now() >= found.expires + self.leeway:
                del self._verified[digest]
                return None
            self._verified.move_to_end(digest)
            return found.principal

    def verify(self, token: str) -> Principal:
        """The principal a bearer JWT names, checked (blocking: may fetch the issuer's keys).

        Raises:
            AuthenticationError: The token is malformed, forged, expired, not yet valid, for
                another audience or issuer, signed with an algorithm not allowed or a key the
                issuer does not publish, or names no valid user.
            ServiceUnavailableError: The issuer's keys are needed and cannot be fetched.
        """
        principal = self.cached(token)
        if principal is not None:
            return principal
        try:
            compact = jws.extract_compact(token.encode("ascii"))
            header = compact.headers()
        except (JoseError, ValueError, UnicodeError, TypeError) as err:
            raise _invalid("it is not a well-formed JWT") from err
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid(f"its algorithm {alg!r} is not one of {', '.join(self.algorithms)}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _invalid("its key id (kid) is not a string")
        key = self._key(kid, alg)
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except JoseError as err:
            raise _invalid("its signature does not verify with the issuer's key") from err
        claims = decoded.claims
        self._check_claims(claims)
        roles, grants = self._roles(claims)
        principal = Principal(user=self._user(claims), roles=roles, grants=grants)
        exp = float(claims["exp"])
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        with self._lock:
            self._verified[digest] = VerifiedJWT(principal, exp)
            self._verified.move_to_end(digest)
            while len(self._verified) > self._max_cached:
                self._verified.popitem(last=False)
        return principal

    # -- claims ---------------------------------------------------------------------------

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._now()),
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as err:
            raise _invalid("it has expired") from err
        except MissingClaimError as err:
            raise _invalid(f"it lacks a required claim ({err.description})") from err
        except JoseError as err:
            what = {
                "iss": "it was issued by another issuer",
                "aud": f"it is not meant for the audience {self.audience!r}",
                "nbf": "it is not valid yet (nbf)",
                "iat": "it was issued in the future (iat)",
                "exp": "its expiry (exp) is not a time",
            }
            claim = str(getattr(err, "claim", "") or "")
            reason = next((v for k, v in what.items() if k in (claim, err.description)), None)
            raise _invalid(reason or f"a claim is invalid ({err.error})") from err

    def _user(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.user_claim)
        if value in (None, "") and self.user_claim != "sub":
            value = claims.get("sub")
        if not isinstance(value, str) or not value:
            raise _invalid(f"it names no user (claims {self.user_claim!r} and 'sub')")
        try:
            return validate_user_name(value, source=f"user name in the {self.user_claim} claim")
        except CivicMLError as err:
            raise _invalid("its user name is not a valid civicml user name") from err

    def _roles(self, claims: dict[str, Any]) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """The roles the mapped groups give on every project, and the ``(project, role)``
        pairs of mapped values written ``"project:role"``."""
        if self.roles_claim is None:
            return frozenset(), frozenset()
        value: Any = claims
        for part in self.roles_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        roles: set[str] = set()
        grants: set[tuple[str, str]] = set()
        for item in values:
            if isinstance(item, str):
                for mapped in self.role_map.get(item, ()):
                    project, sep, role = mapped.partition(":")
                    if sep:
                        grants.add((project.lower(), role))
                    else:
                        roles.add(mapped)
        return frozenset(roles), frozenset(grants)

    # -- keys -----------------------------------------------------------------------------

    def _key(self, kid: str | None, alg: str) -> Key:
        key = self._find(kid, alg)
        if key is not None:
            return key
        now = time.monotonic()
        with self._lock:
            stale = self._keys_at is None or now - self._keys_at >= self.jwks_cache_s
            recent = self._tried_at is not None and now - self._tried_at < self.refetch_s
            failed, attempts = self._failed, self._attempts
        if stale and recent and failed:
            raise _unreachable()  # do not retry an unreachable issuer on every request
        if stale or not recent:
            self._fetch(attempts)
            key = self._find(kid, alg)
            if key is not None:
                return key
        raise _invalid("the issuer publishes no key with its key id (kid) for its algorithm")

    def _find(self, kid: str | None, alg: str) -> Key | None:
        kty, crv = _KEY_FOR_ALG[alg]
        now = time.monotonic()
        with self._lock:
            if self._keys_at is None or now - self._keys_at >= self.jwks_cache_s:
                return None
            if kid is not None:
                candidates = [self._keys[kid]] if kid in self._keys else []
            else:
                candidates = [*self._unnamed, *self._keys.values()]
        fitting = [k for k in candidates if _fits(k, kty, crv, alg)]
        if kid is not None and candidates and not fitting:
            raise _invalid(f"its algorithm {alg} does not fit the issuer's key {kid!r}")
        return fitting[0] if len(fitting) == 1 else None

    def _fetch(self, seen: int) -> None:
        """Fetch the issuer's JWKS (discovering ``jwks_uri`` first when unknown), unless
        another thread made an attempt since this one read ``seen`` attempts."""
        with self._fetch_lock:
            with self._lock:
                if self._attempts != seen:
                    if self._failed:
                        raise _unreachable()
                    return  # another thread just fetched
                self._attempts += 1
                self._tried_at = time.monotonic()
            try:
                with httpx.Client(timeout=_TIMEOUT, follow_redirects=False) as http:
                    uri = self._jwks_uri
                    if uri is None:
                        config = _get_json(
                            http, f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
                        )
                        found = config.get("jwks_uri")
                        if not isinstance(found, str) or not found.startswith(
                            ("https://", "http://")
                        ):
                            raise ValueError("the discovery document names no jwks_uri")
                        if config.get("issuer") not in (None, self.issuer):
                            raise ValueError("the discovery document names another issuer")
                        uri = found
                    jwks = _get_json(http, uri)
            except (httpx.HTTPError, ValueError) as err:
                with self._lock:
                    self._jwks_uri = None  # discover again next time
                    self._failed = True
                log.warning("could not fetch the OpenID Connect issuer's keys: %s", _why(err))
                raise _unreachable() from err
            keys: dict[str, Key] = {}
            unnamed: list[Key] = []
            raw = jwks.get("keys")
            for item in raw if isinstance(raw, list) else []:
                if not isinstance(item, dict) or item.get("use") not in (None, "sig"):
                    continue
                try:
                    key = import_key(item)
                except (JoseError, ValueError, TypeError, KeyError):
                    continue  # a key this server cannot use is skipped, not fatal
                if key.is_private:
                    continue  # an issuer never publishes private keys; do not use one
                if isinstance(item.get("kid"), str):
                    keys[item["kid"]] = key
                else:
                    unnamed.append(key)
            with self._lock:
                self._keys, self._unnamed = keys, unnamed
                self._keys_at = time.monotonic()
                self._jwks_uri = uri
                self._failed = False
                self.fetches += 1


def _fits(key: Key, kty: str, crv: str | None, alg: str) -> bool:
    if key.key_type != kty:
        return False
    if crv is not None and key.get("crv") != crv:
        return False
    key_alg = key.get("alg")
    return key_alg in (None, alg)


def _get_json(http: httpx.Client, url: str) -> dict[str, Any]:
    response = http.get(url, headers={"accept": "application/json"})
    response.raise_for_status()
    if len(response.content) > _MAX_DOCUMENT:
        raise ValueError("the issuer's document is too large")
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("the issuer's document is not a JSON object")
    return document


def _why(err: Exception) -> str:
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code}"
    return type(err).__name__ if isinstance(err, httpx.HTTPError) else str(err)


def _invalid(reason: str) -> AuthenticationError:
    return AuthenticationError(f"The bearer JWT is not accepted: {reason}.", hint=_HINT)


def _unreachable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "The identity provider's signing keys could not be fetched, so a new single sign-on "
        "token cannot be verified now.",
        hint="Try again shortly; an administrator should check that the server reaches "
        "oidc_issuer. API tokens keep working.",
        retry_after=_RETRY_AFTER,
    )
