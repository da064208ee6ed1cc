"""The HTTP transport: uvicorn with a request-head timeout, keep-alive timeout and a connection
limit (settings ``server_header_timeout_s``, ``server_keep_alive_timeout_s``,
``server_limit_concurrency``; past the limit a request is answered 503 with the one error body).

uvicorn closes idle keep-alive connections, but a connection that opens and then sends a request
line or headers slowly (or never finishes them) is held forever: a few hundred of those
("slowloris") exhaust a server. :func:`http_protocol` adds a timer to uvicorn's own HTTP
protocol: it starts when the connection opens or its next request begins, stops when the
request's head is complete, and closes the connection when it fires. Everything else is
uvicorn's (the event loop's TCP_NODELAY, flow control, pipelining).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from civicml.core.settings import Settings
from civicml.server.errors import SECURITY_HEADERS, error_body

__all__ = ["http_protocol", "server_config"]

log = logging.getLogger("civicml.server")


async def _over_limit(scope: Scope, receive: Receive, send: Send) -> None:
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
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _HeadTimeout:
    """Mixin for a uvicorn HTTP protocol: close a connection whose request head is late, and
    answer requests past the connection limit with the one error body (uvicorn's own answer is
    plain text)."""

    head_timeout_s: float = 10.0
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
        self.app = _over_limit if over else self._app

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]


def _httptools_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadTimeoutHttpToolsProtocol(_HeadTimeout, HttpToolsProtocol):
        def on_message_begin(self) -> None:  # the first byte of a request
            self._arm_head_timer()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            self._pick_app()
            super().on_headers_complete()

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


def http_protocol(head_timeout_s: float, implementation: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a head timeout.

    Args:
        head_timeout_s: Seconds a connection may take to send a request's line and headers.
        implementation: ``"auto"``, ``"httptools"`` or ``"h11"``.
    """
    if implementation == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            implementation = "h11"
        else:
            implementation = "httptools"
    base = _httptools_protocol() if implementation == "httptools" else _h11_protocol()
    return type(base.__name__, (base,), {"head_timeout_s": head_timeout_s})


def server_config(
    app: Any,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    http: str = "auto",
) -> Any:
    """The ``uvicorn.Config`` every civicml server runs with (``civicml server`` and the tests).

    Returns:
        A ``uvicorn.Config``.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        http=http_protocol(settings.server_header_timeout_s, http),
        timeout_keep_alive=settings.server_keep_alive_timeout_s,
        limit_concurrency=settings.server_limit_concurrency,
    )
