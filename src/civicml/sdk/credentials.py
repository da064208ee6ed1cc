"""The credentials file that ``civicml login`` writes and the CLI and SDK read.

``$CIVICML_HOME/credentials.json`` (default ``~/.civicml/credentials.json``), mode 0600 in a
directory of mode 0700, holds one API token per server URL, so that a token is only ever sent to
the server it was made for::

    {"servers": {"https://ml.agency.example": {"token": "cml_..."}}}

``civicml login --oidc`` stores a single sign-on session instead: the access token (a JWT),
its expiry, and the refresh token and token endpoint when the identity provider gave one::

    {"servers": {"https://ml.agency.example": {"kind": "oidc", "access_token": "eyJ...",
      "expires_at": 1767225600.0, "refresh_token": "...", "token_endpoint": "https://...",
      "client_id": "civicml", "issuer": "https://sso.example.gov/realms/civic"}}}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from civicml.core.errors import ConfigurationError

__all__ = [
    "credentials_path",
    "forget_token",
    "save_oidc",
    "save_token",
    "stored_oidc",
    "stored_token",
]


def credentials_path(home: Path | None = None) -> Path:
    """Where the credentials file is (``home`` defaults to ``CIVICML_HOME`` or ``~/.civicml``)."""
    root = home or Path(os.environ.get("CIVICML_HOME") or Path.home() / ".civicml")
    return Path(root).expanduser() / "credentials.json"


def _key(url: str) -> str:
    return url.strip().rstrip("/").lower()


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"servers": {}}
    except (OSError, ValueError) as err:
        raise ConfigurationError(
            f"The credentials file {path} cannot be read ({type(err).__name__}).",
            hint="Remove it and log in again: civicml login --url URL",
        ) from err
    if not isinstance(value, dict) or not isinstance(value.get("servers"), dict):
        return {"servers": {}}
    return value


def stored_token(url: str, home: Path | None = None) -> str | None:
    """The token ``civicml login`` stored for the server ``url``, if any."""
    entry = _read(credentials_path(home))["servers"].get(_key(url))
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def stored_oidc(url: str, home: Path | None = None) -> dict[str, Any] | None:
    """The single sign-on session ``civicml login --oidc`` stored for ``url``, if any."""
    entry = _read(credentials_path(home))["servers"].get(_key(url))
    if not isinstance(entry, dict) or entry.get("kind") != "oidc":
        return None
    if not isinstance(entry.get("access_token"), str) or not entry["access_token"]:
        return None
    return entry


def save_oidc(url: str, session: dict[str, Any], home: Path | None = None) -> Path:
    """Store a single sign-on session (access token, expiry, refresh token) for ``url``
    (file mode 0600); returns the file's path."""
    path = credentials_path(home)
    value = _read(path)
    value["servers"][_key(url)] = {**session, "kind": "oidc"}
    _write(path, value)
    return path


def _write(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(value, out, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)


def save_token(url: str, token: str, home: Path | None = None) -> Path:
    """Store ``token`` for ``url`` (file mode 0600); returns the file's path."""
    path = credentials_path(home)
    value = _read(path)
    value["servers"][_key(url)] = {"token": token}
    _write(path, value)
    return path


def forget_token(url: str, home: Path | None = None) -> bool:
    """Remove the token or single sign-on session stored for ``url``; whether there was one."""
    path = credentials_path(home)
    value = _read(path)
    if value["servers"].pop(_key(url), None) is None:
        return False
    _write(path, value)
    return True
