"""Schemas of sources that cross a boundary (SDK, REST, CLI ``--json``).

A :class:`Source` pulls rows from a database (a table or a query, in full or incrementally by a
watermark column) or from a message stream (NATS JetStream, Redis Streams, MQTT, RabbitMQ) into
versions of one dataset. Each pass is a :class:`SourceRun`; :class:`SourceStatus` adds what the
source still holds (lag) and the throughput of the last runs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

__all__ = [
    "MAX_QUERY_CHARS",
    "DatabaseConfig",
    "RunStatus",
    "Source",
    "SourceCreate",
    "SourceKind",
    "SourceRun",
    "SourceStatus",
    "SourceUpdate",
    "StreamConfig",
]

#: Longest SQL query a database source may hold.
MAX_QUERY_CHARS = 20_000
#: Longest connection URL or connection name.
MAX_URL_CHARS = 2_000


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceKind(StrEnum):
    """Where a source reads from."""

    DATABASE = "database"
    NATS = "nats"
    REDIS = "redis"
    MQTT = "mqtt"
    RABBITMQ = "rabbitmq"


class RunStatus(StrEnum):
    """How a run ended (``running`` while it runs)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    EMPTY = "empty"
    FAILED = "failed"


_NAME = r"^[A-Za-z_][A-Za-z0-9_$]{0,127}(\.[A-Za-z_][A-Za-z0-9_$]{0,127})?$"


class DatabaseConfig(_Schema):
    """What a database source extracts: a table or a query, in full or incrementally."""

    table: str | None = Field(
        default=None,
        pattern=_NAME,
        description="A table (or 'schema.table') to extract; exclusive with 'query'.",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="A single SELECT (or WITH ... SELECT) statement; exclusive with 'table'. "
        "Run in a read-only transaction.",
    )
    watermark: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_$]{0,127}$",
        description="Incremental extraction: a monotonic id or updated-at column; each run "
        "takes the rows above the last committed value. None: every run takes everything.",
    )
    chunk_rows: int = Field(
        default=50_000,
        ge=100,
        le=1_000_000,
        description="Rows fetched per round trip (server-side cursor); memory stays bounded "
        "by about this many rows.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> DatabaseConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give a table or a query (exactly one)")
        if self.query is not None:
            head = self.query.lstrip().split(None, 1)[0].lower() if self.query.strip() else ""
            if head not in ("select", "with"):
                raise ValueError("the query must be one SELECT (or WITH ... SELECT) statement")
            if ";" in self.query.strip().rstrip(";"):
                raise ValueError("the query must be one statement (no ';' inside)")
        return self


class StreamConfig(_Schema):
    """What a stream source consumes and how it batches messages into versions."""

    subject: str | None = Field(
        default=None,
        max_length=255,
        description="NATS: the subject (or wildcard) of a JetStream stream; MQTT: the topic "
        "filter; Redis: the stream key; RabbitMQ: the queue.",
    )
    stream: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="NATS: the JetStream stream name (default: the one holding the subject).",
    )
    group: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Redis consumer group / NATS durable consumer / MQTT client id "
        "(default civicml-<project>-<source>).",
    )
    batch_rows: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Messages per dataset version at most (size window).",
    )
    window_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="A version closes this many seconds after its first message (time window).",
    )
    idle_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="A run ends when no message arrives for this many seconds.",
    )
    max_run_s: float = Field(
        default=50.0,
        gt=0,
        le=86_400,
        description="A run ends after this many seconds at most (the last batch is committed); "
        "the default keeps a run by hand within a client's 60 s request timeout.",
    )


class SourceCreate(_Schema):
    """A new source."""

    name: str = Field(min_length=1, max_length=128, description="Unique in the project.")
    kind: SourceKind = Field(description="database, nats, redis, mqtt or rabbitmq.")
    connection: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="A named connection of the setting source_connections (the URL with its "
        "credentials stays in the settings); exclusive with 'url'.",
    )
    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="A URL without a password, e.g. postgresql+psycopg://etl@db:5432/agency "
        "or nats://127.0.0.1:4222; exclusive with 'connection'.",
    )
    dataset: str | None = Field(
        default=None,
        max_length=128,
        description="The dataset its versions go to (default: the source's name).",
    )
    database: DatabaseConfig | None = Field(
        default=None, description="Kind database: what to extract."
    )
    stream: StreamConfig | None = Field(
        default=None, description="Stream kinds: what to consume and how to batch it."
    )
    cron: str | None = Field(
        default=None, max_length=128, description="Run on this cron schedule (UTC)."
    )
    every: str | None = Field(
        default=None, max_length=32, description="Run at this interval instead, e.g. '15m'."
    )
    description: str = Field(default="", max_length=1024, description="What it is for.")
    enabled: bool = Field(default=True, description="False: created paused.")


class SourceUpdate(_Schema):
    """Changes to a source (what is None stays)."""

    cron: str | None = Field(default=None, max_length=128, description="A new cron schedule.")
    every: str | None = Field(default=None, max_length=32, description="A new interval.")
    unschedule: bool = Field(default=False, description="Drop the schedule (run by hand only).")
    enabled: bool | None = Field(default=None, description="Pause (False) or resume (True).")
    description: str | None = Field(default=None, max_length=1024, description="New text.")


class Source(_Schema):
    """A source as stored (never with credentials)."""

    id: str = Field(description="Source id.")
    project: str = Field(description="Project name.")
    name: str = Field(description="Source name.")
    kind: SourceKind = Field(description="database, nats, redis, mqtt or rabbitmq.")
    target: str = Field(
        description="Where it reads, without credentials: the URL with user and host only, or "
        "'connection:<name>'."
    )
    dataset: str = Field(description="The dataset its versions go to.")
    config: dict[str, JsonValue] = Field(description="The database or stream configuration.")
    cron: str | None = Field(default=None, description="Cron schedule (UTC), if any.")
    every_s: int | None = Field(default=None, description="Interval in seconds, if any.")
    next_run_at: datetime | None = Field(default=None, description="Next scheduled run (UTC).")
    enabled: bool = Field(description="Whether the scheduler runs it.")
    position: dict[str, JsonValue] = Field(
        description="The last committed position: watermark, stream sequence or entry id."
    )
    description: str = Field(default="", description="What it is for.")
    created_at: datetime = Field(description="When it was added (UTC).")
    created_by: str = Field(description="Who added it.")
    updated_at: datetime = Field(description="When it last changed (UTC).")


class SourceRun(_Schema):
    """One pass of a source: the versions it committed and how it ended."""

    id: str = Field(description="Run id.")
    source: str = Field(description="Source name.")
    trigger: Literal["manual", "schedule"] = Field(description="Who started it.")
    status: RunStatus = Field(description="running, succeeded, empty or failed.")
    started_at: datetime = Field(description="When it started (UTC).")
    ended_at: datetime | None = Field(default=None, description="When it ended (UTC).")
    rows: int = Field(description="Rows committed to dataset versions.")
    skipped: int = Field(
        description="Messages skipped: redeliveries of what was committed before, and bodies "
        "that are not JSON objects (counted, never stored)."
    )
    versions: list[int] = Field(description="Dataset versions it committed, in order.")
    position_before: dict[str, JsonValue] = Field(description="Position when it started.")
    position_after: dict[str, JsonValue] = Field(description="Position when it ended.")
    seconds: float | None = Field(default=None, description="How long it ran.")
    rows_per_s: float | None = Field(default=None, description="Throughput.")
    error: str | None = Field(default=None, description="Why it failed.")


class SourceStatus(_Schema):
    """A source with its lag and the throughput of its last runs."""

    source: Source = Field(description="The source.")
    lag: int | None = Field(
        default=None,
        description="What the source holds beyond the committed position: pending messages "
        "(as the broker counts them) or rows above the watermark; None when unknown.",
    )
    lag_capped: bool = Field(
        default=False, description="Whether the lag was counted only up to a cap."
    )
    lag_error: str | None = Field(default=None, description="Why the lag is unknown.")
    running: bool = Field(description="Whether a run holds the source now.")
    last_runs: list[SourceRun] = Field(description="The latest runs, newest first.")
    rows_per_s: float | None = Field(
        default=None, description="Rows per second over the last runs that committed rows."
    )


def config_of(kind: SourceKind, request: SourceCreate) -> dict[str, Any]:
    """The stored configuration of ``request`` (database or stream), checked for ``kind``.

    Raises:
        ValueError: The configuration does not fit the kind.
    """
    if kind is SourceKind.DATABASE:
        if request.database is None or request.stream is not None:
            raise ValueError("a database source takes 'database' (a table or a query)")
        return request.database.model_dump(mode="json")
    if request.stream is None or request.database is not None:
        raise ValueError(f"a {kind.value} source takes 'stream' (at least its subject)")
    if not request.stream.subject:
        raise ValueError(f"a {kind.value} source needs stream.subject")
    return request.stream.model_dump(mode="json")
