"""Responsible AI before approval: evaluation reports, model cards, approval policies, and the
evidence recorded with each approval.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.String(length=32)
_WHO = sa.String(length=128)
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approval_policies",
        sa.Column("model_id", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", _WHO, nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_models.id"],
            name=op.f("fk_approval_policies_model_id_registered_models"),
        ),
        sa.PrimaryKeyConstraint("model_id", "version", name=op.f("pk_approval_policies")),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("model_version_id", _ID, nullable=True),
        sa.Column("dataset_version_id", _ID, nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", _WHO, nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_evaluations_dataset_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_evaluations_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_evaluations_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index(
        "ix_evaluations_model_version_id_kind",
        "evaluations",
        ["model_version_id", "kind"],
        unique=False,
    )
    op.create_index(
        "ix_evaluations_project_id_created_at",
        "evaluations",
        ["project_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "model_cards",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("model_version_id", _ID, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", _WHO, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("updated_by", _WHO, nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_cards_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_model_cards_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_cards")),
        sa.UniqueConstraint("model_version_id", name=op.f("uq_model_cards_model_version_id")),
    )
    op.create_table(
        "model_card_versions",
        sa.Column("card_id", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", _WHO, nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["model_cards.id"],
            name=op.f("fk_model_card_versions_card_id_model_cards"),
        ),
        sa.PrimaryKeyConstraint("card_id", "version", name=op.f("pk_model_card_versions")),
    )
    with op.batch_alter_table("approval_history") as batch:
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval_history") as batch:
        batch.drop_column("evidence")
    op.drop_table("model_card_versions")
    op.drop_table("model_cards")
    op.drop_index("ix_evaluations_project_id_created_at", table_name="evaluations")
    op.drop_index("ix_evaluations_model_version_id_kind", table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_table("approval_policies")
