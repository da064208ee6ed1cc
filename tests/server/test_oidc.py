"""Single sign-on through the real server: bearer JWTs from a real OpenID Connect issuer made in
the test (keys generated here, discovery document and JWKS served on a loopback port), verified
by civicml's server with auth = "token" besides API tokens."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from civicml.core.errors import AuthenticationError, ConfigurationError, ServiceUnavailableError
from civicml.core.settings import Settings
from civicml.governance.schemas import TokenCreate
from civicml.server import create_app
from civicml.server.oidc import OIDCVerifier, looks_like_jwt
from tests.server.helpers import assert_error, serve
from tests.server.oidc_issuer import AUDIENCE, Issuer, oidc_settings, running_issuer
from tests.server.test_auth import bearer, mint


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as found:
        yield found


@pytest.fixture(scope="module")
def served(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    settings = oidc_settings(tmp_path_factory.mktemp("oidc"), issuer)
    with serve(create_app(settings)) as url:
        yield url, settings


@pytest.fixture(scope="module")
def civicml(served: tuple[str, Any]) -> str:
    return served[0]


@pytest.fixture
def client(civicml: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=civicml, timeout=30) as http:
        yield http


def whoami(client: httpx.Client, token: str) -> httpx.Response:
    return client.get("/api/v1/whoami", headers=bearer(token))


def test_a_valid_jwt_acts_as_its_user_in_the_mapped_roles(
    client: httpx.Client, issuer: Issuer
) -> None:
    token = issuer.token()
    response = whoami(client, token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["user"], body["roles"], body["token"]) == ("rosa", ["reviewer"], None)
    hits = issuer.jwks_hits
    assert whoami(client, token).status_code == 200  # cached: no second fetch of the keys
    assert issuer.jwks_hits == hits


def test_an_ec_signed_jwt_and_a_role_from_a_nested_claim(
    client: httpx.Client, issuer: Issuer
) -> None:
    token = issuer.token(
        "ec-1",
        "ES256",
        preferred_username=None,  # falls back to sub
        sub="dana@example.org",
        realm_access={"roles": ["data-science", "unknown-group"]},
    )
    response = whoami(client, token)
    assert response.status_code == 200, response.text
    assert response.json()["user"] == "dana@example.org"
    assert response.json()["roles"] == ["data-scientist", "viewer"]


def test_a_user_in_no_mapped_group_has_no_role(client: httpx.Client, issuer: Issuer) -> None:
    token = issuer.token(preferred_username="eve", realm_access={"roles": ["admins-elsewhere"]})
    response = whoami(client, token)
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == []


def test_a_group_mapped_to_project_role_opens_that_project_only(
    client: httpx.Client, issuer: Issuer, served: tuple[str, Any]
) -> None:
    ops = bearer(mint(served[1], TokenCreate(name="ops")).secret)  # a platform admin's token
    for name in ("benefits", "housing"):
        made = client.put(f"/api/v1/projects/{name}", headers=ops)
        assert made.status_code == 200, made.text
    token = issuer.token(preferred_username="ana", realm_access={"roles": ["benefits-analysts"]})
    ana = bearer(token)

    assert whoami(client, token).json()["roles"] == []  # nothing on every project
    listed = client.get("/api/v1/projects", headers=ana)
    assert [p["name"] for p in listed.json()] == ["benefits"]
    made = client.post("/api/v1/projects/benefits/experiments", json={"name": "e1"}, headers=ana)
    assert made.status_code == 201, made.text
    assert_error(
        client.get("/api/v1/projects/housing", headers=ana), 404, "NotFoundError", "does not exist"
    )
    refused = client.post(
        "/api/v1/projects/benefits/endpoints",
        headers=ana,
        json={"name": "x", "model": "m", "version": 1},
    )
    assert_error(refused, 403, "PermissionDeniedError", "endpoints.write")


def _bad_tokens(issuer: Issuer) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    rsa = issuer.keys["rsa-1"]
    public_pem = rsa.as_pem(private=False)
    claims = {"iss": issuer.url, "aud": AUDIENCE, "preferred_username": "rosa", "exp": now + 300}
    hs_head = _unsigned({"alg": "HS256", "kid": "rsa-1"}, claims)
    hs_sig = hmac.new(public_pem, hs_head.encode(), hashlib.sha256).digest()
    return {
        "forged signature": (
            issuer.token(key=RSAKey.generate_key(2048)),
            "signature does not verify",
        ),
        "expired": (issuer.token(iat=now - 900, nbf=now - 900, exp=now - 600), "has expired"),
        "not yet valid": (issuer.token(nbf=now + 600, exp=now + 900), "not valid yet"),
        "issued in the future": (issuer.token(iat=now + 600), "issued in the future"),
        "wrong audience": (issuer.token(aud="another-app"), "not meant for the audience"),
        "wrong issuer": (issuer.token(iss=issuer.url + "-evil"), "another issuer"),
        "no expiry": (issuer.token(exp=None), "Missing claim: 'exp'"),
        "alg none": (
            _unsigned({"alg": "none", "kid": "rsa-1"}, claims) + ".",
            "algorithm 'none' is not one of",
        ),
        "HS256 with the public key": (
            f"{hs_head}.{_b64(hs_sig)}",
            "algorithm 'HS256' is not one of",
        ),
        "ES256 claimed for an RSA key": (
            issuer.token("rsa-1", "ES256", key=issuer.keys["ec-1"]),
            "does not fit the issuer's key",
        ),
        "unknown kid": (issuer.token("nobody", key=issuer.keys["rsa-1"]), "no key with its key id"),
        "invalid user name": (
            issuer.token(preferred_username="ro\u202esa"),
            "not a valid civicml user name",
        ),
        "garbage": ("eyJhbGciOiJSUzI1NiJ9.not-json.sig", "signature does not verify"),
    }


def test_bad_jwts_are_401_invalid_token(
    client: httpx.Client, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for case, (token, reason) in _bad_tokens(issuer).items():
        assert looks_like_jwt(token), case
        response = whoami(client, token)
        assert_error(response, 401, "AuthenticationError", reason)
        assert response.headers["www-authenticate"] == (
            'Bearer realm="civicml", error="invalid_token"'
        ), case
        assert token not in response.text, case
        assert token not in caplog.text, case


def test_a_rotated_key_is_fetched_once_for_its_new_kid(
    client: httpx.Client, issuer: Issuer
) -> None:
    issuer.add("rsa-2", RSAKey.generate_key(2048), publish=False)
    token = issuer.token("rsa-2")
    assert_error(whoami(client, token), 401, "AuthenticationError", "key id")  # not yet published
    issuer.published = ["rsa-2", "ec-1"]  # the issuer rotates: rsa-1 retired
    response = whoami(client, token)
    assert response.status_code == 200, response.text
    assert response.json()["user"] == "rosa"


def test_unknown_kids_do_not_hammer_the_issuer(issuer: Issuer, tmp_path: Path) -> None:
    settings = oidc_settings(tmp_path, issuer, oidc_jwks_refetch_s=3600)
    verifier = OIDCVerifier(settings)
    hits = issuer.jwks_hits
    assert verifier.verify(issuer.token("ec-1", "ES256")).user == "rosa"
    for n in range(5):
        with pytest.raises(AuthenticationError, match="key id"):
            verifier.verify(issuer.token(f"forged-{n}", key=issuer.keys["ec-1"], alg="ES256"))
    # The keys were fetched less than oidc_jwks_refetch_s ago: unknown kids fetch nothing.
    assert (verifier.fetches, issuer.jwks_hits - hits) == (1, 1)


def test_a_public_key_is_never_an_hmac_secret_even_past_the_settings(
    issuer: Issuer, tmp_path: Path
) -> None:
    settings = oidc_settings(tmp_path, issuer)
    unchecked = settings.model_copy(update={"oidc_algorithms": ["HS256", "none", "RS256"]})
    verifier = OIDCVerifier(unchecked)
    assert verifier.algorithms == ("RS256",)
    for case in ("alg none", "HS256 with the public key"):
        with pytest.raises(AuthenticationError, match="is not one of RS256"):
            verifier.verify(_bad_tokens(issuer)[case][0])


def test_settings_refuse_none_hmac_and_plain_http_issuers(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'none' is not an allowed"):
        Settings.load(home=tmp_path, oidc_algorithms=["RS256", "none"])
    with pytest.raises(ConfigurationError, match="'HS256' is not an allowed"):
        Settings.load(home=tmp_path, oidc_algorithms=["HS256"])
    with pytest.raises(ConfigurationError, match="must be an https:// URL"):
        Settings.load(
            home=tmp_path, oidc_issuer="http://idp.example.org/realms/x", oidc_audience="a"
        )
    with pytest.raises(ConfigurationError, match="oidc_audience is not"):
        Settings.load(home=tmp_path, oidc_issuer="https://idp.example.org/realms/x")


def test_an_unreachable_issuer_is_503_while_api_tokens_keep_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with contextlib.ExitStack() as stack:
        issuer_stack = stack.enter_context(contextlib.ExitStack())
        issuer = issuer_stack.enter_context(running_issuer())
        settings = oidc_settings(tmp_path, issuer)
        api_token = mint(settings, TokenCreate(name="ci")).secret
        url = stack.enter_context(serve(create_app(settings)))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        known = issuer.token()
        assert whoami(http, known).status_code == 200
        issuer.add("rsa-3", RSAKey.generate_key(2048))
        fresh = issuer.token("rsa-3", preferred_username="kim")
        issuer_stack.close()  # the identity provider goes down

        response = whoami(http, fresh)
        assert_error(response, 503, "ServiceUnavailableError", "signing keys")
        assert int(response.headers["retry-after"]) >= 1
        assert fresh not in caplog.text
        api = whoami(http, api_token)
        assert api.status_code == 200, api.text
        assert api.json()["user"] == "root-admin"
        assert whoami(http, known).status_code == 200  # verified before: cached until exp


def test_the_verifier_says_503_not_500_when_discovery_fails(tmp_path: Path) -> None:
    with running_issuer() as issuer:
        settings = oidc_settings(tmp_path, issuer, oidc_issuer=issuer.url + "/missing")
        verifier = OIDCVerifier(settings)
        token = issuer.token(iss=settings.oidc_issuer)
        with pytest.raises(ServiceUnavailableError, match="signing keys"):
            verifier.verify(token)


def test_failed_jwts_count_towards_the_failure_limit(issuer: Issuer, tmp_path: Path) -> None:
    settings = oidc_settings(tmp_path, issuer, auth_max_failures=2)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        bad = issuer.token(aud="elsewhere")
        for _ in range(2):
            assert whoami(http, bad).status_code == 401
        response = whoami(http, bad)
        assert_error(response, 429, "TooManyRequestsError")
        assert "retry-after" in response.headers


def test_the_documented_settings_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Keycloak and Entra ID examples of docs/security.md are settings civicml accepts."""
    text = (Path(__file__).parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    section = text[text.index("### Single sign-on") :]
    blocks = [b.split("```", 1)[0] for b in section.split("```toml\n")[1:3]]
    loaded = []
    for n, block in enumerate(blocks):
        config = tmp_path / f"civicml-{n}.toml"
        config.write_text(block, encoding="utf-8")
        monkeypatch.setenv("CIVICML_CONFIG", str(config))
        loaded.append(Settings.load(home=tmp_path / "home"))
    keycloak, entra = loaded
    assert keycloak.oidc_roles_claim == "realm_access.roles"
    assert keycloak.oidc_role_map["ml-reviewers"] == ["reviewer"]
    assert entra.oidc_role_map["CivicML.Reviewer"] == ["reviewer"]
    assert entra.oidc_algorithms == ["RS256", "ES256", "PS256"]
