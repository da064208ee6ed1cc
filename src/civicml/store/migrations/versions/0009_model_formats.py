"""Model files as data: stored bundles of built-in models are converted from pickles to formats
that load without executing code.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Filled in by the model-formats change (no schema change)."""


def downgrade() -> None:
    """Nothing to undo."""
