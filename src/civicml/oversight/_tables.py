"""Rows of oversight: model cards (one per model version) and their immutable content versions."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table, Text

from civicml.store.schema import ID, JSONDoc, UTCDateTime, metadata

model_cards = Table(
    "model_cards",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=False, unique=True),
    Column("status", String(32), nullable=False),  # Draft | PendingReview | Approved | Archived
    Column("latest_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

model_card_versions = Table(
    "model_card_versions",
    metadata,
    Column("card_id", ID, ForeignKey("model_cards.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content", JSONDoc, nullable=False),  # the person-written fields only
    Column("note", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
)
