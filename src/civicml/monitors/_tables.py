"""Rows of scheduled monitors (migration 0019): monitors, their executions, ground-truth uploads.

An execution is claimed by inserting its row under ``UNIQUE(monitor_id, fire_key)`` (the due
instant of a scheduled run, or ``manual:<id>``): of any number of schedulers on one database,
only the inserter runs it (:mod:`civicml.monitors.runner`).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from civicml.store.schema import ID, JSONDoc, Name, UTCDateTime, metadata

# One row per monitor: what it watches, its schedule and window, its baseline and constraints.
monitors = Table(
    "monitors",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("description", String(1024), nullable=False),
    # data_quality | model_quality | bias_drift | attribution_drift
    Column("type", String(32), nullable=False),
    Column("endpoint", Name, nullable=False),
    Column("cron", String(128), nullable=True),
    Column("every_s", Integer, nullable=True),
    Column("window_s", Integer, nullable=False),
    Column("config", JSONDoc, nullable=False),  # schemas.MonitorConfig
    Column("baseline", JSONDoc, nullable=False),  # schemas.MonitorBaseline
    Column("constraints", JSONDoc, nullable=False),  # the type's constraints document
    Column("constraints_version", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    # The next due instant; moved on by compare-and-set when a scheduler claims one.
    Column("next_run_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("creator_roles", String(512), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Index("ix_monitors_project_id_name", "project_id", "name", unique=True),
    Index("ix_monitors_enabled_next_run_at", "enabled", "next_run_at"),
)

# One row per execution, scheduled or run by hand; the report's files are indexed under
# owner kind ``monitor_execution``, and a ``reports`` row with the same id lets the alert
# engine read its status.
monitor_executions = Table(
    "monitor_executions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("monitor_id", ID, ForeignKey("monitors.id"), nullable=False),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("fire_key", String(64), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | manual
    Column("status", String(32), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("claimed_by", String(128), nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
    Column("records", Integer, nullable=True),
    Column("labeled", Integer, nullable=True),
    Column("metrics", JSONDoc, nullable=False),
    Column("violations", JSONDoc, nullable=False),
    Column("n_violations", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("created_by", String(128), nullable=False),
    Index("ix_monitor_executions_monitor_id_fire_key", "monitor_id", "fire_key", unique=True),
    Index("ix_monitor_executions_monitor_id_started_at", "monitor_id", "started_at"),
    Index("ix_monitor_executions_status_lease_until", "status", "lease_until"),
)

# One row per ground-truth upload: (inference_id, label[, attributes]) rows as Parquet in the
# artifact store, joined to an endpoint's captured predictions by inference id.
monitor_labels = Table(
    "monitor_labels",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("endpoint_id", ID, nullable=False),
    Column("endpoint", Name, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("columns", JSONDoc, nullable=False),
    Column("uploaded_at", UTCDateTime, nullable=False),
    Column("uploaded_by", String(128), nullable=False),
    Index("ix_monitor_labels_endpoint_id_uploaded_at", "endpoint_id", "uploaded_at"),
)
