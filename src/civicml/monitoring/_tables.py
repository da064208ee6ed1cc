"""Rows of the monitoring stage: stored reports (drift reports today)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table

from civicml.store.schema import ID, JSONDoc, UTCDateTime, metadata

reports = Table(
    "reports",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("kind", String(32), nullable=False),  # "drift"
    Column("title", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("summary", JSONDoc, nullable=False),  # records.ReportSummary
    Column("inputs", JSONDoc, nullable=False),  # records.ReportInputs
    Index("ix_reports_project_id_created_at", "project_id", "created_at"),
)
