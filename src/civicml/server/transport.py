"""The HTTP transport: uvicorn with a request-head timeout, keep-alive timeout and a connection
limit (settings ``server_header_timeout_s``, ``server_keep_alive_timeout_s``,
``server_limit_concurrency``; past the limit a request is answered 503 with the one error body).

uvicorn closes idle keep-alive connections, but a connection that opens and then sends a request
line or headers slowly (or never finishes them) is held forever: a few hundred of those
("slowloris") exhaust a server. :func:`http_protocol` adds a timer to uvicorn's own HTTP
protocol: it starts when the connection opens or its next request begins, stops when the
request's head is complete, and closes the connection when it fires. Everything else is
uvicorn's (flow control, pipelining).

TCP_NODELAY: a small answer on a kept-alive connection must not wait for the client's delayed
ACK (Nagle's algorithm: ~40 ms a request on Linux). asyncio sets it only on sockets accepted from
a listener whose ``proto`` is ``IPPROTO_TCP``, and a socket bound ahead of the server — what
``uvicorn --workers`` does, uvicorn#3149 — has ``proto`` 0. So the protocol sets it on every
accepted TCP connection itself (one system call per connection), and :func:`bind_sockets`, which
binds the port for ``civicml server --workers N``, creates its listeners with ``IPPROTO_TCP``.

With ``server_tls_cert`` and ``server_tls_key`` the server speaks HTTPS only (uvicorn's ssl
options): the same protocol classes run on top of the TLS transport (the head timer starts once
the handshake is done), and every answer carries ``Strict-Transport-Security``
(:func:`tls_files` checks the files first, so a wrong one is one clear error, not a traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import ssl
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from civicml.core.errors import ConfigurationError
from civicml.core.settings import Settings
from civicml.server.errors import SECURITY_HEADERS, error_body

__all__ = [
    "HSTS",
    "TLSFiles",
    "bind_sockets",
    "http_protocol",
    "reuse_port_balances",
    "server_config",
    "set_nodelay",
    "tls_files",
]

log = logging.getLogger("civicml.server")

#: Sent with every answer of a server that speaks TLS (never over plain HTTP): browsers then
#: refuse plain HTTP to this host for a year.
HSTS = (b"strict-transport-security", b"max-age=31536000")

_TLS_HINT = (
    "Pass --tls-cert and --tls-key (or set CIVICML_SERVER_TLS_CERT and CIVICML_SERVER_TLS_KEY) "
    "to the PEM certificate chain and its private key; docs/security.md#tls."
)


@dataclass(frozen=True)
class TLSFiles:
    """The server's checked certificate and key, and what is worth a warning about them."""

    cert: Path
    key: Path
    warnings: list[str] = field(default_factory=list)


def _readable(path: Path, what: str, setting: str) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise ConfigurationError(
            f"The TLS {what} file {path.name!r} ({setting}) does not exist.", hint=_TLS_HINT
        ) from None
    except IsADirectoryError:
        raise ConfigurationError(
            f"The TLS {what} {path.name!r} ({setting}) is a directory, not a PEM file.",
            hint=_TLS_HINT,
        ) from None
    except OSError as err:
        raise ConfigurationError(
            f"The TLS {what} file {path.name!r} ({setting}) cannot be read: "
            f"{err.strerror or type(err).__name__}.",
            hint="Make it readable by the user that runs civicml server (the key: by that "
            "user only, mode 0600).",
        ) from None


def tls_files(settings: Settings) -> TLSFiles | None:
    """The server's TLS certificate and key, checked: None when TLS is off.

    Raises:
        ConfigurationError: only one of the two is set, a file is missing or unreadable, is not
            PEM, or the key does not belong to the certificate.
    """
    cert, key = settings.server_tls_cert, settings.server_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "server_tls_cert (--tls-cert)" if cert is None else "server_tls_key (--tls-key)"
        raise ConfigurationError(
            f"TLS needs both a certificate and its key; {missing} is not set.", hint=_TLS_HINT
        )
    cert, key = cert.expanduser(), key.expanduser()
    _readable(cert, "certificate", "--tls-cert")
    _readable(key, "key", "--tls-key")
    if b"ENCRYPTED" in key.read_bytes()[:4096]:
        raise ConfigurationError(
            f"The TLS key {key.name!r} is encrypted with a passphrase; civicml server cannot "
            "prompt for it.",
            hint="Give an unencrypted key readable by the server's user only (mode 0600), e.g. "
            "openssl pkey -in encrypted.pem -out server.key; docs/security.md#tls.",
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")  # never a terminal prompt
    except ssl.SSLError as err:
        reason = err.reason or "not a PEM certificate and private key"
        mismatch = "KEY_VALUES_MISMATCH" in str(err)
        raise ConfigurationError(
            "The TLS key does not belong to the certificate (--tls-key, --tls-cert)."
            if mismatch
            else f"The TLS certificate {cert.name!r} or key {key.name!r} cannot be loaded: "
            f"{reason}.",
            hint="Give the certificate (chain) and the private key it was issued for, both as "
            "PEM, the key unencrypted; docs/security.md#tls.",
        ) from None
    warnings: list[str] = []
    try:
        mode = key.stat().st_mode
    except OSError:  # pragma: no cover - it was just read
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"The TLS key {key.name!r} can be read by other users (mode "
            f"{stat.S_IMODE(mode):04o}); restrict it with: chmod 600 {key.name}"
        )
    return TLSFiles(cert, key, warnings)


class _HSTSApp:
    """``app`` with HSTS added to every answer it starts."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_hsts(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), HSTS]
            await send(message)

        await self.app(scope, receive, send_hsts)


def _direct_lane_of(app: Any) -> Any:
    """The direct lane (``server/direct.py``) of the app uvicorn serves, through uvicorn's
    proxy-headers layer and the HSTS layer (whose header the protocol adds itself); None when
    any other layer wraps it, or it is not civicml's app."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from civicml.server.direct import direct_lane

    while isinstance(app, ProxyHeadersMiddleware | _HSTSApp):
        app = app.app
    return direct_lane(app)


async def _over_limit(
    scope: Scope, receive: Receive, send: Send, *, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """The answer past the connection limit: the one error body, 503 with Retry-After."""
    body = json.dumps(
        error_body(
            503,
            "The server is at its connection limit.",
            hint="Retry in a second; the operator can raise CIVICML_SERVER_LIMIT_CONCURRENCY.",
        )
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bad_request(extra: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The raw answer to bytes that are not an HTTP request: the one error body and the
    security headers (uvicorn's own answer is bare text)."""
    body = json.dumps(
        error_body(
            400,
            "The request is not valid HTTP/1.1.",
            hint="Send a well-formed HTTP request (an HTTP client library does).",
            error="BadRequestError",
        )
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        *extra,
    ]
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body


class _HeadTimeout:
    """Mixin for a uvicorn HTTP protocol: close a connection whose request head is late, and
    answer requests past the connection limit with the one error body (uvicorn's own answer is
    plain text)."""

    head_timeout_s: float = 10.0
    over_limit: Any = staticmethod(_over_limit)
    bad_request: bytes = _bad_request(())
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    app: Any
    connections: set[Any]
    tasks: set[Any]
    limit_concurrency: int | None
    _head_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = self.app
        self._limit = self.limit_concurrency
        self.limit_concurrency = None  # checked by _pick_app instead

    def _pick_app(self) -> None:
        """Point ``self.app``, which uvicorn reads for the request whose head just arrived, at
        the real app or, past the limit (as uvicorn counts it), at the 503."""
        limit = self._limit
        over = limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)
        if over:
            log.warning("connection limit (%d) reached; answering 503", limit)
        self.app = self.over_limit if over else self._app

    # One timer per connection, not one per request: arming sets a deadline (and schedules the
    # timer only when none is pending), disarming clears it; the timer, when it fires, closes
    # the connection if its deadline has passed, or waits for a later one. A kept-alive
    # connection's requests then cost a clock read each, not a timer scheduled and cancelled.
    _head_deadline: float | None = None

    def _arm_head_timer(self) -> None:
        if self._head_deadline is not None:
            return
        self._head_deadline = deadline = self.loop.time() + self.head_timeout_s
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(deadline, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        self._head_deadline = None

    def _cancel_head_timer(self) -> None:
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:  # the head arrived: nothing to watch until the next request
            return
        if self.loop.time() < deadline:  # a later request's head: wait for its deadline
            self._head_timer = self.loop.call_at(deadline, self._head_timed_out)
            return
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Bytes that are not HTTP: the one error body with the security headers (and HSTS
        over TLS), never uvicorn's bare text; then the connection is closed."""
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.transport.write(self.bad_request)
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport)
        coalesced = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(coalesced)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]


class CoalescingTransport(asyncio.Transport):
    """A transport that sends a response's head and a small body in one write.

    uvicorn writes the status line and headers when the app sends ``http.response.start``, and
    the body when it sends ``http.response.body``: with TCP_NODELAY, two system calls and two
    TCP segments for every small answer. This wrapper holds a small write (at most
    :attr:`HOLD_BYTES`) until the next write, which goes out with it in one call, or until the
    event loop's next turn, when it goes out alone. A response written in one step of its task
    (every JSON answer) leaves in one segment; a streamed one is delayed by one loop turn at
    most. Writes larger than :attr:`HOLD_BYTES` are never held or copied together. Closing
    sends what is held first; aborting drops it, as it drops the transport's own buffer.
    """

    #: The largest write held back for the next one (a response head is a few hundred bytes).
    HOLD_BYTES = 16 * 1024

    def __init__(self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return  # as the transports do (h11 ends a body with an empty write)
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= self.HOLD_BYTES:
                self._transport.write(held + data)
                return
            self._transport.write(held)
            self._transport.write(data)
        elif len(data) <= self.HOLD_BYTES:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_now(self, data: bytes) -> None:
        """Write ``data`` (a whole response) at once, after anything held."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()  # type: ignore[attr-defined,no-any-return]

    def pause_reading(self) -> None:
        self._transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        self._transport.resume_reading()  # type: ignore[attr-defined]

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on the TCP connection under ``transport`` (TLS included)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the peer is already gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def reuse_port_balances() -> bool:
    """Whether listeners in one ``SO_REUSEPORT`` group share new connections out (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_sockets(
    host: str, port: int, *, copies: int = 1, backlog: int = 2048
) -> list[list[socket.socket]]:
    """Listening TCP sockets on ``host:port`` for ``copies`` serving processes, as asyncio
    binds them for one (every address ``host`` resolves to; ``SO_REUSEADDR``; IPv6 only on an
    IPv6 address), created with ``IPPROTO_TCP`` so accepted connections get TCP_NODELAY.

    Where :func:`reuse_port_balances` (Linux), each copy gets listeners of its own in one
    ``SO_REUSEPORT`` group, and the kernel spreads new connections evenly over the processes;
    elsewhere every copy gets the same listeners (one accept queue; the process that wakes
    first takes the connection, so a burst of kept-alive connections may all go to one).

    Returns:
        One list of listeners per copy.

    Raises:
        OSError: The address cannot be resolved or bound (e.g. the port is in use).
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    reuse_port = copies > 1 and reuse_port_balances()
    made: list[socket.socket] = []

    def listener(family: int, address: Any) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        made.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        return sock

    try:
        first = [listener(family, address) for family, address in addresses]
        if not reuse_port:
            return [first] * copies
        return [first] + [
            [listener(s.family, s.getsockname()) for s in first] for _ in range(copies - 1)
        ]
    except BaseException:
        for sock in made:
            sock.close()
        raise


#: How long the direct lane waits for the rest of a body that did not come with its head (an
#: HTTP client writing them apart) before the app takes the request.
DIRECT_BODY_WAIT_S = 1.0


def _httptools_protocol() -> type[asyncio.Protocol]:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

    from civicml.server.direct import status_line

    class HeadTimeoutHttpToolsProtocol(_HeadTimeout, HttpToolsProtocol):
        #: Headers the direct lane's answers carry besides the app's (HSTS over TLS).
        direct_extra: tuple[tuple[bytes, bytes], ...] = ()
        _direct: Any = None
        _direct_resolved = False
        #: The body pieces of the request the direct lane takes, while it arrives.
        _direct_body: list[bytes] | None = None
        #: Hands that request to the app if its body is not all here in time.
        _direct_timer: asyncio.TimerHandle | None = None

        def on_message_begin(self) -> None:  # the first byte of a request
            self._arm_head_timer()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            self._pick_app()
            if not self._take_direct():
                super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._direct_body is not None and self._direct_timer is None:
                # The body did not arrive with its head (HTTP clients that write them apart):
                # wait a moment for the rest, then hand the request to the app, whose guard
                # times a body that stalls.
                self._direct_timer = self.loop.call_later(DIRECT_BODY_WAIT_S, self._hand_over)

        def _hand_over(self) -> None:
            """Give the request the lane holds to the app, with the body so far."""
            self._direct_timer = None
            pieces, self._direct_body = self._direct_body, None
            if pieces is not None and not self.transport.is_closing():
                super().on_headers_complete()
                for piece in pieces:
                    super().on_body(piece)

        def connection_lost(self, exc: Exception | None) -> None:
            self._direct_body = None
            if self._direct_timer is not None:
                self._direct_timer.cancel()
                self._direct_timer = None
            super().connection_lost(exc)

        def on_body(self, body: bytes) -> None:
            pieces = self._direct_body
            if pieces is None:
                super().on_body(body)
            else:
                pieces.append(body)

        def on_message_complete(self) -> None:
            pieces = self._direct_body
            if pieces is None:
                super().on_message_complete()
                return
            self._direct_body = None
            if self._direct_timer is not None:
                self._direct_timer.cancel()
                self._direct_timer = None
            self._answer_direct(b"".join(pieces))

        def _lane(self) -> Any:
            if not self._direct_resolved:
                self._direct_resolved = True
                self._direct = _direct_lane_of(self._app)
            return self._direct

        def _take_direct(self) -> bool:
            """Whether the request whose head just arrived goes to the direct lane (see
            ``server/direct.py``): a kept-alive HTTP/1.1 ``POST …/invocations`` with a small
            ``Content-Length`` body, no request before it still being answered, nothing
            unusual; its scope is completed here as uvicorn would. A body not all here within
            :data:`DIRECT_BODY_WAIT_S` goes to the app after all (:meth:`data_received`)."""
            lane = self._lane()
            if lane is None or self.app is not self._app or self.root_path:
                return False
            cycle = self.cycle
            if (cycle is not None and not cycle.response_complete) or self.flow.write_paused:
                return False
            parser = self.parser
            if (
                parser.get_method() != b"POST"
                or self.expect_100_continue
                or parser.get_http_version() != "1.1"
                or not parser.should_keep_alive()
                or parser.should_upgrade()
            ):
                return False
            url = httptools.parse_url(self.url)
            raw_path: bytes = url.path
            if not raw_path.endswith(b"/invocations") or b"%" in raw_path:
                return False
            length: bytes | None = None
            for name, value in self.headers:
                if name == b"content-length":
                    if length is not None:
                        return False
                    length = value
                elif name == b"transfer-encoding":
                    return False
            if length is None or not length.isdigit() or int(length) > lane.max_body:
                return False
            scope = self.scope
            scope["method"] = "POST"
            scope["path"] = raw_path.decode("ascii")
            scope["raw_path"] = raw_path
            scope["query_string"] = url.query or b""
            self._direct_body = []
            return True

        def _answer_direct(self, body: bytes) -> None:
            """Write the direct lane's answer in one piece, as uvicorn ends a response; or
            hand the request to the ASGI app when the lane does not answer it."""
            try:
                answered = self._direct.answer(self.scope, body)
            except Exception:  # a bug before anything was done: the app answers instead
                log.exception("the direct lane failed; the request goes through the app")
                answered = None
            if answered is None:
                super().on_headers_complete()
                if body:
                    super().on_body(body)
                super().on_message_complete()
                return
            status, headers, payload = answered
            parts = [status_line(status)]
            for name, value in (*self.server_state.default_headers, *headers, *self.direct_extra):
                parts += (name, b": ", value, b"\r\n")
            parts += (b"\r\n", payload)
            transport = self.transport
            if isinstance(transport, CoalescingTransport):
                transport.write_now(b"".join(parts))
            else:  # pragma: no cover - connection_made always wraps it
                transport.write(b"".join(parts))
            if self.access_log:
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(self.scope),
                    "POST",
                    get_path_with_query_string(self.scope),
                    "1.1",
                    status,
                )
            self.on_response_complete()

    return HeadTimeoutHttpToolsProtocol


def _h11_protocol() -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11Protocol(_HeadTimeout, H11Protocol):
        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # the next request's head is arriving
                self._arm_head_timer()
            self._pick_app()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # h11 parsed the whole head
                self._disarm_head_timer()

    return HeadTimeoutH11Protocol


def http_protocol(
    head_timeout_s: float, implementation: str = "auto", *, hsts: bool = False
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a head timeout.

    Args:
        head_timeout_s: Seconds a connection may take to send a request's line and headers.
        implementation: ``"auto"``, ``"httptools"`` or ``"h11"``.
        hsts: Add ``Strict-Transport-Security`` to the answers uvicorn gives itself — past the
            connection limit, and to bytes that are not HTTP (TLS).
    """
    if implementation == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            implementation = "h11"
        else:
            implementation = "httptools"
    base = _httptools_protocol() if implementation == "httptools" else _h11_protocol()
    extra = (HSTS,) if hsts else ()
    over = functools.partial(_over_limit, extra=extra) if hsts else _over_limit
    return type(
        base.__name__,
        (base,),
        {
            "head_timeout_s": head_timeout_s,
            "over_limit": staticmethod(over),
            "bad_request": _bad_request(extra),
            "direct_extra": extra,
        },
    )


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    http: str = "auto",
) -> Any:
    """The ``uvicorn.Config`` every civicml server runs with (``civicml server`` and the tests):
    HTTPS with HSTS when ``settings`` name a TLS certificate and key.

    Returns:
        A ``uvicorn.Config``.

    Raises:
        ConfigurationError: the TLS files are incomplete, unreadable or do not match.
    """
    import uvicorn

    tls = tls_files(settings)
    ssl_options: dict[str, Any] = {}
    if tls is not None:
        app = _HSTSApp(app)
        ssl_options = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        http=http_protocol(settings.server_header_timeout_s, http, hsts=tls is not None),
        timeout_keep_alive=settings.server_keep_alive_timeout_s,
        limit_concurrency=settings.server_limit_concurrency,
        **ssl_options,
    )
