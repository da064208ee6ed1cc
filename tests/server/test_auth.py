"""Authentication through the real server (setting auth = "token"): every route but health
refuses a request without a valid API token, the invocations lane included."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.core.clock import FrozenClock
from civicml.core.errors import ConfigurationError
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.governance.schemas import TokenCreate, TokenCreated
from civicml.governance.tokens import TokenService
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from civicml.server.app import UPLOAD_PATHS, serve
from civicml.server.auth import PUBLIC_PATHS, check_bind, is_loopback
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

ADMIN = Principal(user="root-admin", roles=frozenset({"admin"}))


def mint(
    settings: Settings, request: TokenCreate, *, principal: Principal = ADMIN, clock: Any = None
) -> TokenCreated:
    """Create a token on the server's own home (the bootstrap: embedded, as its OS user)."""
    ctx = open_context(settings, principal)
    if clock is not None:
        from dataclasses import replace

        ctx = replace(ctx, clock=clock)
    try:
        return TokenService(ctx).create(request)
    finally:
        ctx.db.close()


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("auth"), auth="token", auth_max_failures=1_000_000
    )
    with serve_app(create_app(settings)) as url:
        yield url, settings


@pytest.fixture(scope="module")
def admin(auth_server: tuple[str, Settings]) -> str:
    return mint(auth_server[1], TokenCreate(name="admin")).secret


@pytest.fixture
def client(auth_server: tuple[str, Settings]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server[0], timeout=30) as http:
        yield http


def _walk(settings: Settings) -> list[tuple[str, str]]:
    spec = create_app(settings).openapi()
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in spec["paths"].items()
        for method in operations
        if path not in PUBLIC_PATHS  # health, /api/v1/auth/oidc: public by design
    ]
    # The invocations lane answers these without FastAPI's routing: both paths.
    routes += [
        ("POST", "/endpoints/x/invocations"),
        ("POST", f"{API}/projects/x/endpoints/x/invocations"),
    ]
    return routes


def _send(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    upload = any(re.fullmatch(p, path) for p in UPLOAD_PATHS)
    kind = "application/octet-stream" if upload else "application/json"
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return client.request(
            method, path, content=b"{}", headers={"content-type": kind, **headers}
        )
    return client.request(method, path, headers=headers)


def test_every_route_refuses_a_request_without_a_token(
    auth_server: tuple[str, Settings], client: httpx.Client
) -> None:
    routes = _walk(auth_server[1])
    assert len(routes) > 50
    for method, path in routes:
        for headers in (
            {},
            bearer("cml_" + "A" * 43),
            {"authorization": "Basic YWRtaW46cGFzc3dvcmQxMjM0"},
        ):
            response = _send(client, method, path, headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert_error(response, 401, "AuthenticationError")


def test_health_stays_open(client: httpx.Client) -> None:
    assert client.get(f"{API}/health").json()["status"] == "ok"


def test_a_valid_token_works_and_names_its_owner(client: httpx.Client, admin: str) -> None:
    me = client.get(f"{API}/whoami", headers=bearer(admin))
    assert me.status_code == 200, me.text
    assert me.json()["user"] == "root-admin" and me.json()["roles"] == ["admin"]
    assert me.json()["auth"] == "token" and me.json()["token"]["prefix"] == admin[:8]
    created = client.post(f"{API}/projects", json={"name": "auth-p"}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == "root-admin"


def test_the_user_header_no_longer_impersonates_anyone(
    auth_server: tuple[str, Settings], client: httpx.Client
) -> None:
    scientist = mint(
        auth_server[1],
        TokenCreate(name="ds", roles=["data-scientist"]),
        principal=Principal(user="dana", roles=frozenset({"data-scientist"})),
    ).secret
    alone = client.get(f"{API}/whoami", headers={"x-civicml-user": "risk-officer"})
    assert_error(alone, 401, "AuthenticationError")
    both = client.get(
        f"{API}/whoami", headers={"x-civicml-user": "risk-officer", **bearer(scientist)}
    )
    assert both.json()["user"] == "dana" and both.json()["roles"] == ["data-scientist"]


def test_a_revoked_token_is_refused_on_the_next_request(client: httpx.Client, admin: str) -> None:
    made = client.post(f"{API}/tokens", json={"name": "short"}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    secret, token_id = made.json()["secret"], made.json()["token"]["id"]
    assert client.get(f"{API}/projects", headers=bearer(secret)).status_code == 200
    revoked = client.delete(f"{API}/tokens/{token_id}", headers=bearer(secret))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    body = assert_error(
        client.get(f"{API}/projects", headers=bearer(secret)), 401, "AuthenticationError"
    )
    assert "revoked" in body["message"] and secret not in json.dumps(body)


def test_an_expired_token_is_refused(
    auth_server: tuple[str, Settings], client: httpx.Client
) -> None:
    old = mint(
        auth_server[1],
        TokenCreate(name="old", expires_in_days=1),
        clock=FrozenClock(datetime(2020, 1, 1, tzinfo=UTC)),
    ).secret
    body = assert_error(
        client.get(f"{API}/projects", headers=bearer(old)), 401, "AuthenticationError"
    )
    assert "expired" in body["message"]


def test_an_endpoint_token_may_only_invoke_its_endpoint(
    auth_server: tuple[str, Settings], client: httpx.Client, admin: str
) -> None:
    caller = mint(
        auth_server[1],
        TokenCreate(name="caller", kind="service", owner="benefits-portal", endpoint="auth-p/elig"),
    ).secret
    for method, path in [
        ("GET", f"{API}/projects"),
        ("GET", f"{API}/whoami"),
        ("POST", f"{API}/tokens"),
        ("POST", "/endpoints/other/invocations?project=auth-p"),
        ("POST", f"{API}/projects/auth-p/endpoints/other/invocations"),
        ("POST", "/endpoints/elig/invocations"),  # project 'default'
    ]:
        assert_error(_send(client, method, path, bearer(caller)), 403, "PermissionDeniedError")
    # Its own endpoint passes authentication (it does not exist: 404 from the lane, not 401/403).
    for path in (
        "/endpoints/elig/invocations?project=auth-p",
        f"{API}/projects/auth-p/endpoints/elig/invocations",
    ):
        response = client.post(path, json=[{"x": 1}], headers=bearer(caller))
        assert response.status_code == 404, response.text


def test_a_project_scoped_token_does_not_reach_other_projects(
    auth_server: tuple[str, Settings], client: httpx.Client, admin: str
) -> None:
    scoped = mint(auth_server[1], TokenCreate(name="one", projects=["auth-p"])).secret
    client.post(f"{API}/projects", json={"name": "auth-q"}, headers=bearer(admin))
    assert client.get(f"{API}/projects/auth-p", headers=bearer(scoped)).status_code in (200, 404)
    assert_error(
        client.get(f"{API}/projects/auth-q/models", headers=bearer(scoped)),
        403,
        "PermissionDeniedError",
    )


def test_secrets_stay_out_of_logs_errors_and_audit(
    auth_server: tuple[str, Settings],
    client: httpx.Client,
    admin: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    made = client.post(f"{API}/tokens", json={"name": "logged"}, headers=bearer(admin)).json()
    secret = made["secret"]
    client.get(f"{API}/projects", headers=bearer(secret))
    client.delete(f"{API}/tokens/{made['token']['id']}", headers=bearer(admin))
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    refused = client.get(f"{API}/projects", headers=bearer(wrong))
    assert refused.status_code == 401 and wrong not in refused.text
    events = client.get(f"{API}/audit/events", params={"limit": 10_000}, headers=bearer(admin))
    text = events.text
    actions = {e["action"] for e in events.json()}
    assert {"token.created", "token.revoked", "auth.failed"} <= actions
    listed = client.get(f"{API}/tokens", params={"all": "true"}, headers=bearer(admin)).text
    from civicml.governance.tokens import hash_secret

    for value in (secret, wrong, admin, hash_secret(secret), hash_secret(admin)):
        assert value not in caplog.text
        assert value not in text
        assert value not in listed
    assert "authorization" not in caplog.text.lower()


def test_failed_authentication_is_rate_limited_and_audited_in_bounds(tmp_path: Path) -> None:
    settings = isolated_settings(
        tmp_path, auth="token", auth_max_failures=3, auth_failure_window_s=600
    )
    admin = mint(settings, TokenCreate(name="admin")).secret
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(3):
            assert http.get(f"{API}/projects", headers=bearer("cml_" + "B" * 43)).status_code == 401
        for _ in range(20):
            limited = http.get(f"{API}/projects", headers=bearer("cml_" + "C" * 43))
            assert_error(limited, 429, "TooManyRequestsError")
            assert 1 <= int(limited.headers["retry-after"]) <= 601
        # A token this server already verified still passes; the audit holds two failures.
        ctx = open_context(settings, ADMIN)
        try:
            from civicml.governance.audit import AuditTrail

            failed = AuditTrail(ctx).list(action="auth.failed", limit=1000)
        finally:
            ctx.db.close()
        assert [(e.after or {})["failures"] for e in failed] == [1, 3]
        assert all(e.actor == "anonymous" and e.entity_id == "127.0.0.1" for e in failed)
        del admin


ANY = "0.0.0.0"  # noqa: S104 (what the test refuses)


def test_a_non_loopback_bind_needs_token_auth(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback(ANY) and not is_loopback("192.168.1.20")
    none = isolated_settings(tmp_path)
    for host in (ANY, "192.168.1.20", "::", "example.org"):
        with pytest.raises(ConfigurationError, match="without authentication"):
            check_bind(host, none)
        with pytest.raises(ConfigurationError, match="without authentication"):
            serve(none, host=host, port=1)
    check_bind(ANY, isolated_settings(tmp_path, auth="token"))
    check_bind("127.0.0.1", none)


def test_the_remote_sdk_sends_its_token_and_manages_tokens(
    auth_server: tuple[str, Settings], admin: str, tmp_path: Path
) -> None:
    import civicml as cm
    from civicml.core.errors import AuthenticationError

    settings = Settings.load(home=tmp_path / "client")
    assert "cml_" not in repr(Settings.load(home=tmp_path, token=admin))  # shown as ********
    with cm.connect(auth_server[0], settings=settings) as anonymous:
        with pytest.raises(AuthenticationError, match="no Authorization header"):
            anonymous.projects()
    with cm.connect(auth_server[0], settings=settings, token=admin) as ml:
        assert ml.tokens.whoami().user == "root-admin"
        made = ml.tokens.create("sdk", kind="service", owner="ci-bot", roles=["ml-engineer"])
        assert made.token.owner == "ci-bot" and made.secret.startswith("cml_")
        assert "sdk" in {t.name for t in ml.tokens.list(all=True)}
        with cm.connect(auth_server[0], settings=settings, token=made.secret) as ci:
            assert ci.tokens.whoami().roles == ["ml-engineer"]
            assert ml.tokens.revoke(made.token.id).status == "revoked"
            with pytest.raises(AuthenticationError, match="revoked"):
                ci.tokens.whoami()


@pytest.mark.parametrize("days", ["30", True, 30.0, 2**63])
def test_token_expiry_is_a_strict_whole_number(
    client: httpx.Client, admin: str, days: object
) -> None:
    """``"30"`` or ``true`` for a number is refused, not converted (issue 8's strict numbers)."""
    response = client.post(
        "/api/v1/tokens", json={"name": "strict", "expires_in_days": days}, headers=bearer(admin)
    )
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["loc"] == ["body", "expires_in_days"]
