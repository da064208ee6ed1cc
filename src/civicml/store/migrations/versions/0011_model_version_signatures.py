"""Ed25519 signatures of model versions' manifests, made at registration and checked at deploy.

Versions registered before this revision keep ``manifest_signature`` NULL and still deploy (the
deploy audit event records ``signature: "absent"``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite >= 3.35 drops columns natively): batch mode would reflect the
# case-insensitive expression indexes of migration 0007, which SQLAlchemy cannot reflect.
def upgrade() -> None:
    op.add_column("model_versions", sa.Column("manifest_signature", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("model_versions", "manifest_signature")
