"""Rows of serving: real-time endpoints and the model version each one serves."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
)

from civicml.store.schema import ID, Name, UTCDateTime, metadata

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("model_name", Name, nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("capture_enabled", Boolean, nullable=False),
    Column("capture_percent", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    UniqueConstraint("project_id", "name"),
    Index("ix_endpoints_model_version_id", "model_version_id"),
)
# Names are unique regardless of letter case (migration 0007); lookups compare lower(name).
Index(
    "uq_endpoints_project_id_name_ci",
    endpoints.c.project_id,
    func.lower(endpoints.c.name),
    unique=True,
)
