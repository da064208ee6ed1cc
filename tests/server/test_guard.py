"""The request guard: Host allowlist, JSON-only bodies, security headers (server/guard.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.server.helpers import (
    API,
    OCTET,
    SECURITY_HEADERS,
    Server,
    assert_error,
    audit_count,
    create_run,
    upload,
)


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io:80", ""],
)
def test_an_unknown_host_is_refused_with_the_error_body(api: httpx.Client, host: str) -> None:
    response = api.get(f"{API}/projects", headers={"host": host})

    assert_error(response, 400, "BadRequestError", f"Host {host!r} is not allowed.")
    assert "CIVICML_SERVER_ALLOWED_HOSTS" in response.json()["hint"]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "127.0.0.1"]
)
def test_loopback_hosts_are_answered(api: httpx.Client, server: Server, host: str) -> None:
    response = api.get(f"{API}/health", headers={"host": host.format(port=_port(server.url))})

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_a_refused_host_never_reaches_the_app(api: httpx.Client) -> None:
    before = api.get(f"{API}/projects").json()

    response = api.post(
        f"{API}/projects", json={"name": "rebound"}, headers={"host": "attacker.example"}
    )

    assert response.status_code == 400
    assert api.get(f"{API}/projects").json() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content": b'{"name": "sneaky"}', "headers": {"content-type": "text/plain"}},
        {"data": {"name": "sneaky"}},
        {"files": {"name": (None, "sneaky")}},
        {"content": b'{"name": "sneaky"}', "headers": {"content-type": "text/plain;charset=UTF-8"}},
        {"content": b'{"name": "sneaky"}'},
    ],
    ids=["text-plain", "form-urlencoded", "multipart", "text-plain-charset", "no-content-type"],
)
def test_simple_request_bodies_are_refused_and_create_nothing(
    api: httpx.Client, kwargs: dict[str, object]
) -> None:
    before = api.get(f"{API}/projects").json()
    events = audit_count(api)

    response = api.post(f"{API}/projects", **kwargs)  # type: ignore[arg-type]

    assert_error(
        response, 415, "UnsupportedMediaTypeError", "Request bodies must be application/json"
    )
    assert api.get(f"{API}/projects").json() == before
    assert audit_count(api) == events


def test_a_form_post_cannot_start_a_run(api: httpx.Client, project: str) -> None:
    response = api.post(f"{API}/projects/{project}/runs", data={"experiment": "x"})

    assert response.status_code == 415
    assert api.get(f"{API}/projects/{project}/runs").json()["runs"] == []


def test_octet_stream_is_accepted_on_artifact_uploads(api: httpx.Client, project: str) -> None:
    run = create_run(api, project)

    response = upload(api, run["id"], "model/model.bin", b"\x00\x01")

    assert response.status_code == 201
    assert response.json()["size"] == 2


def test_octet_stream_is_accepted_on_blob_uploads(api: httpx.Client, project: str) -> None:
    response = api.post(f"{API}/projects/{project}/blobs", content=b"blob", headers=OCTET)

    assert response.status_code == 201
    assert response.json()["size"] == "4"


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/projects"),
        ("POST", "/projects/{project}/runs"),
        ("POST", "/runs/{run}/params"),
        ("POST", "/runs/{run}/metrics"),
        ("PUT", "/projects/{project}/models/m/aliases/prod"),
    ],
)
def test_octet_stream_is_refused_everywhere_else(
    api: httpx.Client, project: str, method: str, path: str
) -> None:
    run = create_run(api, project)
    events = audit_count(api)

    response = api.request(
        method,
        API + path.format(run=run["id"], project=project),
        content=b'{"name": "x"}',
        headers=OCTET,
    )

    assert_error(response, 415, "UnsupportedMediaTypeError", "(got 'application/octet-stream')")
    assert audit_count(api) == events


def test_an_artifact_upload_with_a_form_content_type_stores_nothing(
    api: httpx.Client, project: str
) -> None:
    run = create_run(api, project)

    response = api.put(
        f"{API}/runs/{run['id']}/artifacts/report.html",
        content=b"<html>",
        headers={"content-type": "text/html"},
    )

    assert response.status_code == 415
    assert api.get(f"{API}/runs/{run['id']}/artifacts").json() == []


def test_octet_stream_is_refused_on_routes_that_only_look_like_uploads(
    api: httpx.Client,
) -> None:
    api.put(f"{API}/projects/artifacts")

    response = api.post(
        f"{API}/projects/artifacts/experiments", content=b'{"name": "e"}', headers=OCTET
    )

    assert_error(response, 415, "UnsupportedMediaTypeError")


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}],
    ids=["no-content-type", "text-plain", "empty-form"],
)
def test_a_cross_site_post_without_a_body_cannot_change_state(
    api: httpx.Client, project: str, headers: dict[str, str]
) -> None:
    run = create_run(api, project)
    upload(api, run["id"], "model/m.bin", b"m")
    api.post(f"{API}/runs/{run['id']}/end", json={})
    models = f"{API}/projects/{project}/models/m"
    assert api.post(f"{models}/versions", json={"run_id": run["id"]}).status_code == 201

    response = api.post(
        f"{models}/versions/1/archive", headers={"origin": "https://evil.example", **headers}
    )

    assert 400 <= response.status_code < 500
    assert api.get(f"{models}/versions/1").json()["archived"] is False


def test_a_post_without_a_body_passes_the_guard(api: httpx.Client, project: str) -> None:
    run = create_run(api, project)

    response = api.post(f"{API}/runs/{run['id']}/heartbeat")

    assert response.status_code == 204


@pytest.mark.parametrize(
    "path", ["/api/v1/health", "/api/v1/projects", "/api/v1/nope", "/openapi.json"]
)
def test_every_answer_carries_the_security_headers(api: httpx.Client, path: str) -> None:
    response = api.get(path)

    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_no_docs_page_that_would_load_scripts_from_a_cdn_is_served(api: httpx.Client) -> None:
    """Swagger UI loads from cdn.jsdelivr.net, which the CSP (rightly) blocks and an offline
    server cannot reach; the API is described by /openapi.json instead."""
    response = api.get("/docs")

    assert_error(response, 404, "NotFoundError")
    assert "cdn." not in response.text


def test_openapi_lists_the_routes(api: httpx.Client) -> None:
    response = api.get("/openapi.json")

    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    expected = {
        "/api/v1/health": {"get"},
        "/api/v1/projects": {"get", "post"},
        "/api/v1/projects/{project}": {"get", "put"},
        "/api/v1/projects/{project}/experiments": {"get", "post"},
        "/api/v1/projects/{project}/runs": {"get", "post"},
        "/api/v1/projects/{project}/runs/search": {"post"},
        "/api/v1/projects/{project}/blobs": {"post"},
        "/api/v1/runs/{run_id}": {"get"},
        "/api/v1/runs/{run_id}/params": {"post"},
        "/api/v1/runs/{run_id}/tags": {"post"},
        "/api/v1/runs/{run_id}/tags/{key}": {"delete"},
        "/api/v1/runs/{run_id}/metrics": {"post"},
        "/api/v1/runs/{run_id}/metrics/{key}": {"get"},
        "/api/v1/metrics/batches": {"post"},
        "/api/v1/runs/{run_id}/heartbeat": {"post"},
        "/api/v1/runs/{run_id}/end": {"post"},
        "/api/v1/runs/{run_id}/artifacts": {"get"},
        "/api/v1/runs/{run_id}/artifacts/{path}": {"get", "put"},
        "/api/v1/projects/{project}/models": {"get", "post"},
        "/api/v1/projects/{project}/models/{name}": {"get"},
        "/api/v1/projects/{project}/models/{name}/versions": {"get", "post"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}": {"get", "delete"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/manifest": {"get"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/approve": {"post"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/reject": {"post"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/approval": {"put"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/approvals": {"get"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/archive": {"post"},
        "/api/v1/projects/{project}/models/{name}/versions/{version}/unarchive": {"post"},
        "/api/v1/projects/{project}/models/{name}/aliases/{alias}": {"put", "delete"},
        "/api/v1/lineage/{kind}/{ref}": {"get"},
        "/api/v1/audit/events": {"get"},
        "/api/v1/audit/verify": {"get"},
        "/api/v1/audit/export": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    run_create = paths["/api/v1/projects/{project}/runs"]["post"]
    assert "201" in run_create["responses"]
