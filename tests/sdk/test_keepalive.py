"""The remote SDK's keep-alive connection for metric batches (sdk/_keepalive.py), against a
scripted HTTP server on loopback: reuse, a connection the server closed while idle, the three
ways an answer's body ends, and when the connection may be used at all."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from civicml.core.errors import ConflictError
from civicml.sdk._keepalive import KeepAliveConnection, keepalive_for
from civicml.sdk.remote import RemoteBackend, RemoteError
from tests.server.helpers import isolated_settings

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]"


@dataclass
class Scripted:
    """A loopback server that answers each connection's requests from ``script``: one list of
    answers per connection, in order; after a connection's answers it closes that connection."""

    script: list[list[bytes]]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    server = Scripted(script=[])
    server.port = listener.getsockname()[1]
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(30)
            accepted.append(conn)
            with conn:
                answers = server.script[server.connections] if server.script else []
                server.connections += 1
                for answer in answers:
                    request = _read_request(conn)
                    if not request:
                        break
                    server.requests.append(request)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server
    stop.set()
    for conn in accepted:  # wakes a read waiting for a request that will not come
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
    thread.join(timeout=5)
    listener.close()


def _client(server: Scripted, headers: dict[bytes, bytes] | None = None) -> KeepAliveConnection:
    return KeepAliveConnection(
        f"http://127.0.0.1:{server.port}/prefix/",
        timeout=5,
        headers=headers or {b"x-civicml-user": "zoë".encode()},
    )


def test_requests_share_one_connection_and_carry_the_fixed_headers(scripted: Scripted) -> None:
    scripted.script = [[OK, OK]]
    client = _client(scripted)

    answers = [client.post("/api/v1/metrics/batches", b'{"a":1}') for _ in range(2)]

    expected = (200, {"content-type": "application/json", "content-length": "2"}, b"[]")
    assert answers == [expected, expected]
    assert scripted.connections == 1
    head, _, body = scripted.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/api/v1/metrics/batches HTTP/1.1"
    assert f"host: 127.0.0.1:{scripted.port}".encode() in lines
    assert "x-civicml-user: zoë".encode() in lines  # UTF-8 bytes, as httpx sends them
    assert b"content-type: application/json" in lines
    assert b"content-length: 7" in lines
    assert body == b'{"a":1}'
    client.close()


def test_a_connection_closed_while_idle_is_replaced_and_the_request_sent_again(
    scripted: Scripted,
) -> None:
    # The first connection answers once, then the server closes it (its keep-alive timeout).
    scripted.script = [[OK], [OK]]
    client = _client(scripted)
    client.post("/x", b"{}")

    status, _, body = client.post("/x", b"{}")

    assert (status, body) == (200, b"[]")
    assert scripted.connections == 2
    assert len(scripted.requests) == 2
    client.close()


def test_a_new_connection_closed_without_an_answer_is_an_error_not_a_loop(
    scripted: Scripted,
) -> None:
    scripted.script = [[], []]  # every connection is closed at once
    client = _client(scripted)

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        client.post("/x", b"{}")

    assert scripted.connections == 1


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3;ext=1\r\n[1,\r\n2\r\n2]\r\n0\r\ntrailer: x\r\n\r\n",
            b"[1,2]",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b"[]"),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"{}"),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}", b"{}"),
    ],
    ids=["chunked", "interim-100", "http-1.0", "connection-close"],
)
def test_every_way_an_answer_ends_is_read(scripted: Scripted, answer: bytes, body: bytes) -> None:
    scripted.script = [[answer], [OK]]
    client = _client(scripted)

    first = client.post("/x", b"{}")
    second = client.post("/x", b"{}")

    assert (first[0], first[2]) == (200, body)
    assert (second[0], second[2]) == (200, b"[]")
    client.close()


def test_a_body_that_ends_with_the_connection_is_read_to_the_end(scripted: Scripted) -> None:
    scripted.script = [[b"HTTP/1.1 503 Unavailable\r\ncontent-type: text/plain\r\n\r\ndown"]]
    client = _client(scripted)

    assert client.post("/x", b"{}") == (503, {"content-type": "text/plain"}, b"down")


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["not-http", "bad-length", "short-body", "bad-chunk"],
)
def test_an_answer_that_is_not_http_is_an_error(scripted: Scripted, answer: bytes) -> None:
    scripted.script = [[answer]]
    client = _client(scripted)

    with pytest.raises(http.client.HTTPException):
        client.post("/x", b"{}")


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    scripted: Scripted,
) -> None:
    with pytest.raises(ValueError, match="line break"):
        _client(scripted, {b"x-civicml-user": b"alice\r\nx-evil: 1"})
    client = _client(scripted)
    with pytest.raises(ValueError, match="line break"):
        client.post("/x", b"{}", {"authorization": "Bearer a\nb"})
    assert scripted.requests == []


def test_it_is_used_for_plain_http_and_https_with_a_ca_bundle_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(key.lower(), raising=False)
    bundle = ssl.create_default_context()

    assert keepalive_for("http://127.0.0.1:8080", True) is None
    assert keepalive_for("https://ml.example.gov", bundle) is bundle
    assert keepalive_for("https://ml.example.gov", True) is False  # httpx's own trust store
    assert keepalive_for("ftp://ml.example.gov", True) is False


def test_a_proxy_in_the_environment_rules_it_out_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(key.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert keepalive_for("http://ml.internal:8080", True) is None  # NO_PROXY alone: no proxy

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")

    assert keepalive_for("http://ml.internal:8080", True) is False
    assert keepalive_for("http://127.0.0.1:8080", True) is None


# The remote backend over it -------------------------------------------------------------------
def _backend(url: str, tmp_path: Path) -> RemoteBackend:
    return RemoteBackend(url, user="alice", settings=isolated_settings(tmp_path))


def test_the_remote_backend_sends_metric_batches_over_it_and_raises_the_servers_error(
    scripted: Scripted, tmp_path: Path
) -> None:
    refusal = (
        b'{"ok": false, "status": 409, "error": "ConflictError", "message": "Run r exists '
        b'already.", "hint": "Start the new run with a new id.", "details": []}'
    )
    scripted.script = [
        [
            OK,
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(refusal)).encode()
            + b"\r\n\r\n"
            + refusal,
        ]
    ]
    backend = _backend(f"http://127.0.0.1:{scripted.port}", tmp_path)
    try:
        assert backend._post_retried("/api/v1/metrics/batches", {"batches": []}) == []
        with pytest.raises(ConflictError, match="exists already") as raised:
            backend._post_retried("/api/v1/metrics/batches", {"batches": []})
    finally:
        backend.close()

    assert raised.value.hint == "Start the new run with a new id."
    assert scripted.connections == 1
    assert b"x-civicml-user: alice" in scripted.requests[0]


def test_a_server_that_cannot_be_reached_is_a_remote_error_after_the_retries(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = _backend(f"http://127.0.0.1:{port}", tmp_path)
    try:
        with pytest.raises(RemoteError, match="Cannot reach the civicml server") as raised:
            backend._post_retried("/api/v1/metrics/batches", {"batches": []})
    finally:
        backend.close()

    assert raised.value.hint == "Is 'civicml server' running there?"
