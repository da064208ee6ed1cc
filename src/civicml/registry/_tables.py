"""Rows of the model registry: registered models, versions, approvals, aliases."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from civicml.store.schema import ID, JSONDoc, Name, UTCDateTime, metadata

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("next_version", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("project_id", "name"),
)
# Names are unique regardless of letter case (migration 0007); lookups compare lower(name).
Index(
    "uq_registered_models_project_id_name_ci",
    registered_models.c.project_id,
    func.lower(registered_models.c.name),
    unique=True,
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("model_id", ID, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_id", ID, ForeignKey("runs.id"), nullable=True),
    Column("artifact_digest", String(64), nullable=False),
    Column("artifact_path", String(1024), nullable=False),
    Column("signature", JSONDoc, nullable=True),
    Column("metrics", JSONDoc, nullable=True),
    Column("description", Text, nullable=False, default=""),
    Column("approval_status", String(32), nullable=False),
    Column("approval_by", String(128), nullable=True),
    Column("approval_note", Text, nullable=True),
    Column("approval_at", UTCDateTime, nullable=True),
    Column("archived", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    # Ed25519 over the manifest digest, project, name and number (store.signing; migration 0011)
    Column("manifest_signature", JSONDoc, nullable=True),
    UniqueConstraint("model_id", "version"),
    Index("ix_model_versions_run", "run_id"),
)

approval_history = Table(
    "approval_history",
    metadata,
    Column("id", ID, primary_key=True),
    Column("version_id", ID, ForeignKey("model_versions.id"), nullable=False, index=True),
    Column("from_status", String(32), nullable=False),
    Column("to_status", String(32), nullable=False),
    Column("by", String(128), nullable=False),
    Column("note", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    # the approval gate's evaluation and any override (justification, role), for Approved
    Column("evidence", JSONDoc, nullable=True),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_id", ID, ForeignKey("registered_models.id"), primary_key=True),
    Column("alias", Name, primary_key=True),
    Column("version_id", ID, ForeignKey("model_versions.id"), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
)
Index(  # aliases are unique per model regardless of letter case (migration 0007)
    "uq_model_aliases_model_id_alias_ci",
    model_aliases.c.model_id,
    func.lower(model_aliases.c.alias),
    unique=True,
)

approval_policies = Table(
    "approval_policies",
    metadata,
    Column("model_id", ID, ForeignKey("registered_models.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("policy", JSONDoc, nullable=False),  # registry.policy.ApprovalPolicy
    Column("source", Text, nullable=False),  # the file as the user wrote it
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
)
