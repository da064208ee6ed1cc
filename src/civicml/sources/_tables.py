"""Rows of sources (migration 0022): database and stream sources and their runs.

A source's committed position (watermark, stream sequence, entry id) lives on its row and moves
by compare-and-set on ``position_seq`` in the transaction that records the dataset version, so a
version and the position after it commit together or not at all. One run holds a source at a
time: ``holder`` / ``lease_until`` are taken by compare-and-set and renewed while it runs.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from civicml.store.schema import ID, JSONDoc, Name, UTCDateTime, metadata

sources = Table(
    "sources",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("kind", String(16), nullable=False),  # database | nats | redis | mqtt | rabbitmq
    Column("connection", String(128), nullable=True),  # a name in setting source_connections
    Column("url", String(2000), nullable=True),  # an inline URL (never with a password)
    Column("dataset", Name, nullable=False),
    Column("config", JSONDoc, nullable=False),
    Column("cron", String(128), nullable=True),
    Column("every_s", Integer, nullable=True),
    Column("anchor", UTCDateTime, nullable=False),
    Column("next_run_at", UTCDateTime, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("position", JSONDoc, nullable=False),
    Column("position_seq", Integer, nullable=False),
    Column("holder", String(128), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("description", String(1024), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("creator_roles", String(512), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Index("ix_sources_project_id_name", "project_id", "name", unique=True),
    Index("ix_sources_enabled_next_run_at", "enabled", "next_run_at"),
)

source_runs = Table(
    "source_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("source_id", ID, ForeignKey("sources.id"), nullable=False),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("trigger", String(16), nullable=False),  # manual | schedule
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("seconds", Float, nullable=True),
    Column("rows", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("versions", JSONDoc, nullable=False),
    Column("position_before", JSONDoc, nullable=False),
    Column("position_after", JSONDoc, nullable=False),
    Column("error", Text, nullable=True),
    Column("created_by", String(128), nullable=False),
    Index("ix_source_runs_source_id_started_at", "source_id", "started_at"),
)
