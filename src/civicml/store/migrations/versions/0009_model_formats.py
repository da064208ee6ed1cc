"""Model files as data: stored bundles of built-in models are converted from pickles to formats
that load without executing code.

No schema change. Converting a bundle needs the artifact store, not only the database, and reads
each old pickle once, so it is not done inside this migration (which also runs when a server
opens the store, and a server never unpickles): after upgrading, the operator runs
``civicml models convert`` on the store's machine
(:func:`civicml.evaluation.models.convert_model_bundles`). Until then a pre-0.9 bundle
(``model.joblib``) is refused when loaded, with a 422 that says so. This revision marks the
database as belonging to a civicml that writes ``model.skops``.

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
    """Nothing in the database changes; see the module docstring for the conversion step."""


def downgrade() -> None:
    """Nothing to undo."""
