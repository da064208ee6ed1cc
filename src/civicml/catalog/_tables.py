"""Rows of the catalog: what people wrote about a dataset or model (migration 0024).

One row per documented entity: a description, a classification (public, internal, confidential,
personal), tags, and a note per column. Names, owners and schemas are read from the stages' own
tables; only what a person adds lives here.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text

from civicml.store.schema import ID, JSONDoc, UTCDateTime, metadata

catalog_entries = Table(
    "catalog_entries",
    metadata,
    Column("entity_kind", String(32), primary_key=True),  # dataset | model
    Column("entity_id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("classification", String(16), nullable=True),
    Column("tags", JSONDoc, nullable=False),  # sorted list of strings
    Column("columns", JSONDoc, nullable=False),  # {column name: note}
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Index("ix_catalog_entries_project_id", "project_id"),
)
