"""Dataset quality expectations and personal data: expectations per dataset, the quality and
personal-data reports of each version, wrapped pseudonymisation secrets, and the status columns
(quality status, classification, redaction, use approvals) of datasets and their versions.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("classification", sa.String(length=16), nullable=True))
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("quality_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("classification", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("redaction", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("use_approvals", sa.JSON(), nullable=True))
    op.create_table(
        "dataset_expectations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("blocking", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_expectations_dataset_id_datasets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_expectations")),
        sa.UniqueConstraint(
            "dataset_id", "name", name=op.f("uq_dataset_expectations_dataset_id_name")
        ),
    )
    op.create_table(
        "dataset_checks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("dataset_version_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_dataset_checks_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_checks_dataset_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_checks")),
    )
    op.create_index(
        "ix_dataset_checks_dataset_version_id_kind",
        "dataset_checks",
        ["dataset_version_id", "kind"],
        unique=False,
    )
    op.create_table(
        "pseudonym_keys",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_pseudonym_keys_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", "name", name=op.f("pk_pseudonym_keys")),
    )


def downgrade() -> None:
    op.drop_table("pseudonym_keys")
    op.drop_index("ix_dataset_checks_dataset_version_id_kind", table_name="dataset_checks")
    op.drop_table("dataset_checks")
    op.drop_table("dataset_expectations")
    # plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch copy of the tables would lose
    # their expression indexes (uq_datasets_project_id_name_ci)
    for column in ("use_approvals", "redaction", "classification", "quality_status"):
        op.drop_column("dataset_versions", column)
    op.drop_column("datasets", "classification")
