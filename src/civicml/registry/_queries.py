"""Reading the registry's rows and turning them into schemas, manifests and hints.

Lookups run on the connection of the caller's transaction and raise ``NotFoundError`` with close
names or the next command as a hint; conversions build :class:`ModelVersion`,
:class:`RegisteredModel` and :class:`ApprovalRecord` with one query per batch of rows, never one
per row. Nothing here writes or decides: the rules live in ``service.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from sqlalchemy import Connection, Row, func, select

from civicml.core.errors import InvalidInputError, NotFoundError, closest
from civicml.core.ids import new_id
from civicml.core.names import name_key
from civicml.governance.lineage import LineageService
from civicml.governance.schemas import Project
from civicml.registry._inputs import Files, finite, parse_version_ref
from civicml.registry._tables import (
    approval_history,
    model_aliases,
    model_versions,
    registered_models,
)
from civicml.registry.schemas import (
    ApprovalRecord,
    ApprovalStatus,
    ColumnSpec,
    ModelVersion,
    RegisteredModel,
)
from civicml.store.artifact_index import ArtifactIndex
from civicml.tracking._tables import latest_metrics, runs

__all__ = [
    "DbRow",
    "alias_row",
    "aliases_by_version",
    "approval_records",
    "cli_hint",
    "downstream_names",
    "find_model",
    "manifest_bytes",
    "model_row",
    "model_rows",
    "next_history_id",
    "parse_manifest",
    "run_files",
    "run_metrics",
    "run_row",
    "to_registered_model",
    "to_registered_models",
    "to_version",
    "to_versions",
    "version_by_id",
    "version_row",
    "version_rows",
]

DbRow: TypeAlias = "Row[*tuple[Any, ...]]"


# Models and versions --------------------------------------------------------------------------
def find_model(conn: Connection, project_id: str, name: str, *, lock: bool = False) -> DbRow | None:
    """The registered model's row, or None; ``lock`` takes its row lock."""
    query = select(registered_models).where(
        registered_models.c.project_id == project_id,
        func.lower(registered_models.c.name) == name_key(name),  # names are case-insensitive
    )
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def model_rows(conn: Connection, project_id: str) -> Sequence[DbRow]:
    """The rows of every registered model of a project, by name."""
    return conn.execute(
        select(registered_models)
        .where(registered_models.c.project_id == project_id)
        .order_by(registered_models.c.name)
    ).all()


def model_row(conn: Connection, proj: Project, name: str, *, lock: bool = False) -> DbRow:
    """The registered model's row; ``NotFoundError`` with close names when it does not exist."""
    row = find_model(conn, proj.id, name, lock=lock)
    if row is None:
        names = conn.execute(
            select(registered_models.c.name).where(registered_models.c.project_id == proj.id)
        ).scalars()
        raise NotFoundError(
            f"Model {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, names)
            or "Register a version to create it: "
            + cli_hint(proj.name, "register", name, "--run <run-id>"),
        )
    return row


def version_row(
    conn: Connection, project: str, model: DbRow, version: int | str, *, lock: bool = False
) -> DbRow:
    """The row of a version of ``model`` by number or alias; ``lock`` takes its row lock."""
    number, alias = parse_version_ref(version)
    query = select(model_versions).where(model_versions.c.model_id == model.id)
    if alias is not None:
        query = query.join(model_aliases, model_aliases.c.version_id == model_versions.c.id).where(
            func.lower(model_aliases.c.alias) == name_key(alias)
        )
    else:
        query = query.where(model_versions.c.version == number)
    if lock:
        query = query.with_for_update(of=model_versions)
    row = conn.execute(query).first()
    if row is not None:
        return row
    if alias is not None:
        known = conn.execute(
            select(model_aliases.c.alias).where(model_aliases.c.model_id == model.id)
        ).scalars()
        raise NotFoundError(
            f"Model {model.name!r} in project {project!r} has no alias {alias!r}.",
            hint=closest(alias, known)
            or "Set it: " + cli_hint(project, "alias", model.name, alias, "<version>"),
        )
    numbers = (
        conn.execute(
            select(model_versions.c.version)
            .where(model_versions.c.model_id == model.id)
            .order_by(model_versions.c.version)
        )
        .scalars()
        .all()
    )
    raise NotFoundError(
        f"Model {model.name!r} in project {project!r} has no version {number}.",
        hint=(
            "Its versions are " + ", ".join(str(n) for n in numbers[-20:]) + "."
            if numbers
            else "It has no versions yet: "
            + cli_hint(project, "register", model.name, "--run <run-id>")
        ),
    )


def version_rows(conn: Connection, model_id: str, *, include_archived: bool) -> Sequence[DbRow]:
    """The version rows of a model, oldest first; archived ones only when asked for."""
    query = select(model_versions).where(model_versions.c.model_id == model_id)
    if not include_archived:
        query = query.where(model_versions.c.archived.is_(False))
    return conn.execute(query.order_by(model_versions.c.version)).all()


def version_by_id(conn: Connection, project: str, model_name: str, version_id: str) -> ModelVersion:
    """A version as it is now in this transaction (after a change to it)."""
    row = conn.execute(select(model_versions).where(model_versions.c.id == version_id)).one()
    return to_versions(conn, project, model_name, [row])[0]


def alias_row(conn: Connection, model_id: str, alias: str) -> DbRow | None:
    """``(version_id, version, alias, updated_at, updated_by)`` of a model's alias (found
    case-insensitively; ``alias`` as stored), or None when it is not set."""
    return conn.execute(
        select(
            model_aliases.c.version_id,
            model_versions.c.version,
            model_aliases.c.alias,
            model_aliases.c.updated_at,
            model_aliases.c.updated_by,
        )
        .join(model_versions, model_aliases.c.version_id == model_versions.c.id)
        .where(
            model_aliases.c.model_id == model_id,
            func.lower(model_aliases.c.alias) == name_key(alias),
        )
    ).first()


def aliases_by_version(conn: Connection, version_ids: list[str]) -> dict[str, list[str]]:
    """``{version id: [alias, ...]}`` for the versions that have aliases, names sorted."""
    found: dict[str, list[str]] = {}
    if not version_ids:
        return found
    rows = conn.execute(
        select(model_aliases.c.version_id, model_aliases.c.alias)
        .where(model_aliases.c.version_id.in_(version_ids))
        .order_by(model_aliases.c.alias)
    )
    for version_id, alias in rows:
        found.setdefault(version_id, []).append(alias)
    return found


# Rows to schemas ------------------------------------------------------------------------------
def to_versions(
    conn: Connection, project: str, model_name: str, rows: Sequence[DbRow]
) -> list[ModelVersion]:
    """Version rows of one model as schemas, with their aliases."""
    aliases = aliases_by_version(conn, [r.id for r in rows])
    return [to_version(r._mapping, project, model_name, aliases.get(r.id, [])) for r in rows]


def to_version(
    row: Mapping[Any, Any], project: str, model_name: str, aliases: list[str]
) -> ModelVersion:
    """One version row (or the values just inserted) as a schema."""
    signature = row["signature"]
    return ModelVersion(
        id=row["id"],
        project=project,
        name=model_name,
        version=row["version"],
        run_id=row["run_id"],
        artifact_digest=row["artifact_digest"],
        artifact_path=row["artifact_path"],
        signature=None if signature is None else [ColumnSpec.model_validate(c) for c in signature],
        metrics=row["metrics"] or {},
        description=row["description"],
        approval_status=ApprovalStatus(row["approval_status"]),
        approval_by=row["approval_by"],
        approval_note=row["approval_note"],
        approval_at=row["approval_at"],
        archived=bool(row["archived"]),
        aliases=sorted(aliases),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def to_registered_model(conn: Connection, project: str, row: DbRow) -> RegisteredModel:
    """One registered model row as a schema."""
    return to_registered_models(conn, project, [row])[0]


def to_registered_models(
    conn: Connection, project: str, rows: Sequence[DbRow]
) -> list[RegisteredModel]:
    """Registered model rows as schemas, with their latest version number and aliases."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    latest: dict[str, int] = {
        model_id: int(number)
        for model_id, number in conn.execute(
            select(model_versions.c.model_id, func.max(model_versions.c.version))
            .where(model_versions.c.model_id.in_(ids))
            .group_by(model_versions.c.model_id)
        )
    }
    aliases: dict[str, dict[str, int]] = {}
    for model_id, alias, number in conn.execute(
        select(model_aliases.c.model_id, model_aliases.c.alias, model_versions.c.version)
        .join(model_versions, model_aliases.c.version_id == model_versions.c.id)
        .where(model_aliases.c.model_id.in_(ids))
        .order_by(model_aliases.c.alias)
    ):
        aliases.setdefault(model_id, {})[alias] = int(number)
    return [
        RegisteredModel(
            id=r.id,
            project=project,
            name=r.name,
            description=r.description,
            created_at=r.created_at,
            created_by=r.created_by,
            latest_version=latest.get(r.id),
            aliases=aliases.get(r.id, {}),
        )
        for r in rows
    ]


def approval_records(conn: Connection, model_name: str, version: DbRow) -> list[ApprovalRecord]:
    """Every approval status change of a version's row, oldest first."""
    records = conn.execute(
        select(approval_history)
        .where(approval_history.c.version_id == version.id)
        .order_by(approval_history.c.id)
    ).all()
    return [
        ApprovalRecord(
            id=r.id,
            name=model_name,
            version=version.version,
            from_status=ApprovalStatus(r.from_status),
            to_status=ApprovalStatus(r.to_status),
            by=r.by,
            note=r.note,
            at=r.at,
            evidence=r.evidence,
        )
        for r in records
    ]


def downstream_names(lineage: LineageService, version_id: str) -> str:
    """What lineage records as derived directly from a version, for messages."""
    graph = lineage.query("model_version", version_id, direction="downstream", max_depth=1)
    names = [f"{n.kind} {n.name!r}" for n in graph.nodes if n.id != graph.root.id]
    return ", ".join(names) or "entities"


# Runs -----------------------------------------------------------------------------------------
def run_row(conn: Connection, proj: Project, run_id: str) -> DbRow:
    """The run a version is registered from; it must exist and belong to ``proj``."""
    row = conn.execute(
        select(runs.c.id, runs.c.project_id, runs.c.name).where(runs.c.id == run_id)
    ).first()
    if row is None:
        raise NotFoundError(
            f"Run {run_id!r} does not exist.",
            hint=f"Check the run id: civicml runs list --project {proj.name}",
        )
    if row.project_id != proj.id:
        raise InvalidInputError(
            f"Run {run_id!r} belongs to another project, not {proj.name!r}; a model version "
            "and the run that produced it must be in the same project.",
            hint=f"Register the model in the run's project, or pass a run of {proj.name!r}.",
        )
    return row


def run_files(conn: Connection, run_id: str, artifact_path: str) -> Files:
    """The run's artifacts under ``artifact_path``, by path relative to it."""
    infos = ArtifactIndex.list(conn, "run", run_id, artifact_path)
    if not infos:
        tops = sorted({i.path.split("/", 1)[0] for i in ArtifactIndex.list(conn, "run", run_id)})
        hint = closest(artifact_path, tops)
        if tops:
            hint = (hint + " " if hint else "") + (
                "The run's artifacts are under " + ", ".join(repr(t) for t in tops) + "."
            )
        raise NotFoundError(
            f"Run {run_id!r} has no artifacts under {artifact_path!r} to register.",
            hint=hint
            or "Log the model's files to the run first (e.g. 'model/model.pkl'), or pass "
            "artifacts={path: sha256} of bytes already stored.",
        )
    files: Files = {}
    for info in infos:
        if info.path == artifact_path:  # a single file: name it by its last segment
            relative = artifact_path.rsplit("/", 1)[-1]
        else:
            relative = info.path[len(artifact_path) + 1 :]
        files[relative] = (info.digest, info.size)
    return files


def run_metrics(conn: Connection, run_id: str) -> dict[str, float | None]:
    """The run's latest metrics, NaN ones skipped and infinite ones as None."""
    rows = conn.execute(
        select(latest_metrics.c.key, latest_metrics.c.value, latest_metrics.c.is_nan)
        .where(latest_metrics.c.run_id == run_id)
        .order_by(latest_metrics.c.key)
    )
    return {r.key: finite(r.value) for r in rows if not r.is_nan and r.value is not None}


# Values for writes ----------------------------------------------------------------------------
def manifest_bytes(files: Files) -> bytes:
    """The canonical JSON manifest of a version: ``{"files": {path: {digest, size}}}``."""
    manifest = {
        "files": {path: {"digest": digest, "size": size} for path, (digest, size) in files.items()}
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(data: bytes, digest: str) -> dict[str, Any]:
    """The manifest ``manifest_bytes`` wrote, read back from the bytes stored under ``digest``."""
    manifest = json.loads(data)
    if not isinstance(manifest, dict):
        raise InvalidInputError(
            f"Artifact sha256:{digest} is not a model manifest.",
            hint="Pass a ModelVersion returned by the registry.",
        )
    return manifest


def next_history_id(conn: Connection, version_id: str) -> str:
    """A new id that sorts after every earlier record of the version (ids order the history).

    Called with the version row locked, so no concurrent writer adds a record in between.
    """
    last = conn.execute(
        select(func.max(approval_history.c.id)).where(approval_history.c.version_id == version_id)
    ).scalar()
    candidate = new_id()
    if last is not None and candidate <= last:
        candidate = f"{int(last, 16) + 1:032x}"
    return candidate


def cli_hint(project: str, command: str, *args: object) -> str:
    """The ``civicml models`` command line that does the next step, for hints."""
    words = " ".join(str(a) for a in args)
    return f"civicml models {command} {words} --project {project}"
