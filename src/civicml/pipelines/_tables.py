"""Rows of pipelines: content-versioned graphs, their executions and each step's execution."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from civicml.store.schema import ID, JSONDoc, Name, UTCDateTime, metadata

# One row per (project, name, content version): the graph as it was when first run.
pipelines = Table(
    "pipelines",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("version", String(64), nullable=False),
    Column("graph", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_pipelines_project_id_name_version", "project_id", "name", "version", unique=True),
)

pipeline_executions = Table(
    "pipeline_executions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("pipeline_id", ID, ForeignKey("pipelines.id"), nullable=False),
    Column("parameters", JSONDoc, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("created_by", String(128), nullable=False),
    # The process running it: a 'running' execution whose process is gone can be retried.
    Column("host", String(256), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_start", BigInteger, nullable=True),
    Index("ix_pipeline_executions_project_id", "project_id"),
)

step_executions = Table(
    "step_executions",
    metadata,
    Column("execution_id", ID, primary_key=True),
    Column("step", Name, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("cache_key", String(64), nullable=True),
    Column("cache_key_doc", JSONDoc, nullable=True),
    Column("outputs", JSONDoc, nullable=True),
    Column("cached_from", ID, nullable=True),
    Column("run_id", ID, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("error", Text, nullable=True),
    ForeignKeyConstraint(["execution_id"], ["pipeline_executions.id"]),
    Index("ix_step_executions_cache_key", "cache_key"),
)

# Schedules (migration 0014): a cron expression or an event type that starts a pipeline.
pipeline_schedules = Table(
    "pipeline_schedules",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("pipeline_ref", String(256), nullable=False),
    Column("trigger", String(8), nullable=False),  # cron | event
    Column("cron", String(128), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("event_type", String(64), nullable=True),
    Column("match", JSONDoc, nullable=False),
    Column("parameters", JSONDoc, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("starting_deadline_s", Integer, nullable=True),
    # Event schedules see only audit events after this sequence number (the head at creation).
    Column("events_after", BigInteger, nullable=False),
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("creator_roles", String(512), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_pipeline_schedules_project_id_name", "project_id", "name", unique=True),
    Index("ix_pipeline_schedules_trigger_enabled", "trigger", "enabled"),
)

# One row per firing; UNIQUE(schedule_id, fire_key) is the claim: only the inserter runs it.
schedule_firings = Table(
    "schedule_firings",
    metadata,
    Column("id", ID, primary_key=True),
    Column("schedule_id", ID, ForeignKey("pipeline_schedules.id"), nullable=False),
    Column("project_id", ID, nullable=False),
    Column("fire_key", String(64), nullable=False),
    Column("fire_at", UTCDateTime, nullable=False),
    Column("event", JSONDoc, nullable=True),
    Column("parameters", JSONDoc, nullable=False),
    Column("status", String(16), nullable=False),
    Column("execution_id", ID, nullable=True),
    Column("claimed_by", String(128), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("schedule_id", "fire_key"),
    Index("ix_schedule_firings_status_lease_until", "status", "lease_until"),
)

# Named positions in the audit trail (``events``: the last sequence number matched).
scheduler_cursors = Table(
    "scheduler_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
)
