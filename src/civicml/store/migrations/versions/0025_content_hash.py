"""Dataset versions' content hash: the SHA-256 of their logical content (column names, types and
values), their identity from now on; the Parquet file's digest stays their storage address.

Versions recorded before have no content hash (NULL): a migration cannot read the artifact store
(it may be encrypted with keys from a provider, or remote), so an ingest back-fills it for the
versions it could match (``DatasetService._backfill``) and, until then, matches them by digest.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_INDEX = "ix_dataset_versions_dataset_id_content_hash"


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both databases: no copy of the table (it may be large).
    op.add_column(
        "dataset_versions", sa.Column("content_hash", sa.String(length=64), nullable=True)
    )
    op.create_index(_INDEX, "dataset_versions", ["dataset_id", "content_hash"], unique=False)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="dataset_versions")
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and (bind.dialect.server_version_info or (0,)) < (3, 35):
        with op.batch_alter_table("dataset_versions") as batch:  # no DROP COLUMN: a copy
            batch.drop_column("content_hash")
    else:
        op.drop_column("dataset_versions", "content_hash")
