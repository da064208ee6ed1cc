"""Rows of datasets: named datasets of a project, their immutable versions, their quality
expectations, the quality and personal-data reports of each version, and the wrapped secrets of
keyed-hash pseudonymisation (migration 0023 for the last four and the status columns)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
    # The most sensitive classification of its versions (public < internal < confidential <
    # personal); None until a version is scanned for personal data (migration 0023).
    Column("classification", String(16), nullable=True),
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
    Column("digest", String(64), nullable=False),  # SHA-256 of the stored Parquet file
    # Migration 0025: SHA-256 of the logical content (civicml.data.content), the version's
    # identity; None for versions recorded before, until an ingest back-fills it.
    Column("content_hash", String(64), nullable=True),
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
    # Migration 0023: the latest quality verdict (passed, warned, quarantined, released; None:
    # never checked), the personal-data classification, what redaction made it (None: not a
    # redaction) and the recorded exceptions to the use rules ({"quarantine": …, "personal": …}).
    Column("quality_status", String(16), nullable=True),
    Column("classification", String(16), nullable=True),
    Column("redaction", JSONDoc, nullable=True),
    Column("use_approvals", JSONDoc, nullable=True),
    UniqueConstraint("dataset_id", "version"),
    UniqueConstraint("dataset_id", "digest"),  # identical bytes are one version, not a copy
    Index("ix_dataset_versions_digest", "digest"),
    # Not unique: versions recorded before 0025 may hold the same rows in different bytes.
    Index("ix_dataset_versions_dataset_id_content_hash", "dataset_id", "content_hash"),
)

dataset_expectations = Table(
    "dataset_expectations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("dataset_id", ID, ForeignKey("datasets.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("spec", JSONDoc, nullable=False),  # expectation_schemas.ExpectationCreate
    Column("blocking", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("dataset_id", "name"),
)

#: Quality and personal-data reports of dataset versions; the files (report.json, report.html)
#: are in the artifact index under owner kind ``dataset_check``.
dataset_checks = Table(
    "dataset_checks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("dataset_version_id", ID, ForeignKey("dataset_versions.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # "quality" | "pii"
    Column("trigger", String(16), nullable=False),  # "ingest" | "manual" | "pipeline"
    Column("status", String(16), nullable=False),  # quality status or classification
    Column("summary", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_dataset_checks_dataset_version_id_kind", "dataset_version_id", "kind"),
)

#: Keyed-hash (HMAC-SHA256) secrets of a project, wrapped by a key-encryption key of the key
#: provider; never stored or shown in the clear.
pseudonym_keys = Table(
    "pseudonym_keys",
    metadata,
    Column("project_id", ID, ForeignKey("projects.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("wrapped", Text, nullable=False),  # base64
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
)
