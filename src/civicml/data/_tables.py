"""Rows of datasets: named datasets of a project and their immutable versions."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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

datasets = Table(
    "datasets",
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
    "uq_datasets_project_id_name_ci",
    datasets.c.project_id,
    func.lower(datasets.c.name),
    unique=True,
)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("dataset_id", ID, ForeignKey("datasets.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the canonical Parquet file
    Column("size", BigInteger, nullable=False),
    Column("source_format", String(16), nullable=False),
    Column("source_name", String(1024), nullable=True),
    Column("source_fingerprint", String(64), nullable=True),  # SHA-256 of the source bytes
    Column("row_count", BigInteger, nullable=False),
    Column("schema", JSONDoc, nullable=False),
    Column("profile", JSONDoc, nullable=False),
    Column("schema_changes", JSONDoc, nullable=True),
    # How the source was read: {"encoding": …, "delimiter": …} for text files (detected or given).
    Column("read_options", JSONDoc, nullable=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("dataset_id", "version"),
    UniqueConstraint("dataset_id", "digest"),  # identical content is one version, not a copy
    Index("ix_dataset_versions_digest", "digest"),
)
