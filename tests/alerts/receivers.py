"""Real receivers on loopback for the alert channels: a webhook server that checks the HMAC
signature, an SMTP server (aiosmtpd), and subscribers on the NATS, Redis and Mosquitto servers
this machine runs (skipped with a reason when absent, unless CIVICML_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from civicml.alerts.channels import verify_signature
from tests.conftest import free_port, service_available, skip_or_fail

SECRET = "test-hmac-secret-4f1c"


@dataclass
class Webhook:
    """What the webhook receiver got: every request, whether its signature verified."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Status codes to answer, in order (then 200 for ever).
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verified(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.requests if r["verified"]]


@contextlib.contextmanager
def webhook_receiver(secret: str = SECRET, path: str = "/hooks/civicml") -> Iterator[Webhook]:
    """A real HTTP server on loopback that checks ``X-Civicml-Signature`` with ``secret``."""
    port = free_port()
    hook = Webhook(url=f"http://127.0.0.1:{port}{path}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            ok = verify_signature(secret, headers, body)
            with hook.lock:
                hook.requests.append(
                    {
                        "path": self.path,
                        "headers": headers,
                        "body": json.loads(body),
                        "raw": body,
                        "verified": ok,
                    }
                )
                status = hook.answers.pop(0) if hook.answers else 200
            if not ok:
                status = 401
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[Message] = field(default_factory=list)


@contextlib.contextmanager
def smtp_receiver(login: tuple[str, str] | None = None) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives; with ``login``
    it accepts mail only after AUTH with that user and password."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(host="127.0.0.1", port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if login is not None and not session.authenticated:
                return "530 Authentication required"
            box.messages.append(message_from_bytes(envelope.content))
            return "250 Message accepted for delivery"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            login is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == login
        )
        return AuthResult(success=ok)

    extra: dict[str, Any] = (
        {} if login is None else {"authenticator": authenticator, "auth_require_tls": False}
    )
    controller = Controller(Handler(), hostname=box.host, port=box.port, **extra)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def need(port: int, what: str) -> None:
    if not service_available("127.0.0.1", port):
        skip_or_fail(f"{what} is not reachable on 127.0.0.1:{port}")


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@contextlib.contextmanager
def nats_subscriber(subject: str) -> Iterator[list[bytes]]:
    """Messages on ``subject`` of the NATS server on 127.0.0.1:4222, as they arrive."""
    need(4222, "NATS")
    import nats

    got: list[bytes] = []
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        client = await nats.connect("nats://127.0.0.1:4222")

        async def handler(msg: Any) -> None:
            got.append(msg.data)

        await client.subscribe(subject, cb=handler)
        await client.flush()
        ready.set()
        await stop.wait()
        await client.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the NATS subscriber did not start"
    try:
        yield got
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


@contextlib.contextmanager
def redis_subscriber(channel: str) -> Iterator[list[bytes]]:
    """Messages published on ``channel`` of the Redis server on 127.0.0.1:6379."""
    need(6379, "Redis")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    got: list[bytes] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                got.append(message["data"])

    first = None
    deadline = time.monotonic() + 10
    while first is None and time.monotonic() < deadline:  # the subscription is confirmed
        first = pubsub.get_message(timeout=0.5)
    assert first is not None and first["type"] == "subscribe", first
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        done.set()
        thread.join(timeout=5)
        pubsub.close()
        client.close()


@contextlib.contextmanager
def mqtt_subscriber(topic: str) -> Iterator[list[bytes]]:
    """Messages on ``topic`` of the Mosquitto broker on 127.0.0.1:1883."""
    need(1883, "Mosquitto (MQTT)")
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    assert subscribed.wait(10), "the MQTT subscriber did not subscribe"
    try:
        yield got
    finally:
        client.disconnect()
        client.loop_stop()
