"""A lean keep-alive connection for the remote SDK's hot request: ``POST /metrics/batches``.

The metric writer sends a short run (its creation, parameters, metrics and end) as one request,
so a script that starts runs one after another pays for one request per run. Through httpx the
client's own work was most of that cost (URL merging, cookie extraction, header validation,
three layers of request objects); :class:`KeepAliveConnection` sends the same bytes over one
persistent HTTP/1.1 connection of the standard library with ``TCP_NODELAY`` set, and answers the
status, the headers and the body. Everything else the SDK sends still goes through httpx.
The standard library's own ``http.client`` parses every answer's headers as an e-mail message,
which cost as much again as the rest of the exchange: the answer is read here, by hand.

It is used only where it changes nothing else: an ``http://`` URL, or an ``https://`` one whose
trust comes from a CA bundle (setting ``ca_bundle``); no transport injected; and no proxy set in
the environment for the server's host (httpx would use it). :func:`keepalive_for` says whether
that holds.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.request
from typing import BinaryIO
from urllib.parse import urlsplit

__all__ = ["KeepAliveConnection", "keepalive_for"]

#: What a reused connection raises when the server closed it while idle (its keep-alive
#: timeout): the request is sent again, once, on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class KeepAliveConnection:
    """One persistent HTTP/1.1 connection to a server, for JSON ``POST`` requests.

    Thread-safe (one request at a time). A request on a connection the server has closed since
    the last one is sent again on a new connection, so callers must send only requests that are
    safe to repeat (metric batches carry batch ids). Answers with a ``Content-Length``, chunked
    answers and answers that end when the server closes the connection are all read.

    Args:
        url: The server's base URL (``http://host:port[/prefix]`` or ``https://…``).
        timeout: Seconds to wait for the connection and for each read.
        headers: Headers sent with every request (who calls, the user agent).
        context: The TLS context for an ``https://`` URL.

    Raises:
        ValueError: A header name or value holds a line break (it would end the header).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        headers: dict[bytes, bytes],
        context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._context = context
        fixed = {b"host": parts.netloc.rsplit("@", 1)[-1].encode("idna"), **headers}
        fixed[b"content-type"] = b"application/json"
        self._head = b"".join(_header(k, v) for k, v in fixed.items())
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``body`` (JSON) to ``path``; answer (status, headers in lower case, body).

        Raises:
            OSError, http.client.HTTPException: The server could not be reached or answered
                something that is not HTTP/1.1 (the connection is dropped; the next request
                opens a new one).
        """
        extra = b"".join(
            _header(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        )
        request = (
            b"POST "
            + (self._prefix + path).encode("ascii")
            + b" HTTP/1.1\r\n"
            + self._head
            + extra
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        with self._lock:
            reused = self._sock is not None
            try:
                return self._exchange(request)
            except _STALE:
                self._drop()
                if not reused:
                    raise
            except BaseException:
                self._drop()
                raise
            try:
                return self._exchange(request)
            except BaseException:
                self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        """Close the connection (the caller holds the lock)."""
        sock, self._sock, self._file = self._sock, None, None
        if sock is not None:
            sock.close()

    def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        sock, rfile = self._sock, self._file
        if sock is None or rfile is None:
            sock, rfile = self._connect()
        sock.sendall(request)
        while True:
            version, status = _status_line(rfile.readline(_MAX_LINE + 1))
            answered = _headers(rfile)
            if not 100 <= status < 200:  # an interim answer (100 Continue) precedes the real one
                break
        coding = answered.get("transfer-encoding", "").lower()
        length = answered.get("content-length")
        if "chunked" in coding:
            data = _chunked(rfile)
        elif length is not None:
            if not length.strip().isdigit():
                raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
            data = _exactly(rfile, int(length))
        else:  # the body ends when the server closes the connection
            data = rfile.read()
            self._drop()
            return status, answered, data
        if version == b"HTTP/1.0" or answered.get("connection", "").lower() == "close":
            self._drop()
        return status, answered, data

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            # A small request must not wait for the ACK of the previous one (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._https:
                context = self._context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        self._sock, self._file = sock, sock.makefile("rb")
        return self._sock, self._file


#: Longest status or header line read, and most header lines, as http.client bounds them.
_MAX_LINE = 65536
_MAX_HEADERS = 100


def _header(name: bytes, value: bytes) -> bytes:
    if b"\r" in name + value or b"\n" in name + value:
        raise ValueError(f"Header {name.decode('latin-1')!r} holds a line break.")
    return name + b": " + value + b"\r\n"


def _status_line(line: bytes) -> tuple[bytes, int]:
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise http.client.BadStatusLine(line[:80].decode("latin-1"))
    return parts[0], int(parts[1])


def _headers(rfile: BinaryIO) -> dict[str, str]:
    found: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return found
        name, _, value = line.partition(b":")
        found[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    raise http.client.HTTPException(f"more than {_MAX_HEADERS} headers")


def _exactly(rfile: BinaryIO, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) < size:
        raise http.client.IncompleteRead(data, size - len(data))
    return data


def _chunked(rfile: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {size_text[:40]!r}") from None
        if size == 0:
            _headers(rfile)  # trailers, up to the blank line
            return b"".join(parts)
        parts.append(_exactly(rfile, size))
        _exactly(rfile, 2)  # the chunk's CRLF


def keepalive_for(url: str, trust: ssl.SSLContext | bool) -> ssl.SSLContext | bool | None:
    """Whether a :class:`KeepAliveConnection` may carry requests to ``url``: False when not;
    otherwise the TLS context it must use (None for ``http://``).

    ``trust`` is what httpx verifies the server with: an ``https://`` URL qualifies only with a
    context of its own (a CA bundle), never with httpx's default trust store or with
    verification off. A proxy named in the environment for the host (``HTTP_PROXY``,
    ``HTTPS_PROXY``, ``ALL_PROXY``, unless ``NO_PROXY`` names it) rules it out: httpx would go
    through the proxy.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        if not isinstance(trust, ssl.SSLContext):
            return False
        context: ssl.SSLContext | None = trust
    elif parts.scheme == "http":
        context = None
    else:
        return False
    proxies = urllib.request.getproxies_environment()
    named = any(key != "no" and value for key, value in proxies.items())
    if named and not urllib.request.proxy_bypass(parts.netloc):
        return False
    return context
