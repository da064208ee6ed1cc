"""Multi-model endpoints: an endpoint's mode and model cache limit, and the models it serves.

Every existing endpoint becomes ``single-model`` (its variants answer, as before).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy: the lower(name) index of migration 0007 stays as it is).
    op.add_column(
        "endpoints",
        sa.Column("mode", sa.String(length=16), nullable=False, server_default="single-model"),
    )
    op.add_column("endpoints", sa.Column("model_cache_mb", sa.Float(), nullable=True))
    op.create_table(
        "endpoint_models",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["endpoints.id"], name=op.f("fk_endpoint_models_endpoint_id_endpoints")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_endpoint_models_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_models")),
        sa.UniqueConstraint(
            "endpoint_id",
            "model_version_id",
            name=op.f("uq_endpoint_models_endpoint_id_model_version_id"),
        ),
    )
    op.create_index(
        "ix_endpoint_models_model_version_id", "endpoint_models", ["model_version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_endpoint_models_model_version_id", table_name="endpoint_models")
    op.drop_table("endpoint_models")
    op.drop_column("endpoints", "model_cache_mb")
    op.drop_column("endpoints", "mode")
