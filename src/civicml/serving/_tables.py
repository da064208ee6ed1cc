"""Rows of serving: real-time endpoints, their variants, rollouts, counters and shadow reports."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
)

from civicml.store.schema import ID, JSONDoc, Name, UTCDateTime, metadata

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("model_name", Name, nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("capture_enabled", Boolean, nullable=False),
    Column("capture_percent", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    # Migration 0021: "single-model" (variants answer) or "multi-model" (endpoint_models, each
    # loaded on first use under an LRU memory limit: model_cache_mb, null = the setting).
    Column("mode", String(16), nullable=False, server_default="single-model"),
    Column("model_cache_mb", Float, nullable=True),
    UniqueConstraint("project_id", "name"),
    Index("ix_endpoints_model_version_id", "model_version_id"),
)
# Names are unique regardless of letter case (migration 0007); lookups compare lower(name).
Index(
    "uq_endpoints_project_id_name_ci",
    endpoints.c.project_id,
    func.lower(endpoints.c.name),
    unique=True,
)

# Variants (migration 0017): the model versions an endpoint serves, each with a traffic weight
# (share = weight / sum of live weights) or, for the one shadow, a sampling percentage. The
# endpoint row's model_* columns name its primary variant (the live one with the most weight).
endpoint_variants = Table(
    "endpoint_variants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("endpoint_id", ID, ForeignKey("endpoints.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("role", String(16), nullable=False),  # "live" or "shadow"
    Column("model_name", Name, nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("weight", Float, nullable=False),
    Column("shadow_percent", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    UniqueConstraint("endpoint_id", "name"),
    Index("ix_endpoint_variants_model_version_id", "model_version_id"),
)

# Multi-model endpoints (migration 0021): the approved model versions a multi-model endpoint
# serves, addressed by name (X-Civicml-Target-Model: MODEL[/VERSION]); ``ref`` is the version as
# given (a number or an alias, resolved when the model was added), ``size_bytes`` the model
# files' size, which the LRU cache of loaded models counts against its limit.
endpoint_models = Table(
    "endpoint_models",
    metadata,
    Column("id", ID, primary_key=True),
    Column("endpoint_id", ID, ForeignKey("endpoints.id"), nullable=False),
    Column("model_name", Name, nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("ref", Name, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("endpoint_id", "model_version_id"),
    Index("ix_endpoint_models_model_version_id", "model_version_id"),
)

# Guarded updates: one row per rollout, a state machine advanced by compare-and-set on
# (status, current_step), so any process may tick it and a restart continues it.
endpoint_rollouts = Table(
    "endpoint_rollouts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("endpoint_id", ID, ForeignKey("endpoints.id"), nullable=False),
    Column("strategy", String(16), nullable=False),  # all_at_once | canary | linear
    Column("status", String(16), nullable=False),  # in_progress | succeeded | rolled_back | ...
    Column("new_variant", Name, nullable=False),
    Column("model_name", Name, nullable=False),
    Column("model_version_id", ID, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("created_variant", Boolean, nullable=False),
    Column("old_weights", JSONDoc, nullable=False),  # {variant: weight} before the rollout
    Column("steps", JSONDoc, nullable=False),  # percent of traffic on the new variant per step
    Column("bake_s", Float, nullable=False),
    Column("alarms", JSONDoc, nullable=False),  # [{"metric", "op", "threshold"}]
    Column("baseline", JSONDoc, nullable=False),  # the new variant's counters at the start
    Column("current_step", Integer, nullable=False),
    Column("step_started_at", UTCDateTime, nullable=False),
    Column("reason", String(1024), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_endpoint_rollouts_endpoint_id_status", "endpoint_id", "status"),
)

# Per-variant counters, flushed by each serving process under its own ``source`` key (the
# cumulative totals of that process), so the sum over sources is the variant's total.
endpoint_variant_stats = Table(
    "endpoint_variant_stats",
    metadata,
    Column("variant_id", ID, primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("endpoint_id", ID, nullable=False),
    Column("invocations", BigInteger, nullable=False),
    Column("errors_4xx", BigInteger, nullable=False),
    Column("errors_5xx", BigInteger, nullable=False),
    Column("latency", JSONDoc, nullable=False),  # counts per bucket of LATENCY_BOUNDS_MS
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_endpoint_variant_stats_endpoint_id", "endpoint_id"),
)

# Shadow comparison reports (report.json + report.html in the artifact index, owner kind
# "shadow_report"); they outlive the endpoint, so no foreign key to it.
shadow_reports = Table(
    "shadow_reports",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("endpoint_id", ID, nullable=False),
    Column("endpoint", Name, nullable=False),
    Column("live_variant", Name, nullable=False),
    Column("shadow_variant", Name, nullable=False),
    Column("title", String(256), nullable=False),
    Column("summary", JSONDoc, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_shadow_reports_endpoint_id_created_at", "endpoint_id", "created_at"),
)

# Batch prediction jobs (migration 0020): a dataset version in, a predictions dataset version
# out. The running process (host, pid and its start tick) and a heartbeat per chunk let a job
# whose process died be marked failed (civicml.serving.batch).
batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("model_name", Name, nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("input_dataset", Name, nullable=False),
    Column("input_version_id", ID, ForeignKey("dataset_versions.id"), nullable=False),
    Column("input_version", Integer, nullable=False),
    Column("output_dataset", Name, nullable=False),
    Column("output_version_id", ID, ForeignKey("dataset_versions.id"), nullable=True),
    Column("output_version", Integer, nullable=True),
    Column("join_source", String(16), nullable=False),  # input | none
    Column("id_column", String(256), nullable=True),
    Column("explain", Boolean, nullable=False),
    Column("chunk_rows", Integer, nullable=False),
    Column("executor", String(16), nullable=False),  # local | ray
    Column("rows", BigInteger, nullable=True),
    Column("chunks", Integer, nullable=True),
    Column("error", String(2048), nullable=True),
    Column("host", String(256), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_start", BigInteger, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Index("ix_batch_jobs_project_id_created_at", "project_id", "created_at"),
    Index("ix_batch_jobs_status", "status"),
)
