"""Scheduled monitors: monitors, their executions (claimed once per due instant) and
ground-truth uploads.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitors",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("every_s", sa.Integer(), nullable=True),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=False),
        sa.Column("constraints", sa.JSON(), nullable=False),
        sa.Column("constraints_version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("creator_roles", sa.String(length=512), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_monitors_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitors")),
    )
    op.create_index("ix_monitors_project_id_name", "monitors", ["project_id", "name"], unique=True)
    op.create_index(
        "ix_monitors_enabled_next_run_at", "monitors", ["enabled", "next_run_at"], unique=False
    )
    op.create_table(
        "monitor_executions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("monitor_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("fire_key", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("records", sa.Integer(), nullable=True),
        sa.Column("labeled", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("violations", sa.JSON(), nullable=False),
        sa.Column("n_violations", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["monitor_id"], ["monitors.id"], name=op.f("fk_monitor_executions_monitor_id_monitors")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_monitor_executions_project_id_projects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_executions")),
    )
    op.create_index(
        "ix_monitor_executions_monitor_id_fire_key",
        "monitor_executions",
        ["monitor_id", "fire_key"],
        unique=True,
    )
    op.create_index(
        "ix_monitor_executions_monitor_id_started_at",
        "monitor_executions",
        ["monitor_id", "started_at"],
        unique=False,
    )
    op.create_index(
        "ix_monitor_executions_status_lease_until",
        "monitor_executions",
        ["status", "lease_until"],
        unique=False,
    )
    op.create_table(
        "monitor_labels",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_monitor_labels_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_labels")),
    )
    op.create_index(
        "ix_monitor_labels_endpoint_id_uploaded_at",
        "monitor_labels",
        ["endpoint_id", "uploaded_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_monitor_labels_endpoint_id_uploaded_at", table_name="monitor_labels")
    op.drop_table("monitor_labels")
    op.drop_index("ix_monitor_executions_status_lease_until", table_name="monitor_executions")
    op.drop_index("ix_monitor_executions_monitor_id_started_at", table_name="monitor_executions")
    op.drop_index("ix_monitor_executions_monitor_id_fire_key", table_name="monitor_executions")
    op.drop_table("monitor_executions")
    op.drop_index("ix_monitors_enabled_next_run_at", table_name="monitors")
    op.drop_index("ix_monitors_project_id_name", table_name="monitors")
    op.drop_table("monitors")
