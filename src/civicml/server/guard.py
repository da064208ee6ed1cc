"""Request guards: Host allowlist, JSON-only bodies, body size limits, no compressed bodies,
security headers (one pure ASGI layer).

Why JSON only: a web page can POST ``text/plain``, form-encoded or multipart bodies to any origin
without a CORS preflight, so a server on localhost that accepted them could be driven by any web
site the user visits. ``application/json`` (and ``application/octet-stream`` for artifact uploads)
need a preflight, which this server never grants. The Host allowlist stops DNS rebinding.

Body limits: every route has one (uploads, invocations, everything else; see
:class:`BodyLimits`). A ``Content-Length`` above it is answered 413 before a byte is read; a
chunked body is counted as it arrives and refused (413) the moment it passes the limit, so no
route ever holds more than its limit. A ``Content-Encoding`` other than ``identity`` is refused
(415): inflating a body is a zip bomb away from exhausting memory, and no client needs it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from civicml.core.errors import PayloadTooLargeError, RequestTimeoutError
from civicml.server.errors import SECURITY_HEADERS, error_body

__all__ = ["BodyLimits", "GuardMiddleware", "Refusal"]

_BODY_METHODS = {b"POST", b"PUT", b"PATCH", b"DELETE"}


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The largest body, in bytes, each kind of route takes (settings ``server_max_*_bytes``)."""

    json: int = 1 << 20
    invocation: int = 6 << 20
    upload: int = 1 << 30
    #: Longest wait for the next chunk of a body (setting ``server_body_timeout_s``).
    body_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the guard refuses: the status and the one error body's parts."""

    status: int
    message: str
    hint: str | None
    error: str | None = None
    details: list[dict[str, Any]] | None = None


_SETTING = {
    "json": "CIVICML_SERVER_MAX_BODY_BYTES",
    "invocation": "CIVICML_SERVER_MAX_INVOCATION_BYTES",
    "upload": "CIVICML_SERVER_MAX_UPLOAD_BYTES",
}
_SPLIT = {
    "json": "split it into several requests (for example fewer metrics per batch)",
    "invocation": "send fewer records per invocation",
    "upload": "upload a smaller file",
}


def too_large(kind: str, limit: int, size: int | None = None) -> PayloadTooLargeError:
    """The 413 for a body over ``limit`` bytes on a route of ``kind``."""
    got = f" ({size:,} bytes)" if size is not None else ""
    return PayloadTooLargeError(
        f"The request body{got} is larger than the {limit:,} bytes this server accepts on "
        "this route.",
        hint=f"Send at most {limit:,} bytes: {_SPLIT[kind]}. The server's limit is the "
        f"setting {_SETTING[kind]}.",
        details=[{"limit_bytes": limit, "kind": kind}],
    )


def slow_body(timeout: float, received: int) -> RequestTimeoutError:
    """The answer to a body whose next piece did not come within ``timeout`` seconds."""
    return RequestTimeoutError(
        f"The request body stalled: nothing arrived for {timeout:g} s after {received:,} bytes.",
        hint="Send the whole body without pauses; the server's limit is the setting "
        "CIVICML_SERVER_BODY_TIMEOUT_S.",
        details=[{"timeout_s": timeout, "received_bytes": received}],
    )


class GuardMiddleware:
    """Refuse unknown Host headers, non-JSON, compressed and oversized bodies; add security
    headers to every answer."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str],
        binary_upload_paths: Iterable[str] = (),
        invocation_paths: Iterable[str] = (),
        limits: BodyLimits | None = None,
    ) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}
        self.allow_any = "*" in self.allowed
        self.binary_paths = [re.compile(p) for p in binary_upload_paths]
        self.invocation_paths = [re.compile(p) for p in invocation_paths]
        self.limits = limits or BodyLimits()

    def _limit(self, path: str) -> tuple[str, int]:
        if any(p.fullmatch(path) for p in self.invocation_paths):
            return "invocation", self.limits.invocation
        if any(p.fullmatch(path) for p in self.binary_paths):
            return "upload", self.limits.upload
        return "json", self.limits.json

    def _cross_site(self, headers: dict[bytes, bytes]) -> bool:
        """A browser request from another site (a bodiless POST needs no preflight either)."""
        if headers.get(b"sec-fetch-site", b"") == b"cross-site":
            return True
        origin = headers.get(b"origin")
        if origin is None:
            return False  # not a browser (SDK, CLI, curl)
        netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
        return not netloc or (not self.allow_any and _strip_port(netloc) not in self.allowed)

    def refusal(
        self, scope: Scope, headers: dict[bytes, bytes], bounds: tuple[str, int] | None = None
    ) -> Refusal | None:
        """Why this guard refuses an HTTP request, from its head alone (``headers``: the
        request's headers as a dict), or None when the request may go on: an unknown Host, a
        cross-site request that changes something, a body that is not JSON, a compressed
        body, a declared body over the route's limit. The server's direct lane
        (:class:`~civicml.server.direct.DirectLane`) asks the same question before answering an
        invocation itself. ``bounds``: the route's (kind, limit) when the caller has it
        already."""
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if not self.allow_any and _strip_port(host) not in self.allowed:
            return Refusal(
                400,
                f"Host {host!r} is not allowed.",
                "Add it to CIVICML_SERVER_ALLOWED_HOSTS if this server should answer to that name.",
            )
        unsafe = scope["method"].encode() in _BODY_METHODS
        if unsafe and self._cross_site(headers):
            return Refusal(
                403,
                "Cross-site requests may not change anything on this server.",
                "Call the API from the SDK, the CLI or a same-origin page.",
            )
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if unsafe and (_has_body(headers) or ctype in _SIMPLE_TYPES):
            binary_ok = ctype == b"application/octet-stream" and any(
                pattern.fullmatch(scope["path"]) for pattern in self.binary_paths
            )
            if ctype != b"application/json" and not binary_ok:
                return Refusal(
                    415,
                    f"Request bodies must be application/json (got "
                    f"{ctype.decode('latin-1') or 'no content type'!r}).",
                    "Send JSON with 'Content-Type: application/json'; artifact uploads "
                    "use 'application/octet-stream'.",
                )
        encoding = headers.get(b"content-encoding", b"").strip().lower()
        if encoding not in (b"", b"identity"):
            return Refusal(
                415,
                f"Content-Encoding {encoding.decode('latin-1')!r} is not accepted.",
                "Send the body uncompressed (no Content-Encoding header).",
                error="UnsupportedMediaTypeError",
            )
        length = headers.get(b"content-length")
        if length is not None:
            declared = _content_length(length)
            if declared is None:
                return Refusal(
                    400,
                    f"Content-Length {length.decode('latin-1')!r} is not a byte count.",
                    "Send the body's length in bytes, or let the HTTP client set it.",
                )
            kind, limit = bounds or self._limit(scope["path"])
            if declared > limit:
                err = too_large(kind, limit, declared)
                return Refusal(err.status, err.message, err.hint, details=err.details)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        kind, limit = self._limit(scope["path"])
        refused = self.refusal(scope, headers, (kind, limit))
        if refused is not None:
            await _reject(
                send,
                refused.status,
                refused.message,
                refused.hint,
                error=refused.error,
                details=refused.details,
            )
            return

        received = 0
        body_done = not _has_body(headers)
        timeout = self.limits.body_timeout_s

        async def counted_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect has no deadline
                return await receive()
            # A small body has mostly arrived with the head, and receive() answers without
            # waiting: run it one step first, and put a deadline (a timer scheduled, then
            # cancelled) only on a receive that does wait.
            pending = receive()
            try:
                if not isinstance(pending, Coroutine):
                    raise _Waits
                waiting = pending.send(None)
            except StopIteration as done:
                message: Message = done.value
            except _Waits:
                message = await _with_deadline(pending, timeout, received)
            else:
                message = await _with_deadline(_Resumed(pending, waiting), timeout, received)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body (or one longer than it said)
                    raise too_large(kind, limit)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # A route's own security header wins (the HTML report's CSP allows its one
                # <style> by hash): browsers enforce every CSP sent, so appending ours would
                # block it again.
                headers = list(message.get("headers", []))
                own = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in SECURITY_HEADERS if h[0] not in own]
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_headers)
        except (PayloadTooLargeError, RequestTimeoutError) as err:
            # Routes under FastAPI answer it themselves; this catches the invocations lane.
            if started:
                raise
            await _reject(send, err.status, err.message, err.hint, details=err.details)


class _Waits(Exception):
    """receive() gave an awaitable that is not a coroutine: await it under the deadline."""


async def _with_deadline(pending: Awaitable[Message], timeout: float, received: int) -> Message:
    try:
        # asyncio.timeout, not wait_for: wait_for runs receive() in a task of its own, a trip
        # through the event loop for every piece of every body
        async with asyncio.timeout(timeout):
            return await pending
    except TimeoutError:
        raise slow_body(timeout, received) from None


class _Resumed:
    """Await a coroutine that has run its first step and waits on ``waiting``: hand what it
    waits on to the task, resume it when that is done, pass a cancellation (the deadline) in."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Message], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, None, Message]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as err:  # handed to the coroutine
                try:
                    waiting = coro.throw(err)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
            try:
                waiting = coro.send(None)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


# The content types a browser sends cross-site without a CORS preflight.
_SIMPLE_TYPES = {b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data"}


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers


def _content_length(value: bytes) -> int | None:
    """The declared length (capped at 10**18), or None when it is not a byte count."""
    text = value.strip()
    if not text.isdigit():
        return None
    return int(text) if len(text) <= 18 else 10**18


async def _reject(
    send: Send,
    status: int,
    message: str,
    hint: str | None,
    *,
    error: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> None:
    body = json.dumps(error_body(status, message, hint=hint, error=error, details=details)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
