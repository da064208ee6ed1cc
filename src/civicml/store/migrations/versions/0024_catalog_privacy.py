"""Catalog entries (descriptions, classification, tags, column notes); retention rules and legal
holds, retention passes, erasure requests and purged dataset versions.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_ID = sa.String(length=32)
_TIME = sa.DateTime(timezone=True)


def _project_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["project_id"], ["projects.id"], name=op.f(f"fk_{table}_project_id_projects")
    )


def upgrade() -> None:
    op.create_table(
        "catalog_entries",
        sa.Column("entity_kind", sa.String(length=32), nullable=False),
        sa.Column("entity_id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("classification", sa.String(length=16), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        _project_fk("catalog_entries"),
        sa.PrimaryKeyConstraint("entity_kind", "entity_id", name=op.f("pk_catalog_entries")),
    )
    op.create_index("ix_catalog_entries_project_id", "catalog_entries", ["project_id"])
    op.create_table(
        "retention_rules",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", _ID, nullable=False),
        sa.Column("target_name", sa.String(length=128), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        _project_fk("retention_rules"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_rules")),
        sa.UniqueConstraint(
            "target_kind", "target_id", name=op.f("uq_retention_rules_target_kind_target_id")
        ),
    )
    op.create_index("ix_retention_rules_project_id", "retention_rules", ["project_id"])
    op.create_table(
        "retention_passes",
        sa.Column("fire_key", sa.String(length=64), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("ended_at", _TIME, nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("fire_key", name=op.f("pk_retention_passes")),
    )
    op.create_table(
        "erasures",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("key_column", sa.String(length=256), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("pending", sa.JSON(), nullable=False),
        sa.Column("certificate_digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        _project_fk("erasures"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index("ix_erasures_project_id_created_at", "erasures", ["project_id", "created_at"])
    op.create_table(
        "purged_versions",
        sa.Column("dataset_version_id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("erasure_id", _ID, nullable=True),
        sa.Column("successor_id", _ID, nullable=True),
        sa.Column("purged_at", _TIME, nullable=False),
        sa.Column("purged_by", sa.String(length=128), nullable=False),
        _project_fk("purged_versions"),
        sa.PrimaryKeyConstraint("dataset_version_id", name=op.f("pk_purged_versions")),
    )


def downgrade() -> None:
    op.drop_table("purged_versions")
    op.drop_index("ix_erasures_project_id_created_at", table_name="erasures")
    op.drop_table("erasures")
    op.drop_table("retention_passes")
    op.drop_index("ix_retention_rules_project_id", table_name="retention_rules")
    op.drop_table("retention_rules")
    op.drop_index("ix_catalog_entries_project_id", table_name="catalog_entries")
    op.drop_table("catalog_entries")
