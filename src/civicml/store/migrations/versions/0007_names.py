"""Names are unique regardless of letter case: ``Elig``, ``ELIG`` and ``elig`` are one model.

Adds a unique index on ``lower(name)`` per scope (projects; models, datasets, experiments and
endpoints per project; aliases per model). Entity names are ASCII, so ``lower()`` folds them the
same way on SQLite and PostgreSQL. When existing rows already differ only in letter case the
upgrade stops before changing anything, naming each clash and how to resolve it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (index name, table, scope columns, name column, what is named, what the scope is)
_INDEXES = (
    ("uq_projects_name_ci", "projects", (), "name", "project", ""),
    (
        "uq_registered_models_project_id_name_ci",
        "registered_models",
        ("project_id",),
        "name",
        "model",
        "project",
    ),
    ("uq_datasets_project_id_name_ci", "datasets", ("project_id",), "name", "dataset", "project"),
    (
        "uq_experiments_project_id_name_ci",
        "experiments",
        ("project_id",),
        "name",
        "experiment",
        "project",
    ),
    (
        "uq_endpoints_project_id_name_ci",
        "endpoints",
        ("project_id",),
        "name",
        "endpoint",
        "project",
    ),
    (
        "uq_model_aliases_model_id_alias_ci",
        "model_aliases",
        ("model_id",),
        "alias",
        "alias",
        "model",
    ),
)


def _clashes(conn: sa.Connection) -> list[str]:
    """One line per group of rows whose names differ only in letter case."""
    found: list[str] = []
    for _index, table, scope, column, kind, scope_kind in _INDEXES:
        keys = [*scope, f"lower({column})"]
        groups = conn.execute(
            sa.text(
                f"SELECT {', '.join(keys)} FROM {table} GROUP BY {', '.join(keys)} "
                "HAVING COUNT(*) > 1"
            )
        ).all()
        for group in groups:
            where = " AND ".join(
                [f"{c} = :s{i}" for i, c in enumerate(scope)] + [f"lower({column}) = :key"]
            )
            params = {f"s{i}": group[i] for i in range(len(scope))} | {"key": group[-1]}
            names = conn.execute(
                sa.text(f"SELECT {column} FROM {table} WHERE {where} ORDER BY {column}"),
                params,
            ).scalars()
            place = f" in {scope_kind} id {group[0]}" if scope else ""
            found.append(f"{kind}s {', '.join(repr(n) for n in names)}{place}")
    return found


def upgrade() -> None:
    conn = op.get_bind()
    clashes = _clashes(conn)
    if clashes:
        from civicml.core.errors import ConfigurationError

        raise ConfigurationError(
            "Cannot upgrade the metadata database to revision 0007 (names unique regardless of "
            "letter case): these names differ only in letter case: " + "; ".join(clashes) + ".",
            hint="Rename or delete all but one of each group with the civicml version that wrote "
            "them (or in SQL), then start civicml again; nothing was changed.",
        )
    for index, table, scope, column, _kind, _scope_kind in _INDEXES:
        op.create_index(index, table, [*scope, sa.text(f"lower({column})")], unique=True)


def downgrade() -> None:
    for index, table, *_rest in reversed(_INDEXES):
        op.drop_index(index, table_name=table)
