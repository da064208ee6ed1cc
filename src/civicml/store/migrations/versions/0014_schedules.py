"""Pipeline schedules and event triggers: schedules, their firings (claimed once) and cursors.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_schedules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("pipeline_ref", sa.String(length=256), nullable=False),
        sa.Column("trigger", sa.String(length=8), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("starting_deadline_s", sa.Integer(), nullable=True),
        sa.Column("events_after", sa.BigInteger(), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("creator_roles", sa.String(length=512), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_pipeline_schedules_project_id_projects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_schedules")),
    )
    op.create_index(
        "ix_pipeline_schedules_project_id_name",
        "pipeline_schedules",
        ["project_id", "name"],
        unique=True,
    )
    op.create_index(
        "ix_pipeline_schedules_trigger_enabled",
        "pipeline_schedules",
        ["trigger", "enabled"],
        unique=False,
    )
    op.create_table(
        "schedule_firings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("schedule_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("fire_key", sa.String(length=64), nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.JSON(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("execution_id", sa.String(length=32), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["pipeline_schedules.id"],
            name=op.f("fk_schedule_firings_schedule_id_pipeline_schedules"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_firings")),
        sa.UniqueConstraint(
            "schedule_id", "fire_key", name=op.f("uq_schedule_firings_schedule_id_fire_key")
        ),
    )
    op.create_index(
        "ix_schedule_firings_status_lease_until",
        "schedule_firings",
        ["status", "lease_until"],
        unique=False,
    )
    op.create_table(
        "scheduler_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_cursors")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_cursors")
    op.drop_index("ix_schedule_firings_status_lease_until", table_name="schedule_firings")
    op.drop_table("schedule_firings")
    op.drop_index("ix_pipeline_schedules_trigger_enabled", table_name="pipeline_schedules")
    op.drop_index("ix_pipeline_schedules_project_id_name", table_name="pipeline_schedules")
    op.drop_table("pipeline_schedules")
