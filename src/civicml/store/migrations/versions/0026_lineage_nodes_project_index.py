"""Drop the index on lineage_nodes.project_id: no query reads nodes by project (a graph is walked
from a node found by (kind, ref) or id, and project checks read the node's column), and every new
run, model version and dataset version paid for it in its commit (one more B-tree page: about
3% of the pages a short run writes on SQLite).

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_INDEX = "ix_lineage_nodes_project_id"


def upgrade() -> None:
    op.drop_index(_INDEX, table_name="lineage_nodes")


def downgrade() -> None:
    op.create_index(_INDEX, "lineage_nodes", ["project_id"], unique=False)
