"""Batch prediction jobs: a dataset version in, a predictions dataset version out.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-13
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("input_dataset", sa.String(length=128), nullable=False),
        sa.Column("input_version_id", sa.String(length=32), nullable=False),
        sa.Column("input_version", sa.Integer(), nullable=False),
        sa.Column("output_dataset", sa.String(length=128), nullable=False),
        sa.Column("output_version_id", sa.String(length=32), nullable=True),
        sa.Column("output_version", sa.Integer(), nullable=True),
        sa.Column("join_source", sa.String(length=16), nullable=False),
        sa.Column("id_column", sa.String(length=256), nullable=True),
        sa.Column("explain", sa.Boolean(), nullable=False),
        sa.Column("chunk_rows", sa.Integer(), nullable=False),
        sa.Column("executor", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=2048), nullable=True),
        sa.Column("host", sa.String(length=256), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_start", sa.BigInteger(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_batch_jobs_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_batch_jobs_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["input_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_batch_jobs_input_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["output_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_batch_jobs_output_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_jobs")),
    )
    op.create_index(
        "ix_batch_jobs_project_id_created_at",
        "batch_jobs",
        ["project_id", "created_at"],
        unique=False,
    )
    op.create_index("ix_batch_jobs_status", "batch_jobs", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_batch_jobs_status", table_name="batch_jobs")
    op.drop_index("ix_batch_jobs_project_id_created_at", table_name="batch_jobs")
    op.drop_table("batch_jobs")
