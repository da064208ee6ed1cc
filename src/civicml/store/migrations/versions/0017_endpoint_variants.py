"""Endpoint variants, guarded rollouts, per-variant counters and shadow comparison reports.

Every existing endpoint becomes a one-variant endpoint: a live variant named ``v<N>`` (its model
version number) with weight 1, serving the version the endpoint row names.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-10
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _new_id() -> str:  # as civicml.core.ids.new_id (migrations do not import the package)
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def upgrade() -> None:
    variants = op.create_table(
        "endpoint_variants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("shadow_percent", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_variants_endpoint_id_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_endpoint_variants_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_variants")),
        sa.UniqueConstraint(
            "endpoint_id", "name", name=op.f("uq_endpoint_variants_endpoint_id_name")
        ),
    )
    op.create_index(
        "ix_endpoint_variants_model_version_id",
        "endpoint_variants",
        ["model_version_id"],
        unique=False,
    )
    op.create_table(
        "endpoint_rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("new_variant", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("created_variant", sa.Boolean(), nullable=False),
        sa.Column("old_weights", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("bake_s", sa.Float(), nullable=False),
        sa.Column("alarms", sa.JSON(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name=op.f("fk_endpoint_rollouts_endpoint_id_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_endpoint_rollouts_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_rollouts")),
    )
    op.create_index(
        "ix_endpoint_rollouts_endpoint_id_status",
        "endpoint_rollouts",
        ["endpoint_id", "status"],
        unique=False,
    )
    op.create_table(
        "endpoint_variant_stats",
        sa.Column("variant_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("invocations", sa.BigInteger(), nullable=False),
        sa.Column("errors_4xx", sa.BigInteger(), nullable=False),
        sa.Column("errors_5xx", sa.BigInteger(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("variant_id", "source", name=op.f("pk_endpoint_variant_stats")),
    )
    op.create_index(
        "ix_endpoint_variant_stats_endpoint_id",
        "endpoint_variant_stats",
        ["endpoint_id"],
        unique=False,
    )
    op.create_table(
        "shadow_reports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=False),
        sa.Column("live_variant", sa.String(length=128), nullable=False),
        sa.Column("shadow_variant", sa.String(length=128), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_shadow_reports_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_reports")),
    )
    op.create_index(
        "ix_shadow_reports_endpoint_id_created_at",
        "shadow_reports",
        ["endpoint_id", "created_at"],
        unique=False,
    )
    # Every endpoint so far serves one version: it becomes its one live variant.
    conn = op.get_bind()
    endpoints = sa.table(
        "endpoints",
        sa.column("id", sa.String()),
        sa.column("model_name", sa.String()),
        sa.column("model_version_id", sa.String()),
        sa.column("model_version", sa.Integer()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("updated_by", sa.String()),
    )
    rows = conn.execute(sa.select(endpoints)).all()
    if rows:
        op.bulk_insert(
            variants,
            [
                {
                    "id": _new_id(),
                    "endpoint_id": r.id,
                    "name": f"v{r.model_version}",
                    "role": "live",
                    "model_name": r.model_name,
                    "model_version_id": r.model_version_id,
                    "model_version": r.model_version,
                    "weight": 1.0,
                    "shadow_percent": 0.0,
                    "created_at": r.updated_at,
                    "created_by": r.updated_by,
                    "updated_at": r.updated_at,
                    "updated_by": r.updated_by,
                }
                for r in rows
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_shadow_reports_endpoint_id_created_at", table_name="shadow_reports")
    op.drop_table("shadow_reports")
    op.drop_index("ix_endpoint_variant_stats_endpoint_id", table_name="endpoint_variant_stats")
    op.drop_table("endpoint_variant_stats")
    op.drop_index("ix_endpoint_rollouts_endpoint_id_status", table_name="endpoint_rollouts")
    op.drop_table("endpoint_rollouts")
    op.drop_index("ix_endpoint_variants_model_version_id", table_name="endpoint_variants")
    op.drop_table("endpoint_variants")
