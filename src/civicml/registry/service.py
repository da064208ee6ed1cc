"""The model registry service: registered models, versions, approval status, aliases.

Every change is one unit of work: the row change, its lineage and its audit event commit together.
Registering, alias, archive and delete writes first lock the registered model's row, approval
changes the version's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are serialised
by ``BEGIN IMMEDIATE``), so version numbers are allocated without duplicates, aliases move
atomically and every rule is checked against the state it changes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

from pydantic import ValidationError
from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.ids import NAME_PATTERN, new_id, validate_name
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
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
    Signature,
)
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context
from civicml.store.db import UnitOfWork
from civicml.store.paths import validate_relative_path
from civicml.tracking._tables import latest_metrics, runs

__all__ = ["RegistryService"]

_T = TypeVar("_T")
_Row: TypeAlias = "Row[*tuple[Any, ...]]"
_RETRIES = 3
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_DIGEST = re.compile(r"(sha256:)?[0-9a-fA-F]{64}")
_MAX_METRIC_KEY = 250
#: (relative path -> (sha256, size)): the files a version's manifest names.
_Files = dict[str, tuple[str, int]]


class RegistryService:
    """Registers model versions and governs their approval status and aliases.

    Args:
        ctx: The stores, principal and clock every call runs with.

    Example:
        >>> registry = RegistryService(ctx)  # doctest: +SKIP
        >>> mv = registry.register("benefits", "eligibility", run_id=run.id)  # doctest: +SKIP
        >>> registry.approve("benefits", "eligibility", mv.version, "ok")  # doctest: +SKIP
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)

    # Registered models ------------------------------------------------------------------------
    def create_model(self, project: str, name: str, description: str = "") -> RegisteredModel:
        """Create an empty registered model (``register`` also creates it when missing).

        Raises:
            NotFoundError: The project does not exist.
            InvalidInputError: The model name is not valid.
            ConflictError: The project already has a model with that name.
        """
        validate_name("Model", name)
        proj = self._projects.get(project)
        try:
            with self._ctx.db.write() as uow:
                if _find_model(uow.conn, proj.id, name) is not None:
                    raise _model_exists(proj.name, name)
                row = self._insert_model(uow, proj, name, description)
                return _registered_model(uow.conn, proj.name, row)
        except IntegrityError as err:  # created concurrently
            raise _model_exists(proj.name, name) from err

    def get_model(self, project: str, name: str) -> RegisteredModel:
        """The registered model ``name`` of ``project``.

        Raises:
            NotFoundError: The project or the model does not exist (with close names as a hint).
        """
        proj = self._projects.get(project)
        with self._ctx.db.read() as conn:
            return _registered_model(conn, proj.name, _model_row(conn, proj, name))

    def list_models(self, project: str) -> list[RegisteredModel]:
        """Every registered model of ``project``, by name."""
        proj = self._projects.get(project)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(registered_models)
                .where(registered_models.c.project_id == proj.id)
                .order_by(registered_models.c.name)
            ).all()
            return _registered_models(conn, proj.name, rows)

    # Versions ---------------------------------------------------------------------------------
    def register(
        self,
        project: str,
        name: str,
        *,
        run_id: str | None = None,
        artifact_path: str = "model",
        artifacts: Mapping[str, str] | None = None,
        signature: Sequence[ColumnSpec | Mapping[str, Any]] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Register a new version of model ``name``, creating the model when missing.

        The version points at a manifest in the artifact store that names each of its files with
        SHA-256 and size. With ``run_id`` the files are the run's artifacts under
        ``artifact_path``; with ``artifacts`` they are ``{relative path: sha256}`` of bytes already
        in the artifact store (``run_id`` then only links the version to its run). The new
        version starts ``PendingManualApproval``.

        Args:
            project: Project name.
            name: Model name (created when missing).
            run_id: The run that produced the model; it must belong to ``project``.
            artifact_path: The folder (or file) of the run's artifacts that make up the model.
            artifacts: Files of the model by digest, instead of (or besides) a run's artifacts.
            signature: Input columns, e.g. ``[{"name": "age", "type": "integer"}]``.
            metrics: Evaluation metrics; default the run's latest metrics (NaN ones skipped).
                NaN and infinite values are stored as None.
            description: Free text.

        Returns:
            The new version.

        Raises:
            InvalidInputError: Neither run nor artifacts given, a bad name, path, digest,
                signature or metric, or a run of another project.
            NotFoundError: The project, the run, the run's artifacts under ``artifact_path`` or
                an artifact digest does not exist.
        """
        validate_name("Model", name)
        artifact_path = validate_relative_path(artifact_path.rstrip("/"))
        columns = _parse_signature(signature)
        given_metrics = None if metrics is None else _clean_metrics(metrics)
        if run_id is None and artifacts is None:
            raise InvalidInputError(
                f"Registering a version of model {name!r} needs its files.",
                hint="Pass run_id=<run id> (the run's artifacts under artifact_path are used) or "
                "artifacts={'model.pkl': '<sha256>'} of bytes already in the artifact store.",
            )
        proj = self._projects.get(project)
        files = None if artifacts is None else self._check_artifacts(artifacts)

        def attempt(uow: UnitOfWork) -> ModelVersion:
            return self._register(
                uow,
                proj,
                name,
                run_id=run_id,
                artifact_path=artifact_path,
                files=files,
                columns=columns,
                metrics=given_metrics,
                description=description,
            )

        return self._retrying(attempt)

    def get_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        """One version, by number (``3`` or ``"3"``) or by alias (``"production"``).

        Raises:
            NotFoundError: The project, model, version or alias does not exist.
            InvalidInputError: ``version`` is neither a positive number nor an alias name.
        """
        proj = self._projects.get(project)
        with self._ctx.db.read() as conn:
            model = _model_row(conn, proj, name)
            row = _version_row(conn, proj.name, model, version)
            return _versions(conn, proj.name, model.name, [row])[0]

    def list_versions(
        self, project: str, name: str, *, include_archived: bool = False
    ) -> list[ModelVersion]:
        """The versions of a model, oldest first; archived ones only when asked for."""
        proj = self._projects.get(project)
        with self._ctx.db.read() as conn:
            model = _model_row(conn, proj, name)
            query = select(model_versions).where(model_versions.c.model_id == model.id)
            if not include_archived:
                query = query.where(model_versions.c.archived.is_(False))
            rows = conn.execute(query.order_by(model_versions.c.version)).all()
            return _versions(conn, proj.name, model.name, rows)

    def get_manifest(self, version: ModelVersion) -> dict[str, Any]:
        """The manifest of a version: ``{"files": {path: {"digest": ..., "size": ...}}}``.

        The manifest's bytes are checked against ``version.artifact_digest`` as they are read.

        Raises:
            NotFoundError: The manifest is not in the artifact store.
            ArtifactIntegrityError: The stored bytes no longer match their digest.
        """
        manifest = json.loads(self._ctx.artifacts.read_bytes(version.artifact_digest))
        if not isinstance(manifest, dict):
            raise InvalidInputError(
                f"Artifact sha256:{version.artifact_digest} is not a model manifest.",
                hint="Pass a ModelVersion returned by the registry.",
            )
        return manifest

    # Approval ---------------------------------------------------------------------------------
    def update_approval(
        self,
        project: str,
        name: str,
        version: int | str,
        status: ApprovalStatus | str,
        note: str = "",
    ) -> ModelVersion:
        """Move a version to another approval status, recording who, why and when.

        Args:
            project: Project name.
            name: Model name.
            version: Version number or alias.
            status: ``PendingManualApproval``, ``Approved`` or ``Rejected``.
            note: Why; required (non-blank) for ``Approved`` and ``Rejected``.

        Returns:
            The version after the change.

        Raises:
            InvalidInputError: Unknown status, or no note where one is required.
            NotFoundError: The project, model or version does not exist.
            ConflictError: The version already has that status, or it is archived and
                ``status`` is ``Approved``.
        """
        target = _parse_status(status)
        note = note.strip() if isinstance(note, str) else ""
        if target is not ApprovalStatus.PENDING and not note:
            verb = "Approving" if target is ApprovalStatus.APPROVED else "Rejecting"
            raise InvalidInputError(
                f"{verb} model {name!r} version {version} needs a note saying why.",
                hint="Pass note='...', e.g. note='meets the accuracy and bias policy'; it is "
                "kept in the approval history and the audit trail.",
            )
        proj = self._projects.get(project)
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = _model_row(conn, proj, name)
            row = _version_row(conn, proj.name, model, version, lock=True)
            current = ApprovalStatus(row.approval_status)
            label = f"{model.name}/{row.version}"
            if current is target:
                others = ", ".join(s.value for s in ApprovalStatus if s is not target)
                raise ConflictError(
                    f"Model version {label} is already {target.value}; nothing was changed.",
                    hint=f"Choose another status ({others}), or register a new version: "
                    + _cli(proj.name, "register", model.name, "--run <run-id>"),
                )
            self._check_approval_allowed(conn, proj, model, row, target)
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            conn.execute(
                update(model_versions)
                .where(model_versions.c.id == row.id)
                .values(
                    approval_status=target.value,
                    approval_by=user,
                    approval_note=note,
                    approval_at=now,
                )
            )
            conn.execute(
                insert(approval_history).values(
                    id=_next_history_id(conn, row.id),
                    version_id=row.id,
                    from_status=current.value,
                    to_status=target.value,
                    by=user,
                    note=note,
                    at=now,
                )
            )
            ref = {"name": model.name, "version": row.version}
            self._audit.record(
                uow,
                "model_version.approval_changed",
                "model_version",
                row.id,
                project=proj.name,
                before={**ref, "approval_status": current.value},
                after={**ref, "approval_status": target.value, "note": note},
            )
            return self._reload(conn, proj.name, model.name, row.id)

    def approve(self, project: str, name: str, version: int | str, note: str) -> ModelVersion:
        """Approve a version (``update_approval`` to ``Approved``); ``note`` says why."""
        return self.update_approval(project, name, version, ApprovalStatus.APPROVED, note)

    def reject(self, project: str, name: str, version: int | str, note: str) -> ModelVersion:
        """Reject a version (``update_approval`` to ``Rejected``); ``note`` says why."""
        return self.update_approval(project, name, version, ApprovalStatus.REJECTED, note)

    def approval_history(self, project: str, name: str, version: int | str) -> list[ApprovalRecord]:
        """Every approval status change of a version, oldest first."""
        proj = self._projects.get(project)
        with self._ctx.db.read() as conn:
            model = _model_row(conn, proj, name)
            row = _version_row(conn, proj.name, model, version)
            records = conn.execute(
                select(approval_history)
                .where(approval_history.c.version_id == row.id)
                .order_by(approval_history.c.id)
            ).all()
        return [
            ApprovalRecord(
                id=r.id,
                name=model.name,
                version=row.version,
                from_status=ApprovalStatus(r.from_status),
                to_status=ApprovalStatus(r.to_status),
                by=r.by,
                note=r.note,
                at=r.at,
            )
            for r in records
        ]

    def _check_approval_allowed(
        self, conn: Connection, proj: Project, model: _Row, row: _Row, target: ApprovalStatus
    ) -> None:
        """Refuse a status change before anything is written; the place for approval gates.

        Today only one rule: an archived version cannot be approved. Separation of duties
        (``self._ctx.principal`` against ``row.created_by``) and policy gates (metrics, bias and
        explanation evidence) plug in here, raising before the state change.

        Raises:
            ConflictError: The change is not allowed in the version's current state.
        """
        if target is ApprovalStatus.APPROVED and row.archived:
            raise ConflictError(
                f"Model version {model.name}/{row.version} is archived; archived versions cannot "
                "be approved.",
                hint="Unarchive it first: " + _cli(proj.name, "unarchive", model.name, row.version),
            )

    # Aliases ----------------------------------------------------------------------------------
    def set_alias(self, project: str, name: str, alias: str, version: int | str) -> ModelVersion:
        """Point ``alias`` (e.g. ``"production"``) at a version, moving it if it exists.

        The move is one transaction: readers see the old version or the new one, never neither.

        Returns:
            The version the alias now points at.

        Raises:
            InvalidInputError: The alias name is not valid or looks like a version number.
            NotFoundError: The project, model or version does not exist.
            ConflictError: The version is archived.
        """
        _check_alias(alias)
        proj = self._projects.get(project)
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = _model_row(conn, proj, name, lock=True)
            target = _version_row(conn, proj.name, model, version)
            if target.archived:
                raise ConflictError(
                    f"Model version {model.name}/{target.version} is archived; an alias cannot "
                    "point at it.",
                    hint="Unarchive it first: "
                    + _cli(proj.name, "unarchive", model.name, target.version),
                )
            old = conn.execute(
                select(model_aliases.c.version_id, model_versions.c.version)
                .join(model_versions, model_aliases.c.version_id == model_versions.c.id)
                .where(model_aliases.c.model_id == model.id, model_aliases.c.alias == alias)
            ).first()
            if old is not None and old.version_id == target.id:
                return self._reload(conn, proj.name, model.name, target.id)
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            if old is None:
                conn.execute(
                    insert(model_aliases).values(
                        model_id=model.id,
                        alias=alias,
                        version_id=target.id,
                        updated_at=now,
                        updated_by=user,
                    )
                )
            else:
                conn.execute(
                    update(model_aliases)
                    .where(model_aliases.c.model_id == model.id, model_aliases.c.alias == alias)
                    .values(version_id=target.id, updated_at=now, updated_by=user)
                )
            ref = {"name": model.name, "alias": alias}
            self._audit.record(
                uow,
                "model_alias.set",
                "model_alias",
                f"{model.id}@{alias}",
                project=proj.name,
                before=None if old is None else {**ref, "version": old.version},
                after={**ref, "version": target.version},
            )
            return self._reload(conn, proj.name, model.name, target.id)

    def delete_alias(self, project: str, name: str, alias: str) -> None:
        """Remove an alias; the version it pointed at is unchanged.

        Raises:
            NotFoundError: The project, model or alias does not exist.
        """
        proj = self._projects.get(project)
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = _model_row(conn, proj, name, lock=True)
            row = _version_row(conn, proj.name, model, _alias_ref(alias))
            conn.execute(
                delete(model_aliases).where(
                    model_aliases.c.model_id == model.id, model_aliases.c.alias == alias
                )
            )
            self._audit.record(
                uow,
                "model_alias.deleted",
                "model_alias",
                f"{model.id}@{alias}",
                project=proj.name,
                before={"name": model.name, "alias": alias, "version": row.version},
            )

    # Archive and delete -----------------------------------------------------------------------
    def archive_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        """Archive a version: kept, but hidden from listings and no longer approvable.

        Raises:
            ConflictError: It is already archived, or aliases still point at it.
        """
        return self._set_archived(project, name, version, archived=True)

    def unarchive_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        """Bring an archived version back.

        Raises:
            ConflictError: It is not archived.
        """
        return self._set_archived(project, name, version, archived=False)

    def delete_version(self, project: str, name: str, version: int | str) -> None:
        """Delete a version's row and approval history; its number is never reused.

        The lineage node stays, marked deleted, and the manifest stays in the artifact store.

        Raises:
            ConflictError: An alias points at it, it is Approved, or lineage records something
                derived from it (the message names what).
        """
        proj = self._projects.get(project)
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = _model_row(conn, proj, name, lock=True)
            row = _version_row(conn, proj.name, model, version, lock=True)
            label = f"{model.name}/{row.version}"
            reasons: list[str] = []
            hints: list[str] = []
            aliases = _aliases_by_version(conn, [row.id]).get(row.id, [])
            if aliases:
                reasons.append(f"{_aliases_phrase(aliases)} at it")
                hints.append(
                    "Move or remove the alias first: "
                    + _cli(proj.name, "unalias", model.name, aliases[0])
                    + "."
                )
            if row.approval_status == ApprovalStatus.APPROVED.value:
                reasons.append("it is Approved")
                hints.append(
                    "Reject it first: "
                    + _cli(proj.name, "reject", model.name, row.version, "--note '...'")
                    + "."
                )
            if self._lineage.has_downstream(conn, "model_version", row.id):
                reasons.append(f"lineage records {self._downstream_names(row.id)} derived from it")
                hints.append(
                    "Versions that something was derived from are kept for lineage; "
                    "archive it instead: "
                    + _cli(proj.name, "archive", model.name, row.version)
                    + "."
                )
            if reasons:
                raise ConflictError(
                    f"Model version {label} cannot be deleted: {'; '.join(reasons)}.",
                    hint=" ".join(hints),
                )
            before = {
                "name": model.name,
                "version": row.version,
                "run_id": row.run_id,
                "artifact_digest": row.artifact_digest,
                "approval_status": row.approval_status,
            }
            conn.execute(delete(approval_history).where(approval_history.c.version_id == row.id))
            try:
                conn.execute(delete(model_versions).where(model_versions.c.id == row.id))
            except IntegrityError as err:  # referenced by a row of another stage
                raise ConflictError(
                    f"Model version {label} cannot be deleted: other records still reference it.",
                    hint="Archive it instead: "
                    + _cli(proj.name, "archive", model.name, row.version),
                ) from err
            self._lineage.mark_deleted(uow, "model_version", row.id)
            self._audit.record(
                uow,
                "model_version.deleted",
                "model_version",
                row.id,
                project=proj.name,
                before=before,
            )

    # Internals --------------------------------------------------------------------------------
    def _register(
        self,
        uow: UnitOfWork,
        proj: Project,
        name: str,
        *,
        run_id: str | None,
        artifact_path: str,
        files: _Files | None,
        columns: list[ColumnSpec] | None,
        metrics: dict[str, float | None] | None,
        description: str,
    ) -> ModelVersion:
        conn = uow.conn
        model = _find_model(conn, proj.id, name, lock=True)
        if model is None:
            model = self._insert_model(uow, proj, name, "")
        run = None if run_id is None else _run_row(conn, proj, run_id)
        if files is None:
            files = _run_files(conn, str(run_id), artifact_path)
        if metrics is None:
            metrics = {} if run is None else _run_metrics(conn, run.id)
        manifest = {
            "files": {
                path: {"digest": digest, "size": size} for path, (digest, size) in files.items()
            }
        }
        stored = self._ctx.artifacts.put_bytes(
            json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        )
        number = int(model.next_version)
        conn.execute(
            update(registered_models)
            .where(registered_models.c.id == model.id)
            .values(next_version=number + 1)
        )
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        values: dict[str, Any] = {
            "id": new_id(),
            "model_id": model.id,
            "version": number,
            "run_id": None if run is None else run.id,
            "artifact_digest": stored.digest,
            "artifact_path": artifact_path,
            "signature": None if columns is None else [c.model_dump() for c in columns],
            "metrics": metrics,
            "description": description,
            "approval_status": ApprovalStatus.PENDING.value,
            "approval_by": None,
            "approval_note": None,
            "approval_at": None,
            "archived": False,
            "created_at": now,
            "created_by": user,
        }
        conn.execute(insert(model_versions).values(**values))
        node = self._lineage.node(
            uow, "model_version", values["id"], name=f"{name} v{number}", project_id=proj.id
        )
        if run is not None:
            run_node = self._lineage.node(uow, "run", run.id, name=run.name, project_id=proj.id)
            self._lineage.link(uow, run_node, node, "Produced")
        self._audit.record(
            uow,
            "model_version.registered",
            "model_version",
            values["id"],
            project=proj.name,
            after={
                "name": name,
                "version": number,
                "run_id": values["run_id"],
                "artifact_digest": stored.digest,
                "artifact_path": artifact_path,
                "approval_status": ApprovalStatus.PENDING.value,
                "metrics": metrics,
            },
        )
        return _to_version(values, proj.name, name, [])

    def _insert_model(self, uow: UnitOfWork, proj: Project, name: str, description: str) -> _Row:
        model_id = new_id()
        uow.conn.execute(
            insert(registered_models).values(
                id=model_id,
                project_id=proj.id,
                name=name,
                description=description,
                next_version=1,
                created_at=self._ctx.clock.now(),
                created_by=self._ctx.principal.user,
            )
        )
        self._audit.record(
            uow,
            "registered_model.created",
            "registered_model",
            model_id,
            project=proj.name,
            after={"name": name, "description": description},
        )
        return uow.conn.execute(
            select(registered_models).where(registered_models.c.id == model_id)
        ).one()

    def _set_archived(
        self, project: str, name: str, version: int | str, *, archived: bool
    ) -> ModelVersion:
        proj = self._projects.get(project)
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = _model_row(conn, proj, name, lock=True)
            row = _version_row(conn, proj.name, model, version, lock=True)
            label = f"{model.name}/{row.version}"
            if bool(row.archived) == archived:
                state = "already archived" if archived else "not archived"
                raise ConflictError(
                    f"Model version {label} is {state}; nothing was changed.",
                    hint="See its state: " + _cli(proj.name, "show", model.name, row.version),
                )
            aliases = _aliases_by_version(conn, [row.id]).get(row.id, [])
            if archived and aliases:
                raise ConflictError(
                    f"Model version {label} cannot be archived: {_aliases_phrase(aliases)} at it.",
                    hint="Move or remove the alias first: "
                    + _cli(proj.name, "unalias", model.name, aliases[0]),
                )
            conn.execute(
                update(model_versions)
                .where(model_versions.c.id == row.id)
                .values(archived=archived)
            )
            ref = {"name": model.name, "version": row.version}
            self._audit.record(
                uow,
                "model_version.archived" if archived else "model_version.unarchived",
                "model_version",
                row.id,
                project=proj.name,
                before={**ref, "archived": not archived},
                after={**ref, "archived": archived},
            )
            return self._reload(conn, proj.name, model.name, row.id)

    def _check_artifacts(self, artifacts: Mapping[str, str]) -> _Files:
        """Check explicit ``{path: digest}`` files exist (and verify them); returns sizes."""
        if not isinstance(artifacts, Mapping) or not artifacts:
            raise InvalidInputError(
                "artifacts must name at least one file, as {relative path: sha256 digest}.",
                hint="e.g. artifacts={'model.pkl': '3a7b...'} with the digest the artifact store "
                "returned when the bytes were stored.",
            )
        files: _Files = {}
        for path, digest in sorted(artifacts.items()):
            validate_relative_path(path)
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise InvalidInputError(
                    f"Digest {digest!r} of artifact {path!r} is not a SHA-256 digest.",
                    hint="A digest is 64 hexadecimal characters, optionally prefixed 'sha256:'.",
                )
            clean = digest.removeprefix("sha256:").lower()
            if not self._ctx.artifacts.exists(clean):
                raise NotFoundError(
                    f"Artifact {path!r} (sha256:{clean}) is not in the artifact store.",
                    hint="Store the bytes first and pass the digest the store returns, or "
                    "register from a run: run_id=<run id>.",
                )
            with self._ctx.artifacts.open(clean) as handle:  # verifies the SHA-256
                files[path] = (clean, handle.seek(0, os.SEEK_END))
        return files

    def _downstream_names(self, version_id: str) -> str:
        graph = self._lineage.query(
            "model_version", version_id, direction="downstream", max_depth=1
        )
        names = [f"{n.kind} {n.name!r}" for n in graph.nodes if n.id != graph.root.id]
        return ", ".join(names) or "entities"

    def _reload(
        self, conn: Connection, project: str, model_name: str, version_id: str
    ) -> ModelVersion:
        row = conn.execute(select(model_versions).where(model_versions.c.id == version_id)).one()
        return _versions(conn, project, model_name, [row])[0]

    def _retrying(self, work: Callable[[UnitOfWork], _T]) -> _T:
        """Run ``work`` in a write transaction, retrying when a concurrent insert won a race."""
        for attempt in range(1, _RETRIES + 1):
            try:
                with self._ctx.db.write() as uow:
                    return work(uow)
            except IntegrityError as err:
                if attempt == _RETRIES:
                    raise ConflictError(
                        "The registry changed concurrently and the change could not be applied.",
                        hint="Try again.",
                    ) from err
        raise AssertionError("unreachable")  # pragma: no cover


# Queries --------------------------------------------------------------------------------------
def _find_model(conn: Connection, project_id: str, name: str, *, lock: bool = False) -> _Row | None:
    query = select(registered_models).where(
        registered_models.c.project_id == project_id, registered_models.c.name == name
    )
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def _model_row(conn: Connection, proj: Project, name: str, *, lock: bool = False) -> _Row:
    row = _find_model(conn, proj.id, name, lock=lock)
    if row is None:
        names = conn.execute(
            select(registered_models.c.name).where(registered_models.c.project_id == proj.id)
        ).scalars()
        raise NotFoundError(
            f"Model {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, names)
            or "Register a version to create it: "
            + _cli(proj.name, "register", name, "--run <run-id>"),
        )
    return row


def _version_row(
    conn: Connection, project: str, model: _Row, version: int | str, *, lock: bool = False
) -> _Row:
    number, alias = _parse_version_ref(version)
    query = select(model_versions).where(model_versions.c.model_id == model.id)
    if alias is not None:
        query = query.join(model_aliases, model_aliases.c.version_id == model_versions.c.id).where(
            model_aliases.c.alias == alias
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
            or "Set it: " + _cli(project, "alias", model.name, alias, "<version>"),
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
            + _cli(project, "register", model.name, "--run <run-id>")
        ),
    )


def _aliases_by_version(conn: Connection, version_ids: list[str]) -> dict[str, list[str]]:
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


def _versions(
    conn: Connection, project: str, model_name: str, rows: Sequence[_Row]
) -> list[ModelVersion]:
    aliases = _aliases_by_version(conn, [r.id for r in rows])
    return [_to_version(r._mapping, project, model_name, aliases.get(r.id, [])) for r in rows]


def _registered_model(conn: Connection, project: str, row: _Row) -> RegisteredModel:
    return _registered_models(conn, project, [row])[0]


def _registered_models(
    conn: Connection, project: str, rows: Sequence[_Row]
) -> list[RegisteredModel]:
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


def _run_row(conn: Connection, proj: Project, run_id: str) -> _Row:
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


def _run_files(conn: Connection, run_id: str, artifact_path: str) -> _Files:
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
    files: _Files = {}
    for info in infos:
        if info.path == artifact_path:  # a single file: name it by its last segment
            relative = artifact_path.rsplit("/", 1)[-1]
        else:
            relative = info.path[len(artifact_path) + 1 :]
        files[relative] = (info.digest, info.size)
    return files


def _run_metrics(conn: Connection, run_id: str) -> dict[str, float | None]:
    rows = conn.execute(
        select(latest_metrics.c.key, latest_metrics.c.value, latest_metrics.c.is_nan)
        .where(latest_metrics.c.run_id == run_id)
        .order_by(latest_metrics.c.key)
    )
    return {r.key: _finite(r.value) for r in rows if not r.is_nan and r.value is not None}


def _next_history_id(conn: Connection, version_id: str) -> str:
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


# Input checks ---------------------------------------------------------------------------------
def _parse_version_ref(version: int | str) -> tuple[int | None, str | None]:
    """``(number, None)`` for a version number, ``(None, alias)`` for an alias."""
    if isinstance(version, int) and not isinstance(version, bool):
        if version < 1:
            raise InvalidInputError(
                f"Version {version} is not valid.", hint="Versions are numbered from 1."
            )
        return version, None
    if isinstance(version, str):
        text = version.strip()
        if text.isdigit():
            return _parse_version_ref(int(text))
        if NAME_PATTERN.match(text):
            return None, text
    raise InvalidInputError(
        f"{version!r} is neither a version number nor an alias.",
        hint="Pass a version number such as 3, or an alias such as 'production'.",
    )


def _alias_ref(alias: str) -> str:
    _, name = _parse_version_ref(alias)
    if name is None:
        raise InvalidInputError(
            f"{alias!r} is a version number, not an alias.",
            hint="Aliases are names such as 'production' or 'champion'.",
        )
    return name


def _check_alias(alias: str) -> None:
    validate_name("Alias", alias)
    if _NUMBER.fullmatch(alias):
        raise InvalidInputError(
            f"Alias {alias!r} looks like a version number, which would make '{alias}' ambiguous.",
            hint="Use a name such as 'production', 'champion' or 'v2-candidate'.",
        )


def _parse_status(status: ApprovalStatus | str) -> ApprovalStatus:
    if isinstance(status, ApprovalStatus):
        return status
    valid = [s.value for s in ApprovalStatus]
    if isinstance(status, str):
        for candidate in ApprovalStatus:
            if candidate.value.lower() == status.strip().lower():
                return candidate
    suggestion = closest(str(status), valid)
    raise InvalidInputError(
        f"Approval status {status!r} is not valid.",
        hint=(suggestion + " " if suggestion else "") + "Use one of " + ", ".join(valid) + ".",
    )


def _parse_signature(
    signature: Sequence[ColumnSpec | Mapping[str, Any]] | None,
) -> list[ColumnSpec] | None:
    if signature is None:
        return None
    if isinstance(signature, (str, bytes, Mapping)) or not isinstance(signature, Sequence):
        raise InvalidInputError(
            "signature must be a list of columns.",
            hint="e.g. [{'name': 'age', 'type': 'integer', 'nullable': False}]",
        )
    try:
        return Signature.model_validate(list(signature)).root
    except ValidationError as err:
        details = [
            {"loc": ["signature", *err_item["loc"]], "msg": err_item["msg"]}
            for err_item in err.errors()
        ]
        problems = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details)
        raise InvalidInputError(
            f"The model signature is not valid: {problems}.",
            hint="Each column is {'name': str, 'type': str, 'nullable': bool (optional)}, "
            "with unique names.",
            details=details,
        ) from err


def _clean_metrics(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    if not isinstance(metrics, Mapping):
        raise InvalidInputError(
            "metrics must map metric names to numbers.", hint="e.g. {'auc': 0.91, 'f1': 0.84}"
        )
    clean: dict[str, float | None] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key.strip() or len(key) > _MAX_METRIC_KEY:
            raise InvalidInputError(
                f"Metric name {key!r} is not valid.",
                hint=f"Use a non-empty name of at most {_MAX_METRIC_KEY} characters, e.g. 'auc'.",
            )
        if value is None:
            clean[key] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = _finite(value)
        else:
            raise InvalidInputError(
                f"Metric {key!r} has the value {value!r}, which is not a number.",
                hint="Metric values are numbers, e.g. {'auc': 0.91}.",
            )
    return clean


def _finite(value: float) -> float | None:
    """JSON holds no NaN or infinity: those are stored as None."""
    number = float(value)
    return number if math.isfinite(number) else None


# Errors and conversions -----------------------------------------------------------------------
def _cli(project: str, command: str, *args: object) -> str:
    """The ``civicml models`` command line that does the next step, for hints."""
    words = " ".join(str(a) for a in args)
    return f"civicml models {command} {words} --project {project}"


def _aliases_phrase(aliases: list[str]) -> str:
    names = ", ".join(repr(a) for a in aliases)
    return f"alias {names} points" if len(aliases) == 1 else f"aliases {names} point"


def _model_exists(project: str, name: str) -> ConflictError:
    return ConflictError(
        f"Model {name!r} already exists in project {project!r}.",
        hint="Register a new version of it: " + _cli(project, "register", name, "--run <run-id>"),
    )


def _to_version(
    row: Mapping[Any, Any], project: str, model_name: str, aliases: list[str]
) -> ModelVersion:
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
