"""The catalog service: search what the caller may read, document it, reach its lineage.

A search covers every project the caller may read, kind by kind: datasets where it holds
``datasets.read``, models and their versions where it holds ``models.read``, drift and monitor
reports (``monitoring.read``) and bias and explanation evaluations (``evaluations.read``). A
project where it holds none of these never appears. Documenting a dataset or model (description,
classification, tags, column notes) takes ``datasets.write`` or ``models.write`` and is audited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, union_all, update

from civicml.catalog._hits import entry_doc, entry_row, hydrate, suggest
from civicml.catalog._search import Filters, searches
from civicml.catalog._tables import catalog_entries
from civicml.catalog.schemas import (
    MAX_PAGE,
    MAX_QUERY,
    CatalogEntry,
    ColumnDoc,
    DescribeRequest,
    EntryKind,
    HitKind,
    SearchPage,
)
from civicml.core.errors import InvalidInputError, closest
from civicml.data.schemas import Classification
from civicml.data.service import DatasetService
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import LineageGraph
from civicml.registry.service import RegistryService
from civicml.store.context import Context

__all__ = ["CatalogService"]

_READ = ("datasets.read", "models.read", "monitoring.read", "evaluations.read")
_MAX_OFFSET = 1_000_000
_FILTER_MAX = 256


class CatalogService:
    """Searches and documents datasets, models and reports across the caller's projects.

    Example:
        >>> page = CatalogService(ctx).search("applications", kinds=["dataset"])  # doctest: +SKIP
        >>> [h.name for h in page.hits]  # doctest: +SKIP
        ['applications']
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._projects = ProjectService(ctx)
        self._audit = AuditTrail(ctx)

    # Search -----------------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        *,
        kinds: list[str] | None = None,
        column: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        classification: str | None = None,
        project: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> SearchPage:
        """One page of what matches, by name then project.

        Args:
            text: Part of a name, description or report title (case-insensitive).
            kinds: Any of ``dataset``, ``model``, ``model_version``, ``report`` (default all).
            column: Datasets whose latest version has a column of this name.
            tag: Datasets and models with this catalog tag.
            owner: Created by this user.
            classification: ``public``, ``internal``, ``confidential`` or ``personal``.
            project: Only this project.
            limit: Hits per page (1 to 200).
            offset: Hits to skip.

        Raises:
            InvalidInputError: A filter is too long, a kind or classification unknown, or the
                page out of range.
        """
        filters = Filters(
            text=_clean("text", text, MAX_QUERY),
            column=_clean("column", column, _FILTER_MAX),
            tag=_clean("tag", tag, _FILTER_MAX),
            owner=_clean("owner", owner, _FILTER_MAX),
            classification=None if classification is None else _classification(classification),
            project=_clean("project", project, _FILTER_MAX),
        )
        wanted = _kinds(kinds)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError(
                f"limit {limit} is out of range.", hint=f"Use 1 to {MAX_PAGE} hits per page."
            )
        if not 0 <= offset <= _MAX_OFFSET:
            raise InvalidInputError(
                f"offset {offset} is out of range.", hint=f"Use 0 to {_MAX_OFFSET:,}."
            )
        readable = self._readable()
        parts = searches(filters, wanted, readable)
        if not parts:
            return SearchPage(hits=[], total=0, limit=limit, offset=offset)
        united = union_all(*parts).subquery()
        with self._ctx.db.read() as conn:
            total = int(conn.execute(select(func.count()).select_from(united)).scalar() or 0)
            rows = conn.execute(
                select(united)
                .order_by(func.lower(united.c.name), united.c.project, united.c.kind, united.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
            hits = hydrate(conn, rows)
            suggestions = (
                suggest(conn, filters.text, readable)
                if total == 0 and filters.text is not None
                else []
            )
        return SearchPage(
            hits=hits, total=total, limit=limit, offset=offset, suggestions=suggestions
        )

    def _readable(self) -> dict[str, list[str]]:
        access = self._projects.access
        with self._ctx.db.read() as conn:
            rows = conn.execute(select(projects.c.id, projects.c.name)).all()
        return {p: [r.id for r in rows if access.allows(r.id, r.name, p)] for p in _READ}

    # Entries ----------------------------------------------------------------------------------
    def get(self, project: str, kind: str, name: str) -> CatalogEntry:
        """The catalog entry of a dataset or model (``datasets.read`` / ``models.read``)."""
        entity = self._entity(project, _entry_kind(kind), name)
        with self._ctx.db.read() as conn:
            return self._entry(conn, entity)

    def describe(
        self, project: str, kind: str, name: str, request: DescribeRequest
    ) -> CatalogEntry:
        """Write the description, classification, tags or column notes of a dataset or model
        (``datasets.write`` / ``models.write``); what the request leaves out stays.

        Raises:
            InvalidInputError: A column note names a column the latest version lacks.
        """
        entry_kind = _entry_kind(kind)
        entity = self._entity(project, entry_kind, name)
        self._projects.get(project, f"{entry_kind.value}s.write")
        detected = entity["detected"]
        if request.classification is not None and detected is not None:
            floor = Classification(detected)
            if request.classification.rank < floor.rank:
                raise InvalidInputError(
                    f"Dataset {name!r} holds {floor.value} data by its personal-data scan; it "
                    f"cannot be declared {request.classification.value}.",
                    hint="Redact it into a successor version first (docs/datasets.md), or "
                    f"declare {floor.value} or higher.",
                )
        known = {c.name for c in entity.get("schema", [])}
        for column in request.columns or {}:
            if entry_kind is EntryKind.MODEL:
                raise InvalidInputError(
                    "Column notes are for datasets.", hint="Describe the model's dataset."
                )
            if column not in known:
                raise InvalidInputError(
                    f"Dataset {name!r} has no column {column!r} in its latest version.",
                    hint=closest(column, known) or "civicml datasets show NAME lists them.",
                )
        with self._ctx.db.write() as uow:
            conn = uow.conn
            row = entry_row(conn, entry_kind.value, entity["id"])
            before = entry_doc(row)
            after = dict(before)
            if request.description is not None:
                after["description"] = request.description
            if request.classification is not None:
                after["classification"] = request.classification.value
            if request.tags is not None:
                after["tags"] = list(request.tags)
            if request.columns is not None:
                notes = dict(after["columns"])
                for column, note in request.columns.items():
                    if note:
                        notes[column] = note
                    else:
                        notes.pop(column, None)
                after["columns"] = notes
            values = {
                **after,
                "updated_at": self._ctx.clock.now(),
                "updated_by": self._ctx.principal.user,
            }
            if row is None:
                conn.execute(
                    insert(catalog_entries).values(
                        entity_kind=entry_kind.value,
                        entity_id=entity["id"],
                        project_id=entity["project_id"],
                        **values,
                    )
                )
            else:
                conn.execute(
                    update(catalog_entries)
                    .where(
                        catalog_entries.c.entity_kind == entry_kind.value,
                        catalog_entries.c.entity_id == entity["id"],
                    )
                    .values(**values)
                )
            self._audit.record(
                uow,
                "catalog.described",
                entry_kind.value,
                entity["id"],
                project=entity["project"],
                before=before,
                after=after,
            )
            return self._entry(conn, entity)

    def lineage(
        self,
        project: str,
        kind: str,
        name: str,
        version: int | str | None = None,
        *,
        direction: str = "both",
        max_depth: int = 10,
    ) -> LineageGraph:
        """The lineage of a dataset version or model version (latest when ``version`` is
        None): what it came from and what came of it (``lineage.read``)."""
        entry_kind = _entry_kind(kind)
        lineage = LineageService(self._ctx)
        walk: Any = direction
        if entry_kind is EntryKind.DATASET:
            dv = DatasetService(self._ctx).get_version(project, name, version or "latest")
            return lineage.query("dataset_version", dv.id, direction=walk, max_depth=max_depth)
        registry = RegistryService(self._ctx)
        number = (
            version if version is not None else registry.get_model(project, name).latest_version
        )
        if number is None:
            raise InvalidInputError(
                f"Model {name!r} has no versions yet.", hint="Register one first."
            )
        mv = registry.get_version(project, name, number)
        return lineage.query("model_version", mv.id, direction=walk, max_depth=max_depth)

    # Internals --------------------------------------------------------------------------------
    def _entity(self, project: str, kind: EntryKind, name: str) -> dict[str, Any]:
        if kind is EntryKind.DATASET:
            ds = DatasetService(self._ctx).get_dataset(project, name)
            schema = []
            if ds.latest_version is not None:
                schema = DatasetService(self._ctx).get_version(project, ds.name).columns
            pid = self._projects.get(project, "datasets.read").id
            return {
                "id": ds.id,
                "name": ds.name,
                "project": ds.project,
                "project_id": pid,
                "description": ds.description,
                "owner": ds.created_by,
                "created_at": ds.created_at,
                "latest": ds.latest_version,
                "schema": schema,
                "kind": kind,
                "detected": ds.classification,
            }
        model = RegistryService(self._ctx).get_model(project, name)
        return {
            "id": model.id,
            "name": model.name,
            "project": model.project,
            "project_id": self._projects.get(project, "models.read").id,
            "description": model.description,
            "owner": model.created_by,
            "created_at": model.created_at,
            "latest": model.latest_version,
            "schema": [],
            "kind": kind,
            "detected": None,
        }

    def _entry(self, conn: Connection, entity: dict[str, Any]) -> CatalogEntry:
        row = entry_row(conn, entity["kind"].value, entity["id"])
        doc = entry_doc(row)
        notes: dict[str, str] = doc["columns"]
        return CatalogEntry(
            kind=entity["kind"],
            project=entity["project"],
            name=entity["name"],
            id=entity["id"],
            description=doc["description"] or entity["description"],
            classification=doc["classification"] or entity["detected"],
            tags=doc["tags"],
            owner=entity["owner"],
            created_at=entity["created_at"],
            latest_version=entity["latest"],
            columns=[
                ColumnDoc(name=c.name, type=c.type, note=notes.get(c.name, ""))
                for c in entity["schema"]
            ],
            updated_at=None if row is None else row.updated_at,
            updated_by=None if row is None else row.updated_by,
        )


def _clean(what: str, value: str | None, most: int) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > most:
        raise InvalidInputError(
            f"The {what} filter is {len(text)} characters long.",
            hint=f"Use at most {most} characters.",
        )
    if not text.isprintable():
        raise InvalidInputError(
            f"The {what} filter holds control characters.", hint="Use printable text."
        )
    return text


def _classification(value: str) -> str:
    try:
        return Classification(value.strip().lower()).value
    except ValueError:
        raise InvalidInputError(
            f"Classification {value!r} is not known.",
            hint="Use public, internal, confidential or personal.",
        ) from None


def _kinds(kinds: list[str] | None) -> set[str]:
    if not kinds:
        return {k.value for k in HitKind}
    out = set()
    for kind in kinds:
        try:
            out.add(HitKind(kind.strip().lower()).value)
        except ValueError:
            raise InvalidInputError(
                f"Kind {kind!r} is not searchable.",
                hint="Use dataset, model, model_version or report.",
            ) from None
    return out


def _entry_kind(kind: str) -> EntryKind:
    try:
        return EntryKind(str(kind).strip().lower())
    except ValueError:
        raise InvalidInputError(
            f"Kind {kind!r} cannot be described.", hint="Use dataset or model."
        ) from None
