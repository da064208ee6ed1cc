"""Signed audit chain heads in the database, so several servers sharing one PostgreSQL database
and one audit key (in keys_dir) keep one verifiable chain (``audit_witness = "database"``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_signed_heads",
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.String(length=40), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("public_key", "seq", name=op.f("pk_audit_signed_heads")),
    )


def downgrade() -> None:
    op.drop_table("audit_signed_heads")
