"""Helpers shared by the REST API, remote SDK and end-to-end tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from civicml.core import Settings

API = "/api/v1"
ERROR_KEYS = {"ok", "status", "error", "message", "hint", "details"}
OCTET = {"content-type": "application/octet-stream"}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
# What a leaked traceback or internal error would contain.
_LEAK_MARKERS = ("Traceback", 'File "', "sqlalchemy.", "site-packages")


def assert_error(
    response: httpx.Response | RawResponse, status: int, error: str, message: str | None = None
) -> dict[str, Any]:
    """Check one error body: exact keys, status, class name, message substring, no traceback."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["ok"] is False
    assert body["status"] == status
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"]
    assert body["hint"] is None or isinstance(body["hint"], str)
    assert isinstance(body["details"], list)
    if message is not None:
        assert message in body["message"], body["message"]
    for marker in _LEAK_MARKERS:
        assert marker not in response.text, response.text
    return body  # type: ignore[no-any-return]


@dataclass
class RawResponse:
    """A response read with http.client (so the request path is sent exactly as written)."""

    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def raw_request(
    base_url: str,
    method: str,
    raw_path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send ``raw_path`` byte for byte: httpx would remove '..' and '.' segments first."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, raw_path, body=body, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
    finally:
        conn.close()


@dataclass(frozen=True)
class Server:
    url: str
    settings: Settings


def isolated_settings(root: Path, **overrides: Any) -> Settings:
    """Settings on ``root/home``, untouched by the developer's CIVICML_* variables or
    civicml.toml (module-scoped fixtures run before the per-test isolation fixture)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CIVICML_")]:
            mp.delenv(key)
        mp.chdir(root)
        return Settings.load(home=root / "home", **overrides)


@contextlib.contextmanager
def serve(app: Any, *, http: str = "auto", ca_bundle: Path | None = None) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread, on the transport ``civicml server`` uses
    (head and keep-alive timeouts, connection limit; HTTPS when the app's settings name a TLS
    certificate and key, the test then trusting ``ca_bundle``) when the app is civicml's."""
    with serve_server(app, http=http, ca_bundle=ca_bundle) as (url, _):
        yield url


@contextlib.contextmanager
def serve_server(
    app: Any, *, http: str = "auto", ca_bundle: Path | None = None
) -> Iterator[tuple[str, Any]]:
    """:func:`serve`, also yielding the ``uvicorn.Server`` (its connections' transports)."""
    import ssl
    import time

    import uvicorn

    from civicml.server.transport import server_config
    from tests.conftest import free_port, wait_healthy

    port = free_port()
    settings = getattr(app.state, "settings", None)
    tls = isinstance(settings, Settings) and settings.server_tls_cert is not None
    if isinstance(settings, Settings):
        config = server_config(
            app, settings, host="127.0.0.1", port=port, log_level="critical", http=http
        )
    else:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="critical", access_log=False
        )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        if tls:
            assert ca_bundle is not None, "a TLS server needs the CA bundle that trusts it"
            trust = ssl.create_default_context(cafile=str(ca_bundle))
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            assert httpx.get(f"{url}/api/v1/health", verify=trust, timeout=10).status_code == 200
        else:
            wait_healthy(url)
        yield url, server
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def files_under(root: Path, *, skip_db: bool = True) -> set[str]:
    """Every file below ``root`` (relative paths); the SQLite files change on reads, and the
    audit witness's temporary file comes and goes as the server signs earlier commits (within
    audit_witness_interval_ms): skip them."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and not (skip_db and p.name.startswith("civicml.db"))
        and not (p.parent.name == "audit" and p.name.startswith(".witness.json."))
    }


def audit_count(api: httpx.Client) -> int:
    response = api.get(f"{API}/audit/events", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    return len(response.json())


def create_run(api: httpx.Client, project: str, **body: Any) -> dict[str, Any]:
    response = api.post(f"{API}/projects/{project}/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def upload(api: httpx.Client, run_id: str, path: str, data: bytes) -> httpx.Response:
    return api.put(f"{API}/runs/{run_id}/artifacts/{path}", content=data, headers=OCTET)


def model_run(
    api: httpx.Client, project: str, *, auc: float = 0.9, model: bytes = b"weights"
) -> dict[str, Any]:
    """A finished run with a metric and a 'model/' artifact, ready to register."""
    run = create_run(api, project, params={"lr": "0.1"})
    logged = api.post(
        f"{API}/runs/{run['id']}/metrics", json={"metrics": [{"key": "auc", "value": auc}]}
    )
    assert logged.status_code == 200, logged.text
    assert upload(api, run["id"], "model/model.bin", model).status_code == 201
    assert upload(api, run["id"], "model/meta.json", b'{"k": 1}').status_code == 201
    ended = api.post(f"{API}/runs/{run['id']}/end", json={})
    assert ended.status_code == 200, ended.text
    return ended.json()  # type: ignore[no-any-return]


def register(
    api: httpx.Client, project: str, name: str, run_id: str, **extra: Any
) -> dict[str, Any]:
    response = api.post(
        f"{API}/projects/{project}/models/{name}/versions", json={"run_id": run_id, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
