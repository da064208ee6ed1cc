"""Rows of privacy: retention rules and legal holds, erasure requests, purged dataset versions
(migration 0024)."""

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
)

from civicml.store.schema import ID, JSONDoc, UTCDateTime, metadata

# One row per governed target: a dataset or an endpoint's captured requests. ``days`` is the
# retention period (None: kept until erased); ``legal_hold`` exempts it from retention and erasure.
retention_rules = Table(
    "retention_rules",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("target_kind", String(16), nullable=False),  # dataset | endpoint
    Column("target_id", ID, nullable=False),
    Column("target_name", String(128), nullable=False),
    Column("days", Integer, nullable=True),
    Column("legal_hold", Boolean, nullable=False, default=False),
    Column("hold_reason", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    UniqueConstraint("target_kind", "target_id"),
    Index("ix_retention_rules_project_id", "project_id"),
)

# Retention passes, claimed once per instant across schedulers (UNIQUE fire_key).
retention_passes = Table(
    "retention_passes",
    metadata,
    Column("fire_key", String(64), primary_key=True),
    Column("claimed_by", String(128), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("summary", JSONDoc, nullable=True),
)

# Erasure requests: the subject is kept only as a salted hash; ``pending`` lists the digests
# whose bytes are still to be deleted after the commit (finished by the next pass on a crash).
erasures = Table(
    "erasures",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("key_column", String(256), nullable=False),
    Column("subject_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # completed | deleting
    Column("reason", Text, nullable=False, default=""),
    Column("summary", JSONDoc, nullable=False),
    Column("pending", JSONDoc, nullable=False),
    Column("certificate_digest", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_erasures_project_id_created_at", "project_id", "created_at"),
)

# Dataset versions whose bytes were removed (superseded by an erasure, or expired).
purged_versions = Table(
    "purged_versions",
    metadata,
    Column("dataset_version_id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("reason", String(16), nullable=False),  # erasure | retention
    Column("erasure_id", ID, nullable=True),
    Column("successor_id", ID, nullable=True),
    Column("purged_at", UTCDateTime, nullable=False),
    Column("purged_by", String(128), nullable=False),
)
