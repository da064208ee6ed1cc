"""The four brokers of stream sources: NATS JetStream, Redis Streams, MQTT and RabbitMQ.

* **NATS JetStream**: a durable pull consumer (``AckPolicy.ALL``: acknowledging a batch's last
  message acknowledges the batch); the position is the last committed stream sequence. A run
  that finds messages of a stopped run still unacknowledged recreates the consumer to start
  right after the committed sequence, so redeliveries never overtake new messages.
* **Redis Streams**: a consumer group with one consumer per source; a run first reads the
  consumer's own pending entries (delivered, never acknowledged), then new ones; the position
  is the last committed entry id.
* **MQTT**: QoS 1 with a persistent session (``clean_session=False``, the source's client id)
  and manual acknowledgement, so the broker resends what was not acknowledged (with the DUP
  flag and the same packet id); the position keeps the last batch's packet ids and body hashes.
  A broker sends at most its in-flight window unacknowledged (Mosquitto:
  ``max_inflight_messages``, 20 by default), which bounds a version's size.
* **RabbitMQ**: ``basic_consume`` with manual acknowledgement and a prefetch of the batch size;
  unacknowledged messages return to the queue when the connection closes, flagged redelivered;
  the position keeps the last batch's message ids (or body hashes).
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import uuid
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from civicml.core.errors import InvalidInputError, MissingExtraError
from civicml.sources.connections import Target
from civicml.sources.schemas import SourceKind, StreamConfig
from civicml.sources.streams import Message, StreamSource

__all__ = ["BROKERS", "MqttSource", "NatsSource", "RabbitSource", "RedisSource"]


def _need(module: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module.split(".", maxsplit=1)[0]) is None:
        raise MissingExtraError(f"A {package} stream source", "sources", package)


def _hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:24]


# NATS JetStream ---------------------------------------------------------------------------------
class _Loop:
    """An asyncio loop in a thread of its own (the caller may be inside an event loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, work: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class NatsSource(StreamSource):
    """A JetStream durable pull consumer (position ``{"stream_seq": n}``)."""

    def open(self, position: dict[str, Any]) -> None:
        _need("nats", "nats-py")
        self._io = _Loop()
        self._sub: Any = None
        self._nc: Any = None
        self._io.call(self._open(int(position.get("stream_seq", 0))))

    async def _open(self, committed: int) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        async def quiet(_error: Exception) -> None:
            return None

        self._nc = await nats.connect(
            self.target.url,
            connect_timeout=10,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # 0 would retry the first connect for ever
            reconnect_time_wait=0.5,
            error_cb=quiet,
        )
        self._js = self._nc.jetstream()
        subject = str(self.config.subject)
        try:
            self._stream = self.config.stream or await self._js.find_stream_name_by_subject(subject)
        except NotFoundError as err:
            raise InvalidInputError(
                f"No JetStream stream holds subject {subject!r}.",
                hint="Create the stream first (nats stream add), or name it in stream.stream.",
            ) from err
        stale = True
        try:
            info = await self._js.consumer_info(self._stream, self.ident)
            stale = bool(
                info.num_ack_pending
                or info.num_redelivered
                or info.delivered.stream_seq > committed
            )
            if stale:
                await self._js.delete_consumer(self._stream, self.ident)
        except NotFoundError:
            pass
        if stale:
            start = (
                {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": committed + 1}
                if committed
                else {"deliver_policy": DeliverPolicy.ALL}
            )
            await self._js.add_consumer(
                self._stream,
                ConsumerConfig(
                    durable_name=self.ident,
                    ack_policy=AckPolicy.ALL,
                    filter_subject=subject,
                    ack_wait=max(30.0, self.config.max_run_s + self.config.window_s),
                    max_ack_pending=-1,
                    **start,
                ),
            )
        self._sub = await self._js.pull_subscribe_bind(self.ident, self._stream)

    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        async def fetch() -> list[Any]:
            try:
                found: list[Any] = await self._sub.fetch(max_messages, timeout=timeout_s)
                return found
            except TimeoutError:
                # No message within the window: nats-py says so with nats.errors.TimeoutError,
                # and on some paths of a batch fetch with a bare asyncio.TimeoutError; both are
                # TimeoutError, and either means "none yet".
                return []

        got = self._io.call(fetch(), timeout_s + 30)
        return [
            Message(
                body=m.data,
                token=m,
                redelivered=m.metadata.num_delivered > 1,
                identity=str(m.metadata.sequence.stream),
            )
            for m in got
        ]

    def committed(self, message: Message, position: dict[str, Any]) -> bool:
        return int(message.identity) <= int(position.get("stream_seq", 0))

    def advance(self, position: dict[str, Any], batch: list[Message]) -> dict[str, Any]:
        return {"stream_seq": max(int(m.identity) for m in batch), "stream": self._stream}

    def acknowledge(self, messages: list[Message]) -> None:
        last = max(messages, key=lambda m: int(m.identity))
        self._io.call(last.token.ack_sync(timeout=10))

    @classmethod
    def lag(
        cls, target: Target, config: StreamConfig, ident: str, position: dict[str, Any]
    ) -> int | None:
        _need("nats", "nats-py")

        async def count() -> int:
            import nats
            from nats.js.errors import NotFoundError

            async def quiet(_error: Exception) -> None:
                return None

            nc = await nats.connect(
                target.url,
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # 0 would retry the first connect for ever
                reconnect_time_wait=0.5,
                error_cb=quiet,
            )
            try:
                js = nc.jetstream()
                stream = config.stream or await js.find_stream_name_by_subject(str(config.subject))
                try:
                    info = await js.consumer_info(stream, ident)
                    return int(info.num_pending + info.num_ack_pending)
                except NotFoundError:
                    state = (await js.stream_info(stream)).state
                    return max(0, int(state.last_seq) - int(position.get("stream_seq", 0)))
            finally:
                await nc.close()

        io = _Loop()
        try:
            return int(io.call(count(), 30))
        finally:
            io.stop()

    def close(self) -> None:
        try:
            if self._nc is not None:
                self._io.call(self._nc.close(), 10)
        finally:
            self._io.stop()


# Redis Streams ----------------------------------------------------------------------------------
class RedisSource(StreamSource):
    """A consumer group of a Redis stream (position ``{"entry_id": "ms-seq"}``)."""

    def open(self, position: dict[str, Any]) -> None:
        _need("redis", "redis")
        import redis

        self._r: Any = redis.Redis.from_url(self.target.url, socket_connect_timeout=10)
        self._key = str(self.config.subject)
        start = str(position.get("entry_id", "0"))
        try:
            self._r.xgroup_create(self._key, self.ident, id=start, mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._history: str | None = "0"  # this consumer's pending entries first

    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        if self._history is not None:
            got = self._r.xreadgroup(
                self.ident, "civicml", {self._key: self._history}, count=max_messages
            )
            entries = got[0][1] if got else []
            if entries:
                self._history = entries[-1][0].decode()
                return [_redis_message(e, True) for e in entries]
            self._history = None
        got = self._r.xreadgroup(
            self.ident,
            "civicml",
            {self._key: ">"},
            count=max_messages,
            block=max(1, int(timeout_s * 1000)),
        )
        return [_redis_message(e, False) for e in (got[0][1] if got else [])]

    def committed(self, message: Message, position: dict[str, Any]) -> bool:
        return _entry(message.identity) <= _entry(str(position.get("entry_id", "0-0")))

    def advance(self, position: dict[str, Any], batch: list[Message]) -> dict[str, Any]:
        last = max((m.identity for m in batch), key=_entry)
        return {"entry_id": last}

    def acknowledge(self, messages: list[Message]) -> None:
        ids = [m.identity for m in messages]
        for i in range(0, len(ids), 10_000):
            self._r.xack(self._key, self.ident, *ids[i : i + 10_000])

    @classmethod
    def lag(
        cls, target: Target, config: StreamConfig, ident: str, position: dict[str, Any]
    ) -> int | None:
        _need("redis", "redis")
        import redis

        client: Any = redis.Redis.from_url(target.url, socket_connect_timeout=5)
        try:
            key = str(config.subject)
            if not client.exists(key):
                return 0
            for group in client.xinfo_groups(key):
                if group["name"].decode() == ident:
                    lag = group.get("lag")
                    return int(group.get("pending", 0)) + (int(lag) if lag is not None else 0)
            return int(client.xlen(key))
        finally:
            client.close()

    def close(self) -> None:
        self._r.close()


def _entry(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _redis_message(entry: Any, redelivered: bool) -> Message:
    entry_id, fields = entry
    values = {k.decode(errors="replace"): v for k, v in fields.items()}
    if len(values) == 1:  # one field holding the JSON body
        body = next(iter(values.values()))
    else:
        import json

        body = json.dumps({k: v.decode(errors="replace") for k, v in values.items()}).encode()
    return Message(body=body, token=entry_id, redelivered=redelivered, identity=entry_id.decode())


# MQTT -------------------------------------------------------------------------------------------
class MqttSource(StreamSource):
    """QoS 1 on a persistent session (position: the last batch's packet ids and hashes)."""

    def open(self, position: dict[str, Any]) -> None:
        _need("paho.mqtt", "paho-mqtt")
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        parts = urlsplit(self.target.url)
        self._inbox: queue.Queue[Any] = queue.Queue()
        ready = threading.Event()
        self._failure: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.ident,
            clean_session=False,
            manual_ack=True,
        )
        if parts.username:
            client.username_pw_set(parts.username, parts.password)
        if parts.scheme == "mqtts":
            import ssl

            client.tls_set_context(ssl.create_default_context())

        def connected(c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                self._failure = str(reason)
                ready.set()
                return
            c.subscribe(str(self.config.subject), qos=1)

        def subscribed(_c: Any, _u: Any, _mid: Any, _codes: Any, _p: Any) -> None:
            ready.set()

        client.on_connect = connected
        client.on_subscribe = subscribed
        client.on_message = lambda _c, _u, msg: self._inbox.put(msg)
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        client.connect(parts.hostname or "", port, keepalive=60)
        client.loop_start()
        self._client = client
        if not ready.wait(15) or self._failure:
            raise ConnectionError(f"MQTT broker refused the session: {self._failure or 'timeout'}")

    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        out: list[Message] = []
        try:
            first = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return out
        for msg in (first, *_drain(self._inbox, max_messages - 1)):
            out.append(
                Message(
                    body=msg.payload,
                    token=msg,
                    redelivered=bool(msg.dup),
                    identity=f"{msg.mid}:{_hash(msg.payload)}",
                )
            )
        return out

    def committed(self, message: Message, position: dict[str, Any]) -> bool:
        return message.redelivered and message.identity in set(position.get("last_batch", []))

    def advance(self, position: dict[str, Any], batch: list[Message]) -> dict[str, Any]:
        return {"last_batch": [m.identity for m in batch]}

    def acknowledge(self, messages: list[Message]) -> None:
        for message in messages:
            self._client.ack(message.token.mid, message.token.qos)

    @classmethod
    def lag(
        cls, target: Target, config: StreamConfig, ident: str, position: dict[str, Any]
    ) -> int | None:
        return None  # an MQTT broker does not say what a session holds

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _drain(inbox: queue.Queue[Any], most: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < most:
        try:
            out.append(inbox.get_nowait())
        except queue.Empty:
            break
    return out


# RabbitMQ ---------------------------------------------------------------------------------------
class RabbitSource(StreamSource):
    """A queue with manual acknowledgement (position: the last batch's ids or hashes)."""

    def open(self, position: dict[str, Any]) -> None:
        _need("pika", "pika")
        import pika  # type: ignore[import-untyped]

        params = pika.URLParameters(self.target.url)
        params.socket_timeout = 10
        params.client_properties = {"connection_name": self.ident}
        self._conn = pika.BlockingConnection(params)
        self._ch = self._conn.channel()
        self._queue = str(self.config.subject)
        try:
            self._ch.queue_declare(self._queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as err:
            raise InvalidInputError(
                f"RabbitMQ has no queue {self._queue!r}.",
                hint="Declare the queue first (the source consumes, it does not create it).",
            ) from err
        self._ch.basic_qos(prefetch_count=min(self.config.batch_rows, 65_535))
        self._tag = f"civicml-{uuid.uuid4().hex[:12]}"
        self._inbox: list[Any] = []
        self._ch.basic_consume(
            self._queue,
            lambda _c, method, props, body: self._inbox.append((method, props, body)),
            auto_ack=False,
            consumer_tag=self._tag,
        )

    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        if not self._inbox:
            self._conn.process_data_events(time_limit=timeout_s)
        taken, self._inbox = self._inbox[:max_messages], self._inbox[max_messages:]
        return [
            Message(
                body=body,
                token=method.delivery_tag,
                redelivered=bool(method.redelivered),
                identity=props.message_id or _hash(body),
            )
            for method, props, body in taken
        ]

    def committed(self, message: Message, position: dict[str, Any]) -> bool:
        return message.redelivered and message.identity in set(position.get("last_batch", []))

    def advance(self, position: dict[str, Any], batch: list[Message]) -> dict[str, Any]:
        return {"last_batch": [m.identity for m in batch]}

    def acknowledge(self, messages: list[Message]) -> None:
        self._ch.basic_ack(delivery_tag=max(m.token for m in messages), multiple=True)

    @classmethod
    def lag(
        cls, target: Target, config: StreamConfig, ident: str, position: dict[str, Any]
    ) -> int | None:
        _need("pika", "pika")
        import pika

        params = pika.URLParameters(target.url)
        params.socket_timeout = 5
        conn = pika.BlockingConnection(params)
        try:
            declared = conn.channel().queue_declare(str(config.subject), passive=True)
            return int(declared.method.message_count)
        finally:
            conn.close()

    def close(self) -> None:
        try:
            if self._conn.is_open:
                self._conn.close()  # unacknowledged deliveries go back to the queue
        except Exception:  # noqa: S110 - closing a broken connection
            pass


BROKERS: dict[SourceKind, type[StreamSource]] = {
    SourceKind.NATS: NatsSource,
    SourceKind.REDIS: RedisSource,
    SourceKind.MQTT: MqttSource,
    SourceKind.RABBITMQ: RabbitSource,
}
