"""``civicml login --oidc``: the OAuth 2.0 device grant against a real issuer made in the test
(tests/server/oidc_issuer.py) and a real civicml server with auth = "token" and single sign-on."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from civicml.cli.main import main
from civicml.server import create_app
from tests.server.helpers import isolated_settings, serve
from tests.server.oidc_issuer import AUDIENCE, Device, Issuer, oidc_settings, running_issuer

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as found:
        yield found


@pytest.fixture(scope="module")
def server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = oidc_settings(tmp_path_factory.mktemp("sso"), issuer, oidc_scopes=["profile"])
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits between polls, recorded instead of slept."""
    found: list[float] = []
    monkeypatch.setattr("civicml.sdk.sso._SLEEP", found.append)
    return found


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    found = tmp_path / "client-home"
    monkeypatch.setenv("CIVICML_HOME", str(found))
    monkeypatch.delenv("CIVICML_TOKEN", raising=False)
    return found


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _session(home: Path, url: str) -> dict[str, object]:
    stored = json.loads((home / "credentials.json").read_text(encoding="utf-8"))
    entry: dict[str, object] = stored["servers"][url.lower()]
    return entry


def test_device_login_end_to_end_then_the_cli_uses_the_session(
    cli: Run,
    issuer: Issuer,
    server: str,
    home: Path,
    waits: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer.device = Device(pending_polls=3, slow_down_at=frozenset({2}))
    code, out, err = cli("--url", server, "login", "--oidc")
    assert code == 0, err
    # pending, slow_down (+5 s from then on), pending, approved
    assert waits == [1, 1, 6, 6]
    assert "WDJB-MJHT" in err and f"{issuer.url}/device/verify" in err
    assert "WDJB-MJHT" not in out and "as rosa (reviewer)" in out
    assert issuer.device_requests[-1] == {"client_id": AUDIENCE, "scope": "openid profile"}
    path = home / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entry = _session(home, server)
    assert entry["kind"] == "oidc" and entry["access_token"] in issuer.issued

    code, out, err = cli("--url", server, "projects", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    for secret in issuer.issued:
        assert secret not in out + err + caplog.text

    code, out, _ = cli("--url", server, "logout")
    assert code == 0 and "Logged out" in out
    assert cli("--url", server, "projects", "list")[0] == 2


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("deny", "The sign-in was denied at the identity provider; nothing was stored."),
        ("expire", "The sign-in code expired before it was approved; nothing was stored."),
    ],
)
def test_a_denied_or_expired_login_is_exit_2_and_stores_nothing(
    cli: Run,
    issuer: Issuer,
    server: str,
    home: Path,
    waits: list[float],
    outcome: str,
    message: str,
) -> None:
    issuer.device = Device(outcome=outcome, pending_polls=1)
    code, _, err = cli("--url", server, "login", "--oidc")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert lines == [f"Error: {message}"]
    assert "Hint: Log in again: civicml login --url URL --oidc" in err
    assert not (home / "credentials.json").exists()
    assert waits == [1, 1]


def test_an_expired_session_is_refreshed_before_the_request(
    cli: Run, issuer: Issuer, server: str, home: Path, waits: list[float]
) -> None:
    issuer.device = Device()
    assert cli("--url", server, "login", "--oidc")[0] == 0
    first = _session(home, server)
    stored = json.loads((home / "credentials.json").read_text(encoding="utf-8"))
    stored["servers"][server.lower()]["expires_at"] = 0  # the access token has expired
    (home / "credentials.json").write_text(json.dumps(stored), encoding="utf-8")
    refreshes = issuer.refreshes

    code, _, err = cli("--url", server, "projects", "list", "--json")
    assert code == 0, err
    assert issuer.refreshes == refreshes + 1
    second = _session(home, server)
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]  # rotated by the issuer
    assert float(str(second["expires_at"])) > 0
    assert stat.S_IMODE((home / "credentials.json").stat().st_mode) == 0o600
    assert cli("--url", server, "projects", "list")[0] == 0
    assert issuer.refreshes == refreshes + 1  # still valid: no second refresh


def test_an_expired_session_without_a_refresh_token_says_log_in_again(
    cli: Run, issuer: Issuer, server: str, home: Path, waits: list[float]
) -> None:
    issuer.device = Device(refresh=False)
    assert cli("--url", server, "login", "--oidc")[0] == 0
    stored = json.loads((home / "credentials.json").read_text(encoding="utf-8"))
    assert "refresh_token" not in stored["servers"][server.lower()]
    stored["servers"][server.lower()]["expires_at"] = 0
    (home / "credentials.json").write_text(json.dumps(stored), encoding="utf-8")
    code, _, err = cli("--url", server, "projects", "list")
    assert code == 2
    assert f"Error: The single sign-on session for {server} has expired." in err
    assert "civicml login --url URL --oidc" in err


def test_a_server_without_single_sign_on_answers_404_and_login_says_so(
    cli: Run, tmp_path: Path, home: Path
) -> None:
    (tmp_path / "server").mkdir()
    settings = isolated_settings(tmp_path / "server", auth="token")
    with serve(create_app(settings)) as url:
        response = httpx.get(f"{url}/api/v1/auth/oidc", timeout=30)
        assert response.status_code == 404 and response.json()["error"] == "NotFoundError"
        code, _, err = cli("--url", url, "login", "--oidc")
    assert code == 2 and "has no single sign-on" in err
    assert not (home / "credentials.json").exists()


def test_the_public_oidc_route_names_issuer_and_client(issuer: Issuer, server: str) -> None:
    response = httpx.get(f"{server}/api/v1/auth/oidc", timeout=30)  # no token: public
    assert response.status_code == 200, response.text
    assert response.json() == {
        "issuer": issuer.url,
        "client_id": AUDIENCE,
        "audience": AUDIENCE,
        "scopes": ["profile"],
    }
