"""Rows of pipelines: content-versioned graphs, their executions and each step's execution."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, ForeignKeyConstraint, Index, Integer, String, Table, Text

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
