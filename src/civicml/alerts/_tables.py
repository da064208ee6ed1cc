"""Rows of alerts (migration 0018): rules, their state per subject, alerts, notifications and
delivery attempts, and the endpoint-counter samples that windowed metrics are computed from."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from civicml.store.schema import ID, JSONDoc, Name, UTCDateTime, metadata

# One row per rule: what to watch (source and its filters), the condition, where to tell.
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("description", String(1024), nullable=False),
    Column("source", String(16), nullable=False),  # endpoint | monitoring
    Column("endpoint", Name, nullable=True),
    Column("variant", Name, nullable=True),
    Column("dataset", Name, nullable=True),
    Column("report_kind", String(32), nullable=True),
    Column("metric", String(64), nullable=False),
    Column("column_name", String(256), nullable=True),
    Column("op", String(2), nullable=False),
    Column("threshold", JSONDoc, nullable=False),
    Column("window_s", Integer, nullable=False),
    Column("min_requests", Integer, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("cooldown_s", Integer, nullable=False),
    Column("channels", JSONDoc, nullable=False),
    Column("enabled", Boolean, nullable=False),
    # The loop evaluates a rule when this has passed (claimed by compare-and-set).
    Column("next_eval_at", UTCDateTime, nullable=False),
    Column("evaluated_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("creator_roles", String(512), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_alert_rules_project_id_name", "project_id", "name", unique=True),
    Index("ix_alert_rules_enabled_next_eval_at", "enabled", "next_eval_at"),
)

# Where each (rule, subject) stands; ``version`` is the compare-and-set token every change
# (fire, resolve) must match, so of several evaluators only one changes it.
alert_states = Table(
    "alert_states",
    metadata,
    Column("rule_id", ID, ForeignKey("alert_rules.id"), primary_key=True),
    Column("subject", String(256), primary_key=True),
    Column("status", String(16), nullable=False),  # firing | ok
    Column("alert_id", ID, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per alert: fired once, resolved once. Kept when its rule is removed.
alerts = Table(
    "alerts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("rule_id", ID, nullable=False),
    Column("rule_name", Name, nullable=False),
    Column("subject", String(256), nullable=False),
    Column("source", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("condition", String(512), nullable=False),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("value", JSONDoc, nullable=True),
    Column("message", String(1024), nullable=False),
    Column("fired_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("resolved_value", JSONDoc, nullable=True),
    Index("ix_alerts_project_id_fired_at", "project_id", "fired_at"),
    Index("ix_alerts_rule_id_status", "rule_id", "status"),
)

# The outbox: one notification per (alert event, channel), claimed with a lease by the process
# that delivers it; a process that died leaves it 'pending' with an expired lease, and the next
# tick of any process delivers it.
alert_notifications = Table(
    "alert_notifications",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, nullable=False),
    Column("rule_id", ID, nullable=False),
    Column("alert_id", ID, nullable=True),  # null for a test notification
    Column("event", String(16), nullable=False),  # fired | resolved | test
    Column("channel_index", Integer, nullable=False),
    Column("channel_type", String(16), nullable=False),
    Column("target", String(512), nullable=False),
    Column("channel", JSONDoc, nullable=False),  # the channel's spec (no secret in it)
    Column("payload", JSONDoc, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("claimed_by", String(128), nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Index("ix_alert_notifications_status_lease_until", "status", "lease_until"),
    Index("ix_alert_notifications_alert_id", "alert_id"),
    Index("ix_alert_notifications_rule_id_created_at", "rule_id", "created_at"),
)

# Every attempt to deliver a notification, with how it went (errors hold no secret).
alert_delivery_attempts = Table(
    "alert_delivery_attempts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("notification_id", ID, ForeignKey("alert_notifications.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Index("ix_alert_delivery_attempts_notification_id", "notification_id"),
)

# Samples of serving's per-variant counters (table endpoint_variant_stats), keyed by the time the
# serving process flushed them: samplers on several processes insert the same key once.
alert_metric_samples = Table(
    "alert_metric_samples",
    metadata,
    Column("variant_id", ID, primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("at", UTCDateTime, primary_key=True),
    Column("endpoint_id", ID, nullable=False),
    Column("invocations", BigInteger, nullable=False),
    Column("errors_4xx", BigInteger, nullable=False),
    Column("errors_5xx", BigInteger, nullable=False),
    Column("latency", JSONDoc, nullable=False),
    Index("ix_alert_metric_samples_endpoint_id_at", "endpoint_id", "at"),
)

# Named instants: ``sampler`` is when sampling began on this database (counts flushed before it
# and never sampled are not attributed to any window).
alert_cursors = Table(
    "alert_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)
