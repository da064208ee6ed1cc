"""Roles granted per project (authorization, deny by default: docs/security.md).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_grants",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("user_key", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_grants_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", "user_key", "role", name=op.f("pk_project_grants")),
    )
    op.create_index("ix_project_grants_user_key", "project_grants", ["user_key"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_project_grants_user_key", table_name="project_grants")
    op.drop_table("project_grants")
