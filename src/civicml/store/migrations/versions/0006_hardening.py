"""Hardening: a retried metric batch is recognised by the digest of its body (a different body
under the same id is a conflict), and a dataset version records how its source was read (the
detected or given encoding and delimiter).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric_batches") as batch:
        batch.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("read_options", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("read_options")
    with op.batch_alter_table("metric_batches") as batch:
        batch.drop_column("digest")
