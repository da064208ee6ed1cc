"""Alerts: rules, their state per subject, alerts, notifications (the outbox) and delivery
attempts, and samples of the endpoints' counters.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=True),
        sa.Column("variant", sa.String(length=128), nullable=True),
        sa.Column("dataset", sa.String(length=128), nullable=True),
        sa.Column("report_kind", sa.String(length=32), nullable=True),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("column_name", sa.String(length=256), nullable=True),
        sa.Column("op", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.JSON(), nullable=False),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.Column("min_requests", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("cooldown_s", sa.Integer(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_eval_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("creator_roles", sa.String(length=512), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_alert_rules_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    op.create_index(
        "ix_alert_rules_project_id_name", "alert_rules", ["project_id", "name"], unique=True
    )
    op.create_index(
        "ix_alert_rules_enabled_next_eval_at",
        "alert_rules",
        ["enabled", "next_eval_at"],
        unique=False,
    )
    op.create_table(
        "alert_states",
        sa.Column("rule_id", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name=op.f("fk_alert_states_rule_id_alert_rules")
        ),
        sa.PrimaryKeyConstraint("rule_id", "subject", name=op.f("pk_alert_states")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("rule_id", sa.String(length=32), nullable=False),
        sa.Column("rule_name", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("condition", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_value", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_alerts_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "ix_alerts_project_id_fired_at", "alerts", ["project_id", "fired_at"], unique=False
    )
    op.create_index("ix_alerts_rule_id_status", "alerts", ["rule_id", "status"], unique=False)
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("rule_id", sa.String(length=32), nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=True),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("channel_index", sa.Integer(), nullable=False),
        sa.Column("channel_type", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("channel", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_notifications")),
    )
    op.create_index(
        "ix_alert_notifications_status_lease_until",
        "alert_notifications",
        ["status", "lease_until"],
        unique=False,
    )
    op.create_index(
        "ix_alert_notifications_alert_id", "alert_notifications", ["alert_id"], unique=False
    )
    op.create_index(
        "ix_alert_notifications_rule_id_created_at",
        "alert_notifications",
        ["rule_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "alert_delivery_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("notification_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["alert_notifications.id"],
            name=op.f("fk_alert_delivery_attempts_notification_id_alert_notifications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery_attempts")),
    )
    op.create_index(
        "ix_alert_delivery_attempts_notification_id",
        "alert_delivery_attempts",
        ["notification_id"],
        unique=False,
    )
    op.create_table(
        "alert_metric_samples",
        sa.Column("variant_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("invocations", sa.BigInteger(), nullable=False),
        sa.Column("errors_4xx", sa.BigInteger(), nullable=False),
        sa.Column("errors_5xx", sa.BigInteger(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("variant_id", "source", "at", name=op.f("pk_alert_metric_samples")),
    )
    op.create_index(
        "ix_alert_metric_samples_endpoint_id_at",
        "alert_metric_samples",
        ["endpoint_id", "at"],
        unique=False,
    )
    op.create_table(
        "alert_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alert_cursors")),
    )


def downgrade() -> None:
    op.drop_table("alert_cursors")
    op.drop_index("ix_alert_metric_samples_endpoint_id_at", table_name="alert_metric_samples")
    op.drop_table("alert_metric_samples")
    op.drop_index(
        "ix_alert_delivery_attempts_notification_id", table_name="alert_delivery_attempts"
    )
    op.drop_table("alert_delivery_attempts")
    op.drop_index("ix_alert_notifications_rule_id_created_at", table_name="alert_notifications")
    op.drop_index("ix_alert_notifications_alert_id", table_name="alert_notifications")
    op.drop_index("ix_alert_notifications_status_lease_until", table_name="alert_notifications")
    op.drop_table("alert_notifications")
    op.drop_index("ix_alerts_rule_id_status", table_name="alerts")
    op.drop_index("ix_alerts_project_id_fired_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_states")
    op.drop_index("ix_alert_rules_enabled_next_eval_at", table_name="alert_rules")
    op.drop_index("ix_alert_rules_project_id_name", table_name="alert_rules")
    op.drop_table("alert_rules")
