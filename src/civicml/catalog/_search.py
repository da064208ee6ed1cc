"""The search as SQL: one SELECT per kind of thing, united, counted and paged in the database.

Every text filter is a ``LIKE``/``ILIKE`` over a pattern whose wildcards the user cannot write
(``%``, ``_`` and the escape character are escaped), and every SELECT is limited to the projects
where the caller holds that kind's read permission, so a search costs what the matching rows
cost and never shows what the caller may not read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, and_, cast, func, literal, or_, select

from civicml.catalog._tables import catalog_entries
from civicml.data._tables import dataset_versions, datasets
from civicml.evaluation._tables import evaluations
from civicml.governance._tables import projects
from civicml.monitoring._tables import reports
from civicml.registry._tables import model_versions, registered_models

__all__ = ["Filters", "like_pattern", "searches"]

_ESCAPE = "\\"


def like_pattern(text: str, *, anywhere: bool = True) -> str:
    """``text`` as a LIKE pattern matching it literally (wildcards escaped)."""
    clean = (
        text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )
    return f"%{clean}%" if anywhere else clean


@dataclass(frozen=True, slots=True)
class Filters:
    """What the caller asked for; None: no filter on it."""

    text: str | None
    column: str | None
    tag: str | None
    owner: str | None
    classification: str | None
    project: str | None


def _ilike(column: Any, text: str) -> ColumnElement[bool]:
    return column.ilike(like_pattern(text), escape=_ESCAPE)  # type: ignore[no-any-return]


def _entry(kind: str, entity_id: Any) -> Any:
    return and_(catalog_entries.c.entity_kind == kind, catalog_entries.c.entity_id == entity_id)


def _common(
    query: Select[Any], f: Filters, owner: Any, project_ids: Sequence[str], project_id: Any
) -> Select[Any]:
    query = query.where(project_id.in_(list(project_ids)))
    if f.owner is not None:
        query = query.where(func.lower(owner) == f.owner.lower())
    if f.project is not None:
        query = query.where(func.lower(projects.c.name) == f.project.lower())
    return query


def _entry_filters(query: Select[Any], f: Filters, detected: Any = None) -> Select[Any]:
    if f.classification is not None:
        declared = catalog_entries.c.classification
        effective = declared if detected is None else func.coalesce(declared, detected)
        query = query.where(effective == f.classification)
    if f.tag is not None:
        tag = json.dumps(f.tag.strip().lower())
        query = query.where(
            cast(catalog_entries.c.tags, Text).like(like_pattern(tag), escape=_ESCAPE)
        )
    return query


def _columns(kind: str, id_: Any, name: Any, created_at: Any, subkind: Any = None) -> list[Any]:
    return [
        literal(kind, String).label("kind"),
        id_.label("id"),
        name.label("name"),
        projects.c.name.label("project"),
        created_at.label("created_at"),
        (subkind if subkind is not None else literal(None, String)).label("subkind"),
    ]


def _datasets(f: Filters, project_ids: Sequence[str]) -> Select[Any]:
    query = (
        select(*_columns("dataset", datasets.c.id, datasets.c.name, datasets.c.created_at))
        .join(projects, projects.c.id == datasets.c.project_id)
        .outerjoin(catalog_entries, _entry("dataset", datasets.c.id))
    )
    query = _common(query, f, datasets.c.created_by, project_ids, datasets.c.project_id)
    query = _entry_filters(query, f, datasets.c.classification)
    if f.text is not None:
        query = query.where(
            or_(
                _ilike(datasets.c.name, f.text),
                _ilike(datasets.c.description, f.text),
                _ilike(catalog_entries.c.description, f.text),
            )
        )
    if f.column is not None:
        latest = (
            select(dataset_versions.c.dataset_id, func.max(dataset_versions.c.version).label("v"))
            .group_by(dataset_versions.c.dataset_id)
            .subquery()
        )
        needle = like_pattern('"name": ' + json.dumps(f.column.lower()))
        query = (
            query.join(latest, latest.c.dataset_id == datasets.c.id)
            .join(
                dataset_versions,
                and_(
                    dataset_versions.c.dataset_id == latest.c.dataset_id,
                    dataset_versions.c.version == latest.c.v,
                ),
            )
            .where(func.lower(cast(dataset_versions.c.schema, Text)).like(needle, escape=_ESCAPE))
        )
    return query


def _models(f: Filters, project_ids: Sequence[str]) -> Select[Any]:
    m = registered_models
    query = (
        select(*_columns("model", m.c.id, m.c.name, m.c.created_at))
        .join(projects, projects.c.id == m.c.project_id)
        .outerjoin(catalog_entries, _entry("model", m.c.id))
    )
    query = _entry_filters(_common(query, f, m.c.created_by, project_ids, m.c.project_id), f)
    if f.text is not None:
        query = query.where(
            or_(
                _ilike(m.c.name, f.text),
                _ilike(m.c.description, f.text),
                _ilike(catalog_entries.c.description, f.text),
            )
        )
    return query


def _model_versions(f: Filters, project_ids: Sequence[str]) -> Select[Any]:
    m, v = registered_models, model_versions
    query = (
        select(*_columns("model_version", v.c.id, m.c.name, v.c.created_at))
        .select_from(v)
        .join(m, m.c.id == v.c.model_id)
        .join(projects, projects.c.id == m.c.project_id)
    )
    query = _common(query, f, v.c.created_by, project_ids, m.c.project_id)
    if f.text is not None:
        query = query.where(or_(_ilike(m.c.name, f.text), _ilike(v.c.description, f.text)))
    return query


def _reports(f: Filters, project_ids: Sequence[str]) -> Select[Any]:
    query = select(
        *_columns("report", reports.c.id, reports.c.title, reports.c.created_at, reports.c.kind)
    ).join(projects, projects.c.id == reports.c.project_id)
    query = _common(query, f, reports.c.created_by, project_ids, reports.c.project_id)
    if f.text is not None:
        query = query.where(or_(_ilike(reports.c.title, f.text), _ilike(reports.c.kind, f.text)))
    return query


def _evaluations(f: Filters, project_ids: Sequence[str]) -> Select[Any]:
    e = evaluations
    query = select(*_columns("evaluation", e.c.id, e.c.title, e.c.created_at, e.c.kind)).join(
        projects, projects.c.id == e.c.project_id
    )
    query = _common(query, f, e.c.created_by, project_ids, e.c.project_id)
    if f.text is not None:
        query = query.where(or_(_ilike(e.c.title, f.text), _ilike(e.c.kind, f.text)))
    return query


def searches(f: Filters, kinds: set[str], readable: dict[str, list[str]]) -> list[Select[Any]]:
    """The SELECTs for ``kinds`` given the filters; ``readable`` maps a permission to the ids
    of the projects where the caller holds it. Kinds a filter cannot apply to are left out
    (only datasets have columns; only datasets and models have tags and a classification)."""
    out: list[Select[Any]] = []
    entry_only = f.tag is not None or f.classification is not None
    if "dataset" in kinds and readable["datasets.read"]:
        out.append(_datasets(f, readable["datasets.read"]))
    if f.column is not None:
        return out
    if "model" in kinds and readable["models.read"]:
        out.append(_models(f, readable["models.read"]))
    if entry_only:
        return out
    if "model_version" in kinds and readable["models.read"]:
        out.append(_model_versions(f, readable["models.read"]))
    if "report" in kinds:
        if readable["monitoring.read"]:
            out.append(_reports(f, readable["monitoring.read"]))
        if readable["evaluations.read"]:
            out.append(_evaluations(f, readable["evaluations.read"]))
    return out
