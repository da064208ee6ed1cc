"""Pipeline executions record the process that runs them, so a killed one can be retried.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (SQLite adds and, since 3.35, drops columns itself):
    # no batch copy of the table.
    op.add_column("pipeline_executions", sa.Column("host", sa.String(length=256), nullable=True))
    op.add_column("pipeline_executions", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("pipeline_executions", sa.Column("pid_start", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("pipeline_executions", "pid_start")
    op.drop_column("pipeline_executions", "pid")
    op.drop_column("pipeline_executions", "host")
