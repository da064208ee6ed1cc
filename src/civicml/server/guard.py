"""Request guards: Host allowlist, JSON-only bodies, security headers (one pure ASGI layer).

Why JSON only: a web page can POST ``text/plain``, form-encoded or multipart bodies to any origin
without a CORS preflight, so a server on localhost that accepted them could be driven by any web
site the user visits. ``application/json`` (and ``application/octet-stream`` for artifact uploads)
need a preflight, which this server never grants. The Host allowlist stops DNS rebinding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from civicml.server.errors import SECURITY_HEADERS, error_body

__all__ = ["GuardMiddleware"]

_BODY_METHODS = {b"POST", b"PUT", b"PATCH", b"DELETE"}


class GuardMiddleware:
    """Refuse unknown Host headers and non-JSON bodies; add security headers to every answer."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str],
        binary_upload_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}
        self.allow_any = "*" in self.allowed
        self.binary_paths = [re.compile(p) for p in binary_upload_paths]

    def _cross_site(self, headers: dict[bytes, bytes]) -> bool:
        """A browser request from another site (a bodiless POST needs no preflight either)."""
        if headers.get(b"sec-fetch-site", b"") == b"cross-site":
            return True
        origin = headers.get(b"origin")
        if origin is None:
            return False  # not a browser (SDK, CLI, curl)
        netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
        return not netloc or (not self.allow_any and _strip_port(netloc) not in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if not self.allow_any and _strip_port(host) not in self.allowed:
            await _reject(
                send,
                400,
                f"Host {host!r} is not allowed.",
                "Add it to CIVICML_SERVER_ALLOWED_HOSTS if this server should answer to that name.",
            )
            return
        unsafe = scope["method"].encode() in _BODY_METHODS
        if unsafe and self._cross_site(headers):
            await _reject(
                send,
                403,
                "Cross-site requests may not change anything on this server.",
                "Call the API from the SDK, the CLI or a same-origin page.",
            )
            return
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if unsafe and (_has_body(headers) or ctype in _SIMPLE_TYPES):
            binary_ok = ctype == b"application/octet-stream" and any(
                pattern.fullmatch(scope["path"]) for pattern in self.binary_paths
            )
            if ctype != b"application/json" and not binary_ok:
                await _reject(
                    send,
                    415,
                    f"Request bodies must be application/json (got "
                    f"{ctype.decode('latin-1') or 'no content type'!r}).",
                    "Send JSON with 'Content-Type: application/json'; artifact uploads "
                    "use 'application/octet-stream'.",
                )
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A route's own security header wins (the HTML report's CSP allows its one
                # <style> by hash): browsers enforce every CSP sent, so appending ours would
                # block it again.
                headers = list(message.get("headers", []))
                own = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in SECURITY_HEADERS if h[0] not in own]
            await send(message)

        await self.app(scope, receive, send_with_headers)


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


async def _reject(send: Send, status: int, message: str, hint: str) -> None:
    body = json.dumps(error_body(status, message, hint=hint)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
