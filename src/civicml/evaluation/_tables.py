"""Rows of the evaluation stage: stored bias and explanation reports of model versions."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table

from civicml.store.schema import ID, JSONDoc, UTCDateTime, metadata

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id"), nullable=False),
    # "bias_pre_training" | "bias_post_training" | "explanation"
    Column("kind", String(32), nullable=False),
    Column("model_version_id", ID, ForeignKey("model_versions.id"), nullable=True),
    Column("dataset_version_id", ID, ForeignKey("dataset_versions.id"), nullable=False),
    Column("title", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("summary", JSONDoc, nullable=False),
    Column("inputs", JSONDoc, nullable=False),
    Index("ix_evaluations_project_id_created_at", "project_id", "created_at"),
    Index("ix_evaluations_model_version_id_kind", "model_version_id", "kind"),
)
