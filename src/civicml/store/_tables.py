"""Rows of the store layer: the artifact index (who owns which bytes under which path)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Table, UniqueConstraint

from civicml.store.schema import ID, UTCDateTime, metadata

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, nullable=False, index=True),
    Column("owner_kind", String(32), nullable=False),
    Column("owner_id", ID, nullable=False),
    Column("path", String(1024), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("media_type", String(128), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("owner_kind", "owner_id", "path"),
    Index("ix_artifacts_digest", "digest"),
)
