"""Hostile input against a real server: body size limits, compressed bodies, strict JSON, slow
clients and the connection limit (server/guard.py, server/bodies.py, server/transport.py)."""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from civicml.server import create_app
from tests.server.helpers import (
    API,
    OCTET,
    Server,
    assert_error,
    audit_count,
    create_run,
    files_under,
    isolated_settings,
    serve,
    upload,
)

JSON_LIMIT = 2048
INVOCATION_LIMIT = 4096
UPLOAD_LIMIT = 8192
JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with small body limits (so that bodies over them fit in socket buffers)."""
    settings = isolated_settings(
        tmp_path_factory.mktemp("small"),
        server_max_body_bytes=JSON_LIMIT,
        server_max_invocation_bytes=INVOCATION_LIMIT,
        server_max_upload_bytes=UPLOAD_LIMIT,
    )
    with serve(create_app(settings)) as url:
        yield Server(url, settings)


@pytest.fixture
def small_api(small: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small.url, timeout=30) as client:
        yield client


def _padded_project(size: int) -> bytes:
    """A valid create-project body of exactly ``size`` bytes."""
    body = json.dumps({"name": "padded", "description": ""}).encode()
    return json.dumps({"name": "padded", "description": "x" * (size - len(body))}).encode()


def _chunks(data: bytes, size: int = 512) -> Iterator[bytes]:
    """An iterator body: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _stored_objects(server: Server) -> set[str]:
    return files_under(server.settings.artifacts_root / "objects")


# Body size limits -----------------------------------------------------------------------------
def test_a_json_body_over_the_limit_is_refused_with_the_limit_in_the_hint(
    small_api: httpx.Client,
) -> None:
    before = small_api.get(f"{API}/projects").json()
    events = audit_count(small_api)

    response = small_api.post(
        f"{API}/projects", content=_padded_project(JSON_LIMIT + 1), headers=JSON_HEADERS
    )

    body = assert_error(response, 413, "PayloadTooLargeError", "larger than the 2,048 bytes")
    assert "2,048" in body["hint"] and "CIVICML_SERVER_MAX_BODY_BYTES" in body["hint"]
    assert body["details"] == [{"limit_bytes": JSON_LIMIT, "kind": "json"}]
    assert small_api.get(f"{API}/projects").json() == before
    assert audit_count(small_api) == events


def test_a_json_body_at_the_limit_is_accepted(small_api: httpx.Client) -> None:
    response = small_api.post(
        f"{API}/projects", content=_padded_project(JSON_LIMIT), headers=JSON_HEADERS
    )

    assert response.status_code == 201, response.text


def test_a_chunked_json_body_is_counted_as_it_arrives(small_api: httpx.Client) -> None:
    before = small_api.get(f"{API}/projects").json()

    response = small_api.post(
        f"{API}/projects",
        content=_chunks(_padded_project(JSON_LIMIT + 600)),
        headers=JSON_HEADERS,
    )

    assert "content-length" not in response.request.headers
    body = assert_error(response, 413, "PayloadTooLargeError", "larger than the 2,048 bytes")
    assert "CIVICML_SERVER_MAX_BODY_BYTES" in body["hint"]
    assert small_api.get(f"{API}/projects").json() == before


def test_metrics_over_the_json_limit_are_refused(small_api: httpx.Client) -> None:
    run = create_run(small_api, "default")
    metrics = [{"key": f"m{i}", "value": 0.5} for i in range(200)]

    response = small_api.post(f"{API}/runs/{run['id']}/metrics", json={"metrics": metrics})

    assert_error(response, 413, "PayloadTooLargeError")
    assert small_api.get(f"{API}/runs/{run['id']}").json()["metrics"] == {}


@pytest.mark.parametrize(
    "path", ["/endpoints/e/invocations", f"{API}/projects/p/endpoints/e/invocations"]
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_invocation_over_its_limit_is_refused(
    small_api: httpx.Client, path: str, chunked: bool
) -> None:
    data = json.dumps({"records": [{"text": "x" * INVOCATION_LIMIT}]}).encode()

    response = small_api.post(
        path, content=_chunks(data) if chunked else data, headers=JSON_HEADERS
    )

    body = assert_error(response, 413, "PayloadTooLargeError", "larger than the 4,096 bytes")
    assert "CIVICML_SERVER_MAX_INVOCATION_BYTES" in body["hint"]


def test_each_route_has_its_own_limit(small_api: httpx.Client) -> None:
    """An invocation may be larger than a JSON body, an upload larger than both."""
    invocation = json.dumps({"records": [{"text": "x" * (JSON_LIMIT + 100)}]}).encode()
    run = create_run(small_api, "default")

    invoked = small_api.post(
        "/endpoints/nothing/invocations", content=invocation, headers=JSON_HEADERS
    )
    uploaded = upload(small_api, run["id"], "model/big.bin", b"\x00" * (INVOCATION_LIMIT + 100))

    assert_error(invoked, 404, "NotFoundError")  # read whole, then looked up
    assert uploaded.status_code == 201, uploaded.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_over_its_limit_stores_nothing(
    small_api: httpx.Client, small: Server, chunked: bool
) -> None:
    run = create_run(small_api, "default")
    objects = _stored_objects(small)
    data = b"\x01" * (UPLOAD_LIMIT + 1)

    response = small_api.put(
        f"{API}/runs/{run['id']}/artifacts/model/model.bin",
        content=_chunks(data, 1024) if chunked else data,
        headers=OCTET,
    )

    body = assert_error(response, 413, "PayloadTooLargeError", "larger than the 8,192 bytes")
    assert "CIVICML_SERVER_MAX_UPLOAD_BYTES" in body["hint"]
    assert small_api.get(f"{API}/runs/{run['id']}/artifacts").json() == []
    assert _stored_objects(small) == objects
    assert list((small.settings.artifacts_root / "tmp").iterdir()) == []


def test_a_dataset_upload_over_its_limit_creates_no_version(
    small_api: httpx.Client,
) -> None:
    csv = b"a,b\n" + b"1,2\n" * (UPLOAD_LIMIT // 4 + 1)

    response = small_api.post(
        f"{API}/projects/default/datasets/big/versions",
        params={"format": "csv"},
        content=_chunks(csv, 1024),
        headers=OCTET,
    )

    assert_error(response, 413, "PayloadTooLargeError")
    assert small_api.get(f"{API}/projects/default/datasets").json() == []


# Content-Encoding -------------------------------------------------------------------------------
def test_a_gzip_dataset_upload_is_refused_with_415(api: httpx.Client, project: str) -> None:
    response = api.post(
        f"{API}/projects/{project}/datasets/applications/versions",
        params={"format": "csv"},
        content=gzip.compress(b"income,region\n1,north\n2,south\n"),
        headers={**OCTET, "content-encoding": "gzip"},
    )

    body = assert_error(
        response, 415, "UnsupportedMediaTypeError", "Content-Encoding 'gzip' is not accepted."
    )
    assert "uncompressed" in body["hint"]
    assert api.get(f"{API}/projects/{project}/datasets").json() == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP", "gzip, identity"])
def test_any_content_encoding_but_identity_is_refused(
    api: httpx.Client, project: str, encoding: str
) -> None:
    response = api.post(
        f"{API}/projects/{project}/experiments",
        content=b'{"name": "e"}',
        headers={**JSON_HEADERS, "content-encoding": encoding},
    )

    assert_error(response, 415, "UnsupportedMediaTypeError", "is not accepted")
    experiments = api.get(f"{API}/projects/{project}/experiments").json()
    assert all(e["name"] != "e" for e in experiments)


def test_identity_content_encoding_is_accepted(api: httpx.Client, project: str) -> None:
    response = api.post(
        f"{API}/projects/{project}/experiments",
        content=b'{"name": "plain"}',
        headers={**JSON_HEADERS, "content-encoding": "identity"},
    )

    assert response.status_code == 201, response.text


# One strict JSON parser ----------------------------------------------------------------------
def _routes(project: str, run: str) -> list[tuple[str, str, bytes]]:
    """A body-taking route of each router: (method, path, body with a duplicate key)."""
    return [
        ("POST", f"{API}/projects", b'{"name": "dup-a", "name": "dup-b"}'),
        ("POST", f"{API}/projects/{project}/runs", b'{"tags": {"a": "1", "a": "2"}}'),
        ("POST", f"{API}/runs/{run}/params", b'{"params": {"lr": "1", "lr": "2"}}'),
        ("POST", f"{API}/runs/{run}/metrics", b'{"metrics": [], "metrics": []}'),
        ("PUT", f"{API}/projects/{project}/models/m/aliases/prod", b'{"version": 1, "version": 2}'),
        ("POST", f"{API}/projects/{project}/endpoints", b'{"name": "e", "name": "f"}'),
        ("POST", f"{API}/projects/{project}/endpoints/e/invocations", b'{"a": 1, "a": 2}'),
        ("POST", "/endpoints/e/invocations", b'[{"a": 1, "a": 2}]'),
    ]


def test_a_duplicate_key_is_refused_on_every_json_route(api: httpx.Client, project: str) -> None:
    run = create_run(api, project)
    events = audit_count(api)
    projects = api.get(f"{API}/projects").json()

    for method, path, body in _routes(project, run["id"]):
        response = api.request(method, path, content=body, headers=JSON_HEADERS)
        assert_error(response, 400, "BadRequestError", "twice in one object")

    assert audit_count(api) == events
    assert api.get(f"{API}/projects").json() == projects
    assert api.get(f"{API}/runs/{run['id']}").json()["params"] == {}


@pytest.mark.parametrize(
    "path", ["/endpoints/e/invocations", f"{API}/projects/default/endpoints/e/invocations"]
)
def test_an_invocation_nested_100000_deep_is_a_400_not_a_500(api: httpx.Client, path: str) -> None:
    response = api.post(path, content=b"[" * 100_000, headers=JSON_HEADERS)

    assert_error(response, 400, "BadRequestError", "more than 64 levels deep")


def test_a_json_body_nested_too_deep_is_a_400(api: httpx.Client) -> None:
    body = b'{"name": "deep", "description": ' + b"[" * 100 + b"]" * 100 + b"}"

    response = api.post(f"{API}/projects", content=body, headers=JSON_HEADERS)

    assert_error(response, 400, "BadRequestError", "more than 64 levels deep")


def test_an_invocation_that_is_not_json_is_a_400(api: httpx.Client) -> None:
    response = api.post("/endpoints/e/invocations", content=b"{nope", headers=JSON_HEADERS)

    assert_error(response, 400, "BadRequestError", "The invocation body is not valid JSON")


def test_a_bare_nan_is_refused_outside_the_metric_routes(api: httpx.Client, project: str) -> None:
    run = create_run(api, project)

    response = api.post(
        f"{API}/runs/{run['id']}/params", content=b'{"params": {"x": NaN}}', headers=JSON_HEADERS
    )

    assert_error(response, 422, "InvalidInputError", "bare number NaN")
    assert api.get(f"{API}/runs/{run['id']}").json()["params"] == {}


def test_metric_routes_take_bare_non_finite_values(api: httpx.Client, project: str) -> None:
    run = create_run(api, project)

    response = api.post(
        f"{API}/runs/{run['id']}/metrics",
        content=b'{"metrics": [{"key": "loss", "value": NaN}, {"key": "g", "value": -Infinity}]}',
        headers=JSON_HEADERS,
    )

    assert response.status_code == 200, response.text
    history = api.get(f"{API}/runs/{run['id']}/metrics/g")
    assert history.status_code == 200 and '"-Infinity"' in history.text


# Slow clients and the connection limit --------------------------------------------------------
HEAD_TIMEOUT_S = 0.5
WAIT_S = 20.0  # far above the head timeout: a bound on the test, not a timing assertion


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


@pytest.fixture(params=["httptools", "h11"])
def slow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A server with a short head timeout, on each HTTP implementation uvicorn has."""
    settings = isolated_settings(tmp_path, server_header_timeout_s=HEAD_TIMEOUT_S)
    with serve(create_app(settings), http=request.param) as url:
        yield url


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (reading until EOF, for at most WAIT_S)."""
    sock.settimeout(WAIT_S)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _health_ok(url: str) -> bool:
    return httpx.get(f"{url}{API}/health", timeout=WAIT_S).status_code == 200


def test_a_stalled_partial_header_connection_is_closed(slow: str) -> None:
    with socket.create_connection(_address(slow)) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

        assert _closed_by_server(sock)


def test_a_connection_that_sends_nothing_is_closed(slow: str) -> None:
    with socket.create_connection(_address(slow)) as sock:
        assert _closed_by_server(sock)


def test_a_stalled_second_request_on_a_kept_alive_connection_is_closed(slow: str) -> None:
    with socket.create_connection(_address(slow)) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(WAIT_S)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 12")

        assert _closed_by_server(sock)


def test_a_slow_but_complete_head_is_answered(slow: str) -> None:
    with socket.create_connection(_address(slow)) as sock:
        for part in (b"GET /api/v1/health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            sock.sendall(part)
        sock.settimeout(WAIT_S)

        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_many_stalled_connections_are_all_closed_and_the_server_keeps_answering(
    slow: str,
) -> None:
    sockets = [socket.create_connection(_address(slow)) for _ in range(100)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")

        assert _health_ok(slow)
        assert all(_closed_by_server(sock) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert _health_ok(slow)


def test_past_the_connection_limit_requests_get_the_503_error_body(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, server_limit_concurrency=4)
    with serve(create_app(settings)) as url:
        held = [socket.create_connection(_address(url)) for _ in range(4)]
        try:
            # The idle connections are counted once accepted; ask until they are.
            deadline = time.monotonic() + WAIT_S
            response = httpx.get(f"{url}{API}/health", timeout=WAIT_S)
            while response.status_code == 200 and time.monotonic() < deadline:
                response = httpx.get(f"{url}{API}/health", timeout=WAIT_S)

            body = assert_error(response, 503, "ServiceUnavailableError", "at its connection limit")
            assert "CIVICML_SERVER_LIMIT_CONCURRENCY" in body["hint"]
            assert response.headers["retry-after"] == "1"
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + WAIT_S
        while not _health_ok(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _health_ok(url)


# A body that stalls or trickles ------------------------------------------------------------
BODY_TIMEOUT_S = 1.0


@pytest.fixture(params=["httptools", "h11"])
def slow_body(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    settings = isolated_settings(tmp_path, server_body_timeout_s=BODY_TIMEOUT_S)
    with serve(create_app(settings), http=request.param) as url:
        yield url


def _answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    sock.settimeout(WAIT_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), json.loads(rest[:length])


@pytest.mark.parametrize(
    "path",
    [f"{API}/projects", "/endpoints/anything/invocations"],  # a route, and the invocations lane
)
def test_a_stalled_body_is_a_408_and_the_server_keeps_answering(slow_body: str, path: str) -> None:
    with socket.create_connection(_address(slow_body)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            'Content-Length: 100\r\n\r\n{"name": '.encode()
        )
        status, body = _answer(sock)

    assert status == 408
    assert body["error"] == "RequestTimeoutError"
    assert "stalled" in body["message"] and body["details"][0]["received_bytes"] == 9
    assert _health_ok(slow_body)


def test_a_body_sent_in_pieces_within_the_timeout_is_read(slow_body: str) -> None:
    payload = json.dumps({"name": "trickled"}).encode()
    with socket.create_connection(_address(slow_body)) as sock:
        sock.sendall(
            f"POST {API}/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        )
        for i in range(0, len(payload), 4):
            time.sleep(BODY_TIMEOUT_S / 10)  # ten times within the limit
            sock.sendall(payload[i : i + 4])
        status, body = _answer(sock)

    assert (status, body["name"]) == (201, "trickled")


def test_an_invocation_body_sent_in_pieces_within_the_timeout_is_read(slow_body: str) -> None:
    """The invocations lane reads a body that waits between pieces (under the deadline) to
    the end: the answer is about the endpoint, not a timeout."""
    payload = json.dumps({"records": [{"age": 41}]}).encode()
    with socket.create_connection(_address(slow_body)) as sock:
        sock.sendall(
            "POST /endpoints/nowhere/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        )
        for i in range(0, len(payload), 8):
            time.sleep(BODY_TIMEOUT_S / 10)
            sock.sendall(payload[i : i + 8])
        status, body = _answer(sock)

    assert status == 404 and body["error"] == "NotFoundError"


@pytest.mark.parametrize(
    "garbage", [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"]
)
def test_bytes_that_are_not_http_get_the_error_body_and_security_headers(
    slow: str, garbage: bytes
) -> None:
    with socket.create_connection(_address(slow)) as sock:
        sock.sendall(garbage)
        sock.settimeout(WAIT_S)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"x-content-type-options: nosniff" in head.lower()
    assert json.loads(body)["error"] == "BadRequestError"
