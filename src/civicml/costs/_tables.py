"""Rows of costs: usage lines (what runs and endpoints used) and budgets per project."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from civicml.store.schema import ID, BigID, UTCDateTime, metadata

# A line item, as on a bill: each names its project, subject and period and carries its label,
# so a report never depends on the subject still existing (a deleted endpoint cost what it
# cost). A run has one line (its measurements added up); an endpoint one per hour it served.
usage_lines = Table(
    "usage_lines",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("subject_kind", String(16), nullable=False),  # "run" | "endpoint"
    Column("subject_id", ID, nullable=False),
    Column("label", String(512), nullable=False),  # "experiment/run" or the endpoint's name
    Column("execution_id", ID, nullable=True),  # the pipeline execution of a step's run
    Column("pipeline", String(128), nullable=True),
    Column("period_start", UTCDateTime, nullable=False),  # run start / the endpoint's hour
    Column("updated_at", UTCDateTime, nullable=False),
    Column("wall_s", Float, nullable=False),
    Column("cpu_s", Float, nullable=False),
    Column("gpu_s", Float, nullable=False),
    Column("memory_gb_s", Float, nullable=False),
    Column("peak_memory_bytes", BigInteger, nullable=False),
    Column("invocations", BigInteger, nullable=False),
    UniqueConstraint("subject_kind", "subject_id", "period_start"),
    Index("ix_usage_lines_project_period", "project_id", "period_start"),
)

budgets = Table(
    "budgets",
    metadata,
    Column("project_id", ID, ForeignKey("projects.id"), primary_key=True),
    Column("amount", Float, nullable=False),  # per calendar month (UTC), in `currency`
    Column("currency", String(3), nullable=False),
    Column("warn_fraction", Float, nullable=False),
    Column("hard_stop", Boolean, nullable=False),
    Column("set_by", String(128), nullable=False),
    Column("set_at", UTCDateTime, nullable=False),
    Column("warned_month", String(7), nullable=True),  # "2026-12": the warning was given
    Column("stopped_month", String(7), nullable=True),  # the first refusal was recorded
)
