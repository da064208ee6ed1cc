"""The stream-source interface and the micro-batcher every broker shares.

A :class:`StreamSource` receives messages, tells which of them were committed before (a
redelivery), computes the position after a batch, and acknowledges messages to the broker. The
micro-batcher (:func:`consume`) closes a batch when it holds ``batch_rows`` messages or
``window_s`` seconds passed since its first message (or the stream went idle), has the batch
committed as a dataset version *with the position after it* in one transaction, and only then
acknowledges it. So:

* a crash before the commit leaves the messages unacknowledged: the broker delivers them again
  and the next run commits them (nothing lost);
* a crash after the commit but before the acknowledgement makes the broker deliver them again,
  and :meth:`StreamSource.committed` recognises them by the stored position — the stream
  sequence (NATS), the entry id (Redis Streams), or the last batch's packet ids / message ids
  and body hashes (MQTT, RabbitMQ, which number nothing across sessions) — so they are
  acknowledged and skipped (nothing twice).

A new broker is one more subclass (:mod:`civicml.sources.brokers`); a Kafka source would store
``{partition: offset}`` as its position, receive with ``Consumer.poll``, call a message
committed when its offset is at or below the stored one for its partition, and acknowledge by
committing offsets (``Consumer.commit(offsets=...)``) after the version.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from civicml.sources.connections import Target
from civicml.sources.schemas import StreamConfig

__all__ = ["Batch", "Message", "StreamSource", "consume"]


@dataclass(frozen=True, slots=True)
class Message:
    """One received message: its body, its broker token (sequence, entry id, packet id or
    delivery tag), whether the broker says it was delivered before, and an identity (message
    id or body hash) for brokers without sequence numbers."""

    body: bytes
    token: Any
    redelivered: bool = False
    identity: str = ""


@dataclass(slots=True)
class Batch:
    """The messages of one batch to commit, and what was received since the last
    acknowledgement (the batch plus skipped redeliveries)."""

    new: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)
    skipped: int = 0
    started: float | None = None


class StreamSource(ABC):
    """A broker client for one source run.

    Args:
        target: Where to connect (the real URL stays in memory only).
        config: What to consume.
        ident: The durable consumer / group / client id of the source.
    """

    def __init__(self, target: Target, config: StreamConfig, ident: str) -> None:
        self.target = target
        self.config = config
        self.ident = ident

    @abstractmethod
    def open(self, position: dict[str, Any]) -> None:
        """Connect and resume from ``position`` (the last committed one)."""

    @abstractmethod
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for the first."""

    @abstractmethod
    def committed(self, message: Message, position: dict[str, Any]) -> bool:
        """Whether ``message`` was committed already (a redelivery to skip)."""

    @abstractmethod
    def advance(self, position: dict[str, Any], batch: list[Message]) -> dict[str, Any]:
        """The position after ``batch`` is committed."""

    @abstractmethod
    def acknowledge(self, messages: list[Message]) -> None:
        """Tell the broker that ``messages`` are done (after their version committed)."""

    @classmethod
    @abstractmethod
    def lag(
        cls, target: Target, config: StreamConfig, ident: str, position: dict[str, Any]
    ) -> int | None:
        """What the broker holds for the source beyond what it acknowledged (read-only; None
        when the broker does not say)."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect; what is unacknowledged stays with the broker."""


Commit = Callable[[list[Message], dict[str, Any]], dict[str, Any]]


def consume(
    source: StreamSource,
    position: dict[str, Any],
    commit: Commit,
    *,
    renew: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, dict[str, Any]]:
    """Micro-batch ``source`` until it is idle or ``max_run_s`` passed.

    ``commit(messages, position_after)`` records one batch as a dataset version with the
    position after it, in one transaction, and returns the position as committed; only then are
    the batch (and the redeliveries skipped before it) acknowledged.

    Returns:
        Messages skipped, and the position after the last committed batch.
    """
    cfg = source.config
    start = clock()
    batch = Batch()
    skipped = 0
    while True:
        now = clock()
        over = now - start >= cfg.max_run_s
        window_left = (
            cfg.window_s if batch.started is None else cfg.window_s - (now - batch.started)
        )
        got: list[Message] = []
        if not over and window_left > 0 and len(batch.new) < cfg.batch_rows:
            got = source.receive(cfg.batch_rows - len(batch.new), min(cfg.idle_s, window_left))
        for message in got:
            batch.received.append(message)
            if source.committed(message, position):
                batch.skipped += 1
            else:
                if batch.started is None:
                    batch.started = clock()
                batch.new.append(message)
        full = len(batch.new) >= cfg.batch_rows
        timed = batch.started is not None and clock() - batch.started >= cfg.window_s
        idle = not got
        if idle and not batch.received:
            return skipped, position
        if batch.received and (full or timed or idle or over):
            if batch.new:
                position = commit(batch.new, source.advance(position, batch.new))
            source.acknowledge(batch.received)
            skipped += batch.skipped
            batch = Batch()
            renew()
        if over:  # an idle close goes on: acknowledging may release more (MQTT in-flight)
            return skipped, position
