"""What the server's lanes share: ASGI handlers that answer one hot request without FastAPI's
routing (invocations, ``routers/serving.py``; a short remote run's metric batches,
``routers/tracking.py``), inside the guard and the authentication layer."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Receive, Send

__all__ = ["read_body", "send_json"]


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (the guard has limited its size), or None when the client went
    away first (nobody to answer)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer ``body`` (JSON bytes) with ``status`` and the extra ``headers``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
