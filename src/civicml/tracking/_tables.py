"""Rows of tracking: experiments, runs, params, tags, metrics."""

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
    Text,
    UniqueConstraint,
    func,
)

from civicml.store.schema import ID, BigID, Name, UTCDateTime, metadata

experiments = Table(
    "experiments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("name", Name, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("project_id", "name"),
)
# Names are unique regardless of letter case (migration 0007); lookups compare lower(name).
Index(
    "uq_experiments_project_id_name_ci",
    experiments.c.project_id,
    func.lower(experiments.c.name),
    unique=True,
)

runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    Column("experiment_id", ID, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("host", String(256), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("pid_start", BigInteger, nullable=True),  # process start tick: tells a reused pid apart
    Index("ix_runs_experiment_start", "experiment_id", "start_time"),
    Index("ix_runs_project_status", "project_id", "status"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

# value is NULL exactly when is_nan is true (SQLite cannot store NaN; PostgreSQL could, but one
# rule everywhere keeps search semantics identical). +/-Infinity are stored as such.
metrics = Table(
    "metrics",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("run_id", ID, ForeignKey("runs.id"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", Float, nullable=True),
    Column("is_nan", Boolean, nullable=False, default=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),  # ms since epoch
    Index("ix_metrics_run_key_step", "run_id", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float, nullable=True),
    Column("is_nan", Boolean, nullable=False, default=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Index("ix_latest_metrics_key_value", "key", "value"),
)

# One row per (run, client batch id): a retried batch is recognised and stored once. Keyed by run
# too, so one run's ids never swallow another run's values.
metric_batches = Table(
    "metric_batches",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id"), primary_key=True),
    Column("batch_id", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # SHA-256 of the batch's canonical body: the same id with a different body is a conflict.
    Column("digest", String(64), nullable=True),
)
