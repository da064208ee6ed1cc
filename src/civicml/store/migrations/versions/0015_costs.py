"""Cost accounting: usage lines of runs and endpoints, and budgets per project.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=512), nullable=False),
        sa.Column("execution_id", sa.String(length=32), nullable=True),
        sa.Column("pipeline", sa.String(length=128), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=False),
        sa.Column("cpu_s", sa.Float(), nullable=False),
        sa.Column("gpu_s", sa.Float(), nullable=False),
        sa.Column("memory_gb_s", sa.Float(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("invocations", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_usage_lines_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_lines")),
        sa.UniqueConstraint(
            "subject_kind",
            "subject_id",
            "period_start",
            name=op.f("uq_usage_lines_subject_kind_subject_id_period_start"),
        ),
    )
    op.create_index(
        "ix_usage_lines_project_period", "usage_lines", ["project_id", "period_start"], unique=False
    )
    op.create_table(
        "budgets",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("warn_fraction", sa.Float(), nullable=False),
        sa.Column("hard_stop", sa.Boolean(), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warned_month", sa.String(length=7), nullable=True),
        sa.Column("stopped_month", sa.String(length=7), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_budgets_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_budgets")),
    )


def downgrade() -> None:
    op.drop_table("budgets")
    op.drop_index("ix_usage_lines_project_period", table_name="usage_lines")
    op.drop_table("usage_lines")
