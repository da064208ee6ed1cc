"""Marking the model versions trained on erased data.

From the erased dataset versions, lineage is walked downstream along ``ContributedTo``,
``Produced`` and ``DerivedFrom`` through runs and derived dataset versions (never past a model
version, so predictions captured from a model do not taint the next one). Each model version
reached gets the erasure's id under ``trained_on_erased_data`` on its lineage node — what its
card and the model dashboard show — and a ``data.erased`` audit event in its own project, the
event a pipeline schedule can retrain on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from civicml.governance._tables import lineage_edges, lineage_nodes, projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.schemas import Project
from civicml.registry._tables import model_versions, registered_models

__all__ = ["ERASED_FLAG", "flag_models"]

#: The flag a model version's lineage node carries once trained on erased data.
ERASED_FLAG = "trained_on_erased_data"
_MAX_HOPS = 10


def flag_models(
    lineage: LineageService,
    audit: AuditTrail,
    uow: Any,
    proj: Project,
    erasure_id: str,
    version_ids: list[str],
) -> list[dict[str, Any]]:
    """Mark every model version trained on these dataset versions (or on data derived from
    them); one ``data.erased`` event each."""
    conn = uow.conn
    if not version_ids:
        return []
    frontier = list(
        conn.execute(
            select(lineage_nodes.c.id).where(
                lineage_nodes.c.kind == "dataset_version",
                lineage_nodes.c.ref.in_(version_ids),
            )
        ).scalars()
    )
    seen = set(frontier)
    models: set[str] = set()
    for _ in range(_MAX_HOPS):
        if not frontier:
            break
        rows = conn.execute(
            select(lineage_nodes.c.id, lineage_nodes.c.kind, lineage_nodes.c.ref)
            .join(lineage_edges, lineage_edges.c.dst == lineage_nodes.c.id)
            .where(
                lineage_edges.c.src.in_(frontier),
                lineage_edges.c.kind.in_(("ContributedTo", "Produced", "DerivedFrom")),
            )
        ).all()
        frontier = []
        for node_id, kind, ref in rows:
            if node_id in seen:
                continue
            seen.add(node_id)
            if kind == "model_version":
                models.add(ref)
            elif kind in ("run", "dataset_version"):
                frontier.append(node_id)
    out = []
    found = conn.execute(
        select(
            model_versions.c.id,
            model_versions.c.version,
            registered_models.c.name,
            projects.c.name.label("project"),
        )
        .join(registered_models, registered_models.c.id == model_versions.c.model_id)
        .join(projects, projects.c.id == registered_models.c.project_id)
        .where(model_versions.c.id.in_(sorted(models)))
        .order_by(projects.c.name, registered_models.c.name, model_versions.c.version)
    ).all()
    for mv in found:
        node = conn.execute(
            select(lineage_nodes.c.properties).where(
                lineage_nodes.c.kind == "model_version", lineage_nodes.c.ref == mv.id
            )
        ).scalar()
        marks = list((node or {}).get(ERASED_FLAG) or [])
        lineage.annotate(uow, "model_version", mv.id, {ERASED_FLAG: [*marks, erasure_id]})
        event = audit.record(
            uow,
            "data.erased",
            "model_version",
            mv.id,
            project=mv.project,
            after={
                "name": mv.name,
                "version": mv.version,
                "erasure_id": erasure_id,
                "erasure_project": proj.name,
            },
        )
        out.append(
            {
                "project": mv.project,
                "model": mv.name,
                "version": mv.version,
                "model_version_id": mv.id,
                "event": event,
            }
        )
    return out
