"""Search hits with their details, catalog entry rows, and close names when nothing matched."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from civicml.catalog._tables import catalog_entries
from civicml.catalog.schemas import CatalogHit, HitKind
from civicml.data._tables import dataset_versions, datasets
from civicml.evaluation._tables import evaluations
from civicml.monitoring._tables import reports
from civicml.registry._tables import model_versions, registered_models

__all__ = ["entry_doc", "entry_row", "hydrate", "suggest"]

_MAX_SUGGEST = 5_000


def entry_row(conn: Connection, kind: str, entity_id: str) -> Any:
    """The catalog row of a dataset or model, or None when nothing was written about it."""
    return conn.execute(
        select(catalog_entries).where(
            catalog_entries.c.entity_kind == kind, catalog_entries.c.entity_id == entity_id
        )
    ).first()


def entry_doc(row: Any) -> dict[str, Any]:
    """The written fields of a catalog row (empty ones for None), as audited."""
    if row is None:
        return {"description": "", "classification": None, "tags": [], "columns": {}}
    return {
        "description": row.description,
        "classification": row.classification,
        "tags": list(row.tags or []),
        "columns": dict(row.columns or {}),
    }


def hydrate(conn: Connection, rows: Sequence[Any]) -> list[CatalogHit]:
    """The page's rows with their details, read kind by kind (a page is at most 200)."""
    ids: dict[str, list[str]] = {}
    for r in rows:
        ids.setdefault(r.kind, []).append(r.id)
    details: dict[tuple[str, str], dict[str, Any]] = {}
    entries = {
        (e.entity_kind, e.entity_id): entry_doc(e)
        for e in conn.execute(
            select(catalog_entries).where(
                catalog_entries.c.entity_id.in_(ids.get("dataset", []) + ids.get("model", []))
            )
        )
    }
    if ids.get("dataset"):
        latest = func.max(dataset_versions.c.version)
        for r in conn.execute(
            select(
                datasets.c.id,
                datasets.c.description,
                datasets.c.created_by,
                latest,
                datasets.c.classification,
            )
            .outerjoin(dataset_versions, dataset_versions.c.dataset_id == datasets.c.id)
            .where(datasets.c.id.in_(ids["dataset"]))
            .group_by(
                datasets.c.id,
                datasets.c.description,
                datasets.c.created_by,
                datasets.c.classification,
            )
        ):
            details[("dataset", r[0])] = {
                "description": r[1],
                "owner": r[2],
                "version": r[3],
                "classification": r[4],
            }
    if ids.get("model"):
        latest = func.max(model_versions.c.version)
        m = registered_models
        for r in conn.execute(
            select(m.c.id, m.c.description, m.c.created_by, latest)
            .outerjoin(model_versions, model_versions.c.model_id == m.c.id)
            .where(m.c.id.in_(ids["model"]))
            .group_by(m.c.id, m.c.description, m.c.created_by)
        ):
            details[("model", r[0])] = {"description": r[1], "owner": r[2], "version": r[3]}
    if ids.get("model_version"):
        v = model_versions
        for r in conn.execute(
            select(v.c.id, v.c.description, v.c.created_by, v.c.version).where(
                v.c.id.in_(ids["model_version"])
            )
        ):
            details[("model_version", r[0])] = {
                "description": r[1],
                "owner": r[2],
                "version": r[3],
            }
    for kind, table in (("report", reports), ("evaluation", evaluations)):
        if ids.get(kind):
            for r in conn.execute(
                select(table.c.id, table.c.created_by).where(table.c.id.in_(ids[kind]))
            ):
                details[(kind, r[0])] = {"description": "", "owner": r[1], "version": None}
    out = []
    for r in rows:
        found = details.get((r.kind, r.id), {"description": "", "owner": "", "version": None})
        entry = entries.get((r.kind, r.id))
        kind = HitKind.REPORT if r.kind == "evaluation" else HitKind(r.kind)
        lineage = None
        if kind is HitKind.DATASET:
            lineage = f"civicml catalog lineage dataset {r.name} -p {r.project}"
        elif kind in (HitKind.MODEL, HitKind.MODEL_VERSION):
            suffix = f":{found['version']}" if kind is HitKind.MODEL_VERSION else ""
            lineage = f"civicml catalog lineage model {r.name}{suffix} -p {r.project}"
        out.append(
            CatalogHit(
                kind=kind,
                project=r.project,
                name=r.name,
                id=r.id,
                version=found["version"],
                subkind=r.subkind,
                description=(entry or {}).get("description") or found["description"] or "",
                classification=(entry or {}).get("classification") or found.get("classification"),
                tags=(entry or {}).get("tags", []),
                owner=found["owner"],
                created_at=r.created_at,
                lineage=lineage,
            )
        )
    return out


def suggest(conn: Connection, text: str, readable: dict[str, list[str]]) -> list[str]:
    names: set[str] = set()
    for table, permission in ((datasets, "datasets.read"), (registered_models, "models.read")):
        if readable[permission]:
            names.update(
                conn.execute(
                    select(table.c.name)
                    .where(table.c.project_id.in_(readable[permission]))
                    .limit(_MAX_SUGGEST)
                ).scalars()
            )
    lowered = {n.lower(): n for n in names}
    found = difflib.get_close_matches(text.lower(), list(lowered), n=5, cutoff=0.6)
    return [lowered[f] for f in found]
