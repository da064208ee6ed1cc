"""Delivering one alert message to one channel: webhook, e-mail, NATS, Redis or MQTT.

Each sender makes *one* try and says how it went (:class:`Sent`); the service retries with
backoff and records every try. A sender never raises: a refused connection, a timeout, a
receiver's error or a missing client library is a failed :class:`Sent` whose text names no
secret (:func:`scrub` removes the configured secrets and broker URLs from it).

**Webhook signatures.** The body is signed with HMAC-SHA256 under a secret from the
``alerts_webhook_secrets`` setting: ``X-Civicml-Signature: sha256=<hex>`` over
``"<timestamp>.<body>"``, where ``X-Civicml-Timestamp`` is the Unix time of the try. A receiver
recomputes it (:func:`verify_signature`) and refuses a timestamp more than five minutes away,
so a captured request cannot be replayed later; ``X-Civicml-Delivery`` (the notification id)
is the same on every retry of one notification, so a receiver can drop duplicates. Redirects
are never followed (a redirect could carry the signed body elsewhere).

Broker clients (``nats-py``, ``redis``, ``paho-mqtt``) are the optional ``alerts`` extra; a
missing one is a failed try naming the ``pip install`` line. Broker addresses and credentials
come only from settings, never from a rule.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from civicml.alerts.schemas import (
    Channel,
    EmailChannel,
    MqttChannel,
    NatsChannel,
    RedisChannel,
    WebhookChannel,
)
from civicml.core.errors import ConfigurationError, MissingExtraError
from civicml.core.settings import Settings

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "Sent",
    "check_channel",
    "scrub",
    "send",
    "sign",
    "target",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Civicml-Signature"
TIMESTAMP_HEADER = "X-Civicml-Timestamp"
DELIVERY_HEADER = "X-Civicml-Delivery"
#: How far a receiver should accept a signature's timestamp from its own clock (seconds).
TOLERANCE_S = 300
_ERROR_MAX = 500
#: Broker client of each channel type: (import name, pip package).
_CLIENTS = {
    "nats": ("nats", "nats-py"),
    "redis": ("redis", "redis"),
    "mqtt": ("paho.mqtt", "paho-mqtt"),
}


@dataclass(frozen=True, slots=True)
class Sent:
    """How one try went. ``retry``: a later try may succeed (timeouts, 5xx, refused
    connections); False for what will not change (a 4xx answer, a missing setting)."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry: bool = True


# Signatures -------------------------------------------------------------------------------------
def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Civicml-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of
    ``"<timestamp>.<body>"`` under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """What a webhook receiver checks: the signature matches the body and the timestamp, and
    the timestamp is within ``tolerance_s`` of ``now`` (a replayed request is refused).

    Example:
        >>> body = b'{"type": "alert.fired"}'
        >>> headers = {"X-Civicml-Timestamp": "1700000000",
        ...            "X-Civicml-Signature": sign("s3cret", 1700000000, body)}
        >>> verify_signature("s3cret", headers, body, now=1700000010)
        True
        >>> verify_signature("s3cret", headers, body, now=1700009999)
        False
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not raw.isdigit():
        return False
    moment = int(raw)
    if abs((time.time() if now is None else now) - moment) > tolerance_s:
        return False
    return hmac.compare_digest(given, sign(secret, moment, body))


# Checks at rule creation --------------------------------------------------------------------
def _host_allowed(host: str, allowed: list[str]) -> bool:
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for pattern in allowed:
        item = pattern.lower().rstrip(".")
        if item == host or (item.startswith("*.") and host.endswith(item[1:])):
            return True
    return False


def check_channel(channel: Channel, settings: Settings) -> None:
    """Refuse a channel this server cannot deliver to: a webhook secret or broker URL that
    is not configured, a host outside ``alerts_webhook_allowed_hosts``, a missing client.

    Raises:
        ConfigurationError: What is missing and the setting to set (400).
        MissingExtraError: The broker's client library is not installed.
    """
    if isinstance(channel, WebhookChannel):
        if channel.secret not in settings.alerts_webhook_secrets:
            raise ConfigurationError(
                f"No webhook secret named {channel.secret!r} is configured, so the webhook's "
                "body could not be signed.",
                hint="Set it on the server: CIVICML_ALERTS_WEBHOOK_SECRETS='{\""
                f'{channel.secret}": "<random secret>"}}\' (docs/alerts.md, Webhooks).',
            )
        host = urlsplit(channel.url).hostname or ""
        if not _host_allowed(host, settings.alerts_webhook_allowed_hosts):
            raise ConfigurationError(
                f"Webhook host {host!r} is not in the alerts_webhook_allowed_hosts setting.",
                hint="Post to an allowed host, or ask the operator to add it.",
            )
    elif isinstance(channel, EmailChannel):
        if not settings.alerts_smtp_host or not settings.alerts_smtp_from:
            raise ConfigurationError(
                "E-mail alerts need an SMTP server: alerts_smtp_host and alerts_smtp_from are "
                "not both set.",
                hint="Set CIVICML_ALERTS_SMTP_HOST and CIVICML_ALERTS_SMTP_FROM on the server.",
            )
    else:
        url = _broker_url(channel, settings)
        if url is None:
            name = f"alerts_{channel.type}_url"
            raise ConfigurationError(
                f"{channel.type.upper()} alerts need the {name} setting, which is not set.",
                hint=f"Set CIVICML_{name.upper()} on the server (docs/alerts.md).",
            )
        module, package = _CLIENTS[channel.type]
        _client_module(module, package, channel.type)


def _client_module(module: str, package: str, kind: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{kind.upper()} alert channels", "alerts", package) from err


def _broker_url(channel: Channel, settings: Settings) -> str | None:
    value = {
        "nats": settings.alerts_nats_url,
        "redis": settings.alerts_redis_url,
        "mqtt": settings.alerts_mqtt_url,
    }.get(channel.type)
    return None if value is None else value.get_secret_value()


def target(channel: Channel) -> str:
    """Where a channel sends, for people: no query string, no credential."""
    if isinstance(channel, WebhookChannel):
        parts = urlsplit(channel.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"[:512]
    if isinstance(channel, EmailChannel):
        return ("email " + ", ".join(channel.to))[:512]
    if isinstance(channel, NatsChannel):
        return f"nats subject {channel.subject}"
    if isinstance(channel, RedisChannel):
        return f"redis {channel.mode} {channel.channel}"
    return f"mqtt topic {channel.topic} (qos {channel.qos})"


def scrub(text: str, settings: Settings) -> str:
    """``text`` with every configured secret and broker URL (and their passwords) replaced by
    ``***``, shortened to 500 characters."""
    secrets: list[str] = [s.get_secret_value() for s in settings.alerts_webhook_secrets.values()]
    for value in (
        settings.alerts_smtp_password,
        settings.alerts_nats_url,
        settings.alerts_redis_url,
        settings.alerts_mqtt_url,
    ):
        if value is not None:
            secret = value.get_secret_value()
            secrets.append(secret)
            password = urlsplit(secret).password if "://" in secret else None
            if password:
                secrets.append(password)
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text[:_ERROR_MAX]


def _failure(err: BaseException, settings: Settings, *, retry: bool = True) -> Sent:
    message = str(err) or type(err).__name__
    return Sent(ok=False, error=scrub(f"{type(err).__name__}: {message}", settings), retry=retry)


# Sending ----------------------------------------------------------------------------------------
def send(
    channel: Channel,
    message: Mapping[str, Any],
    settings: Settings,
    *,
    notification_id: str,
    clock: Callable[[], float] = time.time,
) -> Sent:
    """One try of delivering ``message`` (JSON) to ``channel``; never raises."""
    body = json.dumps(message, sort_keys=True, separators=(",", ":"), default=str).encode()
    try:
        if isinstance(channel, WebhookChannel):
            return _webhook(channel, body, settings, notification_id, clock)
        if isinstance(channel, EmailChannel):
            return _email(channel, message, body, settings)
        url = _broker_url(channel, settings)
        if url is None:
            return Sent(
                ok=False,
                error=f"The alerts_{channel.type}_url setting is not set on this server.",
                retry=False,
            )
        if isinstance(channel, NatsChannel):
            return _nats(channel, url, body, settings)
        if isinstance(channel, RedisChannel):
            return _redis(channel, url, body, settings)
        return _mqtt(channel, url, body, settings)
    except MissingExtraError as err:
        return Sent(ok=False, error=f"{err.message} {err.hint}", retry=False)
    except ConfigurationError as err:
        return Sent(ok=False, error=scrub(err.message, settings), retry=False)
    except Exception as err:  # a failed try is recorded, never raised into the loop
        return _failure(err, settings)


def _webhook(
    channel: WebhookChannel,
    body: bytes,
    settings: Settings,
    notification_id: str,
    clock: Callable[[], float],
) -> Sent:
    import httpx

    check_channel(channel, settings)  # the secret and the host, as they are now
    secret = settings.alerts_webhook_secrets[channel.secret].get_secret_value()
    timestamp = int(clock())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "civicml-alerts",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: notification_id,
    }
    try:
        response = httpx.post(
            channel.url,
            content=body,
            headers=headers,
            timeout=settings.alerts_delivery_timeout_s,
            follow_redirects=False,
        )
    except httpx.HTTPError as err:
        text = str(err).replace(channel.url, target(channel)) or type(err).__name__
        return Sent(ok=False, error=scrub(f"{type(err).__name__}: {text}", settings))
    code = response.status_code
    if 200 <= code < 300:
        return Sent(ok=True, status_code=code)
    retry = code >= 500 or code in (408, 425, 429)
    why = "redirects are not followed" if 300 <= code < 400 else response.reason_phrase
    return Sent(ok=False, status_code=code, error=f"HTTP {code} {why}".strip(), retry=retry)


def _subject(message: Mapping[str, Any]) -> str:
    kind = str(message.get("type", "alert")).removeprefix("alert.").upper()
    return (
        f"[civicml] {kind} {message.get('severity', '')}: {message.get('rule', '')} on "
        f"{message.get('subject', '')} ({message.get('project', '')})"
    )[:250]


def _email(
    channel: EmailChannel, message: Mapping[str, Any], body: bytes, settings: Settings
) -> Sent:
    check_channel(channel, settings)
    mail = EmailMessage()
    mail["Subject"] = _subject(message)
    mail["From"] = str(settings.alerts_smtp_from)
    mail["To"] = ", ".join(channel.to)
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@civicml>"
    lines = [str(message.get("message", ""))]
    for key in ("project", "rule", "subject", "severity", "condition", "value", "at"):
        lines.append(f"{key}: {message.get(key)}")
    mail.set_content("\n".join(lines) + "\n\n" + body.decode() + "\n")
    timeout = settings.alerts_delivery_timeout_s
    try:
        with smtplib.SMTP(
            str(settings.alerts_smtp_host), settings.alerts_smtp_port, timeout=timeout
        ) as smtp:
            if settings.alerts_smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.alerts_smtp_username:
                password = settings.alerts_smtp_password
                smtp.login(
                    settings.alerts_smtp_username,
                    password.get_secret_value() if password is not None else "",
                )
            smtp.send_message(mail)
    except smtplib.SMTPResponseException as err:
        permanent = 500 <= err.smtp_code < 600
        return _failure(err, settings, retry=not permanent)
    except (smtplib.SMTPException, OSError) as err:
        return _failure(err, settings)
    return Sent(ok=True)


def _in_thread(work: Callable[[], Any], timeout: float) -> Any:
    """Run an asyncio client in a thread of its own (the caller may be inside an event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="civicml-alert") as pool:
        return pool.submit(work).result(timeout=timeout + 5)


def _nats(channel: NatsChannel, url: str, body: bytes, settings: Settings) -> Sent:
    nats = _client_module("nats", "nats-py", "nats")
    timeout = settings.alerts_delivery_timeout_s

    async def quiet(_error: Exception) -> None:  # the failure is raised and recorded instead
        return None

    async def publish() -> None:
        client = await nats.connect(
            url,
            connect_timeout=timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=quiet,
        )
        try:
            await client.publish(
                channel.subject, body, headers={"Content-Type": "application/json"}
            )
            await client.flush(timeout=timeout)
        finally:
            await client.close()

    _in_thread(lambda: asyncio.run(asyncio.wait_for(publish(), timeout)), timeout)
    return Sent(ok=True)


def _redis(channel: RedisChannel, url: str, body: bytes, settings: Settings) -> Sent:
    redis = _client_module("redis", "redis", "redis")
    timeout = settings.alerts_delivery_timeout_s
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        if channel.mode == "stream":
            client.xadd(channel.channel, {"alert": body}, maxlen=100_000, approximate=True)
        else:
            client.publish(channel.channel, body)
    finally:
        client.close()
    return Sent(ok=True)


def _mqtt(channel: MqttChannel, url: str, body: bytes, settings: Settings) -> Sent:
    _client_module("paho.mqtt", "paho-mqtt", "mqtt")
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
        return Sent(
            ok=False, error="alerts_mqtt_url is not mqtt://host:port or mqtts://...", retry=False
        )
    timeout = settings.alerts_delivery_timeout_s
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"civicml-alerts-{uuid.uuid4().hex[:12]}"
    )
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    if parts.scheme == "mqtts":
        client.tls_set_context(ssl.create_default_context())
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    client.connect(parts.hostname, port, keepalive=max(5, int(timeout) * 2))
    client.loop_start()
    try:
        info = client.publish(channel.topic, body, qos=channel.qos)
        info.wait_for_publish(timeout=timeout)
        if not info.is_published():
            return Sent(
                ok=False, error=f"The MQTT broker did not acknowledge within {timeout:g} s."
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return Sent(ok=True)
