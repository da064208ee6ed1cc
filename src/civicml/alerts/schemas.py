"""Schemas of alerts that cross a boundary: rules, channels, alerts, notifications, outcomes.

Channels hold *where* to send, never a secret: a webhook names its HMAC secret by the name it
has in the ``alerts_webhook_secrets`` setting; SMTP and broker addresses and credentials come
from settings (``alerts_smtp_*``, ``alerts_nats_url``, ``alerts_redis_url``,
``alerts_mqtt_url``), so nothing in the metadata database can be used to impersonate civicml.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_CHANNELS",
    "Alert",
    "AlertStatus",
    "Channel",
    "DeliveryAttempt",
    "EmailChannel",
    "EvaluationOutcome",
    "EvaluationResult",
    "MqttChannel",
    "NatsChannel",
    "Notification",
    "RedisChannel",
    "Rule",
    "RuleCreate",
    "RuleTestResult",
    "Severity",
    "Source",
    "WebhookChannel",
]

MAX_CHANNELS = 8
MAX_WINDOW_S = 86_400
_TOPIC = re.compile(r"^[A-Za-z0-9_.:/>*#+-]{1,200}$")
_ADDRESS = re.compile(r"^[^@\s<>,;:\"]{1,64}@[A-Za-z0-9.-]{1,190}$")


class Severity(StrEnum):
    """How bad it is (recorded and sent; it changes nothing else)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Source(StrEnum):
    """What a rule watches."""

    ENDPOINT = "endpoint"
    MONITORING = "monitoring"


class AlertStatus(StrEnum):
    """An alert fires once and resolves once."""

    FIRING = "firing"
    RESOLVED = "resolved"


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Channels -------------------------------------------------------------------------------------
class WebhookChannel(_Schema):
    """POST the alert as JSON, signed: ``X-Civicml-Signature: sha256=<hex HMAC-SHA256 of
    '<timestamp>.<body>'>`` with ``X-Civicml-Timestamp`` (Unix seconds)."""

    type: Literal["webhook"] = Field(description="'webhook'.")
    url: str = Field(
        min_length=8,
        max_length=1024,
        description="http:// or https:// URL to POST to; redirects are not followed.",
    )
    secret: str = Field(
        default="default",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Name of the HMAC secret in the alerts_webhook_secrets setting.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials: the body is signed with a secret")
        return value


class EmailChannel(_Schema):
    """Send an e-mail through the SMTP server of the ``alerts_smtp_*`` settings."""

    type: Literal["email"] = Field(description="'email'.")
    to: list[str] = Field(
        min_length=1, max_length=20, description="Recipients, e.g. ['ml-ops@agency.example']."
    )

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _ADDRESS.match(address):
                raise ValueError(f"{address[:80]!r} is not an e-mail address")
        return value


class NatsChannel(_Schema):
    """Publish the alert as JSON on a NATS subject (server: the ``alerts_nats_url`` setting)."""

    type: Literal["nats"] = Field(description="'nats'.")
    subject: str = Field(pattern=_TOPIC.pattern, description="e.g. 'civicml.alerts'.")


class RedisChannel(_Schema):
    """Publish the alert as JSON on a Redis pub/sub channel, or add it to a Redis stream
    (server: the ``alerts_redis_url`` setting)."""

    type: Literal["redis"] = Field(description="'redis'.")
    channel: str = Field(pattern=_TOPIC.pattern, description="Channel or stream key.")
    mode: Literal["pubsub", "stream"] = Field(
        default="pubsub",
        description="'pubsub': PUBLISH; 'stream': XADD with the JSON in field 'alert'.",
    )


class MqttChannel(_Schema):
    """Publish the alert as JSON on an MQTT topic (broker: the ``alerts_mqtt_url`` setting)."""

    type: Literal["mqtt"] = Field(description="'mqtt'.")
    topic: str = Field(pattern=_TOPIC.pattern, description="e.g. 'civicml/alerts'.")
    qos: int = Field(default=1, ge=0, le=2, strict=True, description="0, 1 or 2.")


Channel = Annotated[
    WebhookChannel | EmailChannel | NatsChannel | RedisChannel | MqttChannel,
    Field(discriminator="type"),
]


# Rules ----------------------------------------------------------------------------------------
class RuleCreate(_Schema):
    """A new alert rule: what to watch, the condition, and where to tell."""

    name: str = Field(min_length=1, max_length=128, description="Unique in the project.")
    source: Source = Field(description="'endpoint' (serving counters) or 'monitoring' (reports).")
    condition: str = Field(
        min_length=3,
        max_length=256,
        description="'<metric> <op> <value>', e.g. 'p99_ms > 50', 'error_rate > 0.01', "
        "'verdict == drift' (docs/alerts.md lists the metrics).",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=128,
        description="Endpoint source: only this endpoint; default every endpoint of the project "
        "(each its own subject).",
    )
    variant: str | None = Field(
        default=None, max_length=128, description="Endpoint source: only this variant."
    )
    dataset: str | None = Field(
        default=None,
        max_length=128,
        description="Monitoring source: only reports on this (current) dataset; default every "
        "dataset (each its own subject).",
    )
    report_kind: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z0-9_]+$",
        description="Monitoring source: only reports of this kind (e.g. 'drift'); default any.",
    )
    column: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Monitoring source: a column metric (drift_score, psi, ...) of this column.",
    )
    window_s: int | None = Field(
        default=None,
        ge=1,
        le=MAX_WINDOW_S,
        strict=True,
        description="Endpoint: seconds of traffic counted (default 300). Monitoring: only "
        "reports this recent count (default 86400).",
    )
    min_requests: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        strict=True,
        description="Endpoint: fewer requests than this in the window is no data (the state "
        "does not change).",
    )
    severity: Severity = Field(default=Severity.WARNING, description="info, warning, critical.")
    cooldown_s: int = Field(
        default=300,
        ge=0,
        le=604_800,
        strict=True,
        description="After an alert resolves, the rule does not fire again for the same "
        "subject within this many seconds.",
    )
    channels: list[Channel] = Field(
        default_factory=list,
        max_length=MAX_CHANNELS,
        description="Where fired and resolved alerts are sent (several allowed; none: only "
        "recorded and audited).",
    )
    description: str = Field(default="", max_length=1024, description="What the rule is for.")
    enabled: bool = Field(default=True, strict=True, description="False: created disabled.")

    @model_validator(mode="after")
    def _filters_fit_the_source(self) -> RuleCreate:
        endpoint_only = {"endpoint": self.endpoint, "variant": self.variant}
        monitoring_only = {
            "dataset": self.dataset,
            "report_kind": self.report_kind,
            "column": self.column,
        }
        wrong = endpoint_only if self.source is Source.MONITORING else monitoring_only
        named = [k for k, v in wrong.items() if v is not None]
        if named:
            raise ValueError(f"{', '.join(named)} do(es) not apply to a {self.source} rule")
        if self.variant is not None and self.endpoint is None:
            raise ValueError("variant needs endpoint")
        return self


class Rule(_Schema):
    """An alert rule."""

    id: str = Field(description="Rule id.")
    project: str = Field(description="Project name.")
    name: str = Field(description="Unique in the project.")
    description: str = Field(description="What the rule is for.")
    source: Source = Field(description="'endpoint' or 'monitoring'.")
    condition: str = Field(description="The condition, e.g. 'p99_ms > 50'.")
    metric: str = Field(description="The metric compared.")
    op: str = Field(description="The comparison.")
    threshold: float | str | bool = Field(description="The value compared with.")
    endpoint: str | None = Field(default=None, description="The endpoint watched (or all).")
    variant: str | None = Field(default=None, description="The variant watched (or all).")
    dataset: str | None = Field(default=None, description="The dataset watched (or all).")
    report_kind: str | None = Field(default=None, description="The report kind (or any).")
    column: str | None = Field(default=None, description="The column of a column metric.")
    window_s: int = Field(description="Window in seconds.")
    min_requests: int = Field(description="Fewest requests for an endpoint rule to judge.")
    severity: Severity = Field(description="info, warning, critical.")
    cooldown_s: int = Field(description="Seconds after resolving before firing again.")
    channels: list[Channel] = Field(description="Where alerts are sent.")
    enabled: bool = Field(description="False while disabled.")
    evaluated_at: datetime | None = Field(default=None, description="Last evaluated (UTC).")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Its creator; the evaluation loop acts as them.")
    updated_at: datetime = Field(description="When it was last changed (UTC).")


# Alerts and deliveries ------------------------------------------------------------------------
class Alert(_Schema):
    """One alert: a rule's condition held for a subject; resolved when it no longer held."""

    id: str = Field(description="Alert id.")
    project: str = Field(description="Project name.")
    rule: str = Field(description="The rule's name.")
    subject: str = Field(description="What it is about: the endpoint or the dataset.")
    source: Source = Field(description="'endpoint' or 'monitoring'.")
    severity: Severity = Field(description="info, warning, critical.")
    condition: str = Field(description="The rule's condition when it fired.")
    status: AlertStatus = Field(description="firing or resolved.")
    value: Any = Field(default=None, description="The metric's value when it fired.")
    message: str = Field(description="One line for people.")
    fired_at: datetime = Field(description="When it fired (UTC).")
    resolved_at: datetime | None = Field(default=None, description="When it resolved (UTC).")
    resolved_value: Any = Field(default=None, description="The value when it resolved.")


class DeliveryAttempt(_Schema):
    """One attempt to deliver a notification."""

    attempt: int = Field(description="1, 2, ...")
    at: datetime = Field(description="When it was made (UTC).")
    ok: bool = Field(description="Whether the receiver took it.")
    status_code: int | None = Field(default=None, description="HTTP status (webhooks).")
    error: str | None = Field(default=None, description="Why it failed (no secrets).")
    duration_ms: float = Field(description="How long it took.")


class Notification(_Schema):
    """One alert event (fired, resolved, test) for one channel, and its delivery attempts."""

    id: str = Field(description="Notification id (sent as X-Civicml-Delivery to webhooks).")
    alert_id: str | None = Field(default=None, description="The alert; null for a test.")
    rule: str = Field(description="The rule's name.")
    event: Literal["fired", "resolved", "test"] = Field(description="What happened.")
    channel: int = Field(description="The channel's index in the rule's channels.")
    channel_type: str = Field(description="webhook, email, nats, redis, mqtt.")
    target: str = Field(description="Where to (URL without query, subject, topic, ...).")
    status: Literal["pending", "sent", "failed"] = Field(description="Where delivery stands.")
    attempts: list[DeliveryAttempt] = Field(description="Every attempt, oldest first.")
    error: str | None = Field(default=None, description="The last error, if any.")
    created_at: datetime = Field(description="When it was queued (UTC).")
    sent_at: datetime | None = Field(default=None, description="When it was delivered.")


class EvaluationOutcome(_Schema):
    """What one evaluation found for one rule and subject."""

    rule: str = Field(description="The rule's name.")
    subject: str = Field(description="The endpoint or dataset.")
    value: Any = Field(default=None, description="The metric's value (null: no data).")
    breached: bool | None = Field(
        default=None, description="Whether the condition held (null: no data)."
    )
    action: Literal["fired", "resolved", "firing", "ok", "cooldown", "no_data", "lost_race"] = (
        Field(
            description="fired / resolved: this evaluation changed it; firing: still firing "
            "(not sent again); ok: fine; cooldown: held, but resolved less than cooldown_s ago; "
            "no_data: nothing to judge; lost_race: another evaluator changed it first."
        )
    )
    alert_id: str | None = Field(default=None, description="The alert fired or resolved.")


class EvaluationResult(_Schema):
    """An evaluation of a project's enabled rules."""

    project: str = Field(description="Project name.")
    evaluated_at: datetime = Field(description="When (UTC).")
    outcomes: list[EvaluationOutcome] = Field(description="One per rule and subject.")
    notifications: list[Notification] = Field(
        description="What this evaluation sent, with each delivery's outcome."
    )


class RuleTestResult(_Schema):
    """A test notification of a rule, sent to each of its channels."""

    rule: str = Field(description="The rule's name.")
    notifications: list[Notification] = Field(description="One per channel, delivered.")
    ok: bool = Field(description="True when every channel took it.")
