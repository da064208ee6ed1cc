"""``civicml tokens``, ``login`` and ``logout``, embedded and against a real server with auth on."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from civicml.cli.main import main
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.governance.schemas import TokenCreate
from civicml.governance.tokens import TokenService, well_formed
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from tests.server.helpers import isolated_settings, serve

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_create_prints_the_secret_once_to_stdout_and_list_never(cli: Run, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    code, out, err = cli("--home", home, "--user", "carol", "tokens", "create", "laptop")
    assert code == 0, err
    secret = out.strip()
    assert well_formed(secret) and out == secret + "\n"
    assert secret not in err and "shown once" in err
    code, out, _ = cli("--home", home, "--user", "carol", "tokens", "list", "--json")
    listed = json.loads(out)
    assert [t["name"] for t in listed] == ["laptop"] and secret not in out
    assert listed[0]["prefix"] == secret[:8] and listed[0]["status"] == "active"
    code, out, _ = cli("--home", home, "--user", "carol", "tokens", "revoke", listed[0]["id"])
    assert code == 0 and "Revoked" in out
    _, out, _ = cli("--home", home, "--user", "carol", "tokens", "list", "--json")
    assert json.loads(out)[0]["status"] == "revoked"


def test_a_service_token_needs_admin(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICML_ROLES", json.dumps({"dana": ["data-scientist"]}))
    home = str(tmp_path / "home")
    code, _, err = cli(
        "--home", home, "--user", "dana", "tokens", "create", "ci", "--service", "--owner", "ci-bot"
    )
    assert code == 2 and "Error:" in err and "Hint:" in err and "admin" in err
    code, _, err = cli("--home", home, "--user", "dana", "tokens", "create", "x", "--role", "admin")
    assert code == 2 and "at most your own roles" in err


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[str, Settings, str]]:
    settings = isolated_settings(tmp_path, auth="token")
    ctx = open_context(settings, Principal(user="ops", roles=frozenset({"admin"})))
    try:
        secret = TokenService(ctx).create(TokenCreate(name="ops")).secret
    finally:
        ctx.db.close()
    with serve(create_app(settings)) as url:
        yield url, settings, secret


def test_login_stores_the_token_0600_and_the_cli_uses_it(
    cli: Run,
    tmp_path: Path,
    auth_server: tuple[str, Settings, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, secret = auth_server
    home = tmp_path / "client-home"
    monkeypatch.setenv("CIVICML_HOME", str(home))
    # Without a token the server refuses the CLI: exit 2, one Error line.
    code, _, err = cli("--url", url, "projects", "list")
    assert code == 2 and "Authorization" in err and secret not in err
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    code, out, err = cli("--url", url, "login")
    assert code == 0, err
    assert "as ops" in out and secret not in out + err
    stored = home / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    code, out, err = cli("--url", url, "tokens", "list", "--json")
    assert code == 0, err
    assert [t["name"] for t in json.loads(out)] == ["ops"] and secret not in out
    code, out, _ = cli("--url", url, "logout")
    assert code == 0 and "Logged out" in out
    assert cli("--url", url, "projects", "list")[0] == 2


def test_the_token_option_and_variable_are_sent_never_echoed(
    cli: Run,
    tmp_path: Path,
    auth_server: tuple[str, Settings, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, secret = auth_server
    monkeypatch.setenv("CIVICML_HOME", str(tmp_path / "client-home"))
    code, out, err = cli("--url", url, "--token", secret, "projects", "list", "--json")
    assert code == 0, err
    assert secret not in out + err
    monkeypatch.setenv("CIVICML_TOKEN", secret)
    code, out, err = cli(
        "--url",
        url,
        "tokens",
        "create",
        "ci",
        "--service",
        "--owner",
        "ci-bot",
        "--role",
        "ml-engineer",
    )
    assert code == 0, err
    assert well_formed(out.strip()) and secret not in out + err
    bad = "cml_" + "Z" * 43
    code, out, err = cli("--url", url, "--token", bad, "projects", "list")
    assert code == 2 and bad not in out + err and "not known" in err


def test_a_login_with_a_wrong_token_stores_nothing(
    cli: Run,
    tmp_path: Path,
    auth_server: tuple[str, Settings, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, _ = auth_server
    home = tmp_path / "client-home"
    monkeypatch.setenv("CIVICML_HOME", str(home))
    monkeypatch.setattr("sys.stdin", io.StringIO("cml_" + "Q" * 43 + "\n"))
    code, _, err = cli("--url", url, "login")
    assert code == 2 and "Error:" in err
    assert not (home / "credentials.json").exists()


def test_the_server_refuses_a_non_loopback_address_without_auth(cli: Run, tmp_path: Path) -> None:
    code, _, err = cli("--home", str(tmp_path / "home"), "server", "--host", "0.0.0.0")  # noqa: S104
    assert code == 2
    assert "without authentication" in err and "Hint:" in err and 'auth = "token"' in err
