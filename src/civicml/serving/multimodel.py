"""Multi-model endpoints: one endpoint serving many approved model versions, each request naming
the one it wants (SageMaker's multi-model endpoints with ``TargetModel``; KServe ModelMesh).

The endpoint row has ``mode = "multi-model"`` and no variants; its models are rows of
``endpoint_models`` (model name, version, the reference it was added by, the files' size). Adding
a model checks it as deploy does — Approved, not archived, its files the ones its approval bound,
its registration signature — but loads nothing: a serving process loads a model when a request
first names it (each file hashed against the registry as it is read, the approval checked
again), keeps it in the endpoint's LRU cache and unloads the least recently used ones beyond the
memory limit (the endpoint's ``model_cache_mb``, else the setting ``serving_model_cache_mb``).
Models are added and removed without a redeploy: a serving process reads the change within two
seconds (at once in the process that made it), and requests in flight finish on the model they
started with.

Every change is one unit of work: the rows, the lineage (model version → endpoint) and the
audit event (``endpoint.deployed``, ``endpoint.model_added``, ``endpoint.model_removed``) with
the models before and after. ``endpoints.write`` adds and removes, ``endpoints.read`` lists,
``endpoints.invoke`` invokes.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.ids import new_id, validate_name
from civicml.core.names import already_exists
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving._deploy import MAX_CACHE_MB, Deployer, check_cache_mb, check_percent
from civicml.serving._queries import (
    endpoint_row,
    find_endpoint,
    is_multi_model,
    model_rows,
    to_models,
)
from civicml.serving._tables import endpoint_models, endpoints
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import EndpointInfo, EndpointMode, EndpointModel, EndpointStatus
from civicml.serving.service import EndpointService
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["MAX_CACHE_MB", "MAX_MODELS", "MultiModelService", "model_refs"]

#: The most model versions one multi-model endpoint holds.
MAX_MODELS = 1000


def model_refs(
    models: Sequence[tuple[str, int | str]] | Mapping[str, int | str],
) -> list[tuple[str, int | str]]:
    """``(model, version)`` pairs from pairs or a ``{model: version}`` mapping."""
    if isinstance(models, Mapping):
        return [(str(k), v) for k, v in models.items()]
    return [(str(m), v) for m, v in models]


class MultiModelService:
    """Creates multi-model endpoints and adds, lists and removes their models.

    Args:
        ctx: The stores, principal and clock every call runs with.
        host: The model host of this process (switched to the change after it commits).

    Example:
        >>> svc = MultiModelService(ctx, host)  # doctest: +SKIP
        >>> svc.deploy("benefits", "models", [("eligibility", "production"), ("fraud", 3)])
        ... # doctest: +SKIP
        >>> svc.add("benefits", "models", "housing", 2)  # doctest: +SKIP
    """

    def __init__(self, ctx: Context, host: ModelHost | None = None) -> None:
        self._ctx = ctx
        self._host = host
        self._projects = ProjectService(ctx)
        self._deployer = Deployer(ctx, host)
        self._registry = RegistryService(ctx)
        self._lineage = LineageService(ctx)
        self._audit = AuditTrail(ctx)

    def deploy(
        self,
        project: str,
        name: str,
        models: Sequence[tuple[str, int | str]],
        *,
        capture_percent: float = 100.0,
        capture: bool = True,
        model_cache_mb: float | None = None,
    ) -> EndpointInfo:
        """Create multi-model endpoint ``name`` serving ``models`` (``(model, version)`` pairs;
        a version is a number or an alias, resolved now). Nothing is loaded until a request
        names a model.

        Raises:
            InvalidInputError: A bad name, capture percent or cache limit; no models, more
                than :data:`MAX_MODELS`, or one version named twice.
            NotFoundError: The project, a model or a version does not exist.
            ConflictError: A version is not Approved or is archived, or the endpoint exists.
            ArtifactIntegrityError: A version's files are not the ones its approval bound, or
                its signature does not verify.
        """
        validate_name("Endpoint", name)
        percent = check_percent(capture_percent)
        cache_mb = check_cache_mb(model_cache_mb)
        if not models:
            raise InvalidInputError(
                "A multi-model endpoint needs at least one model.",
                hint="Name one: civicml endpoints deploy NAME MODEL VERSION --multi-model",
            )
        if len(models) > MAX_MODELS:
            raise InvalidInputError(
                f"A multi-model endpoint holds at most {MAX_MODELS} models, not {len(models)}."
            )
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            existing = find_endpoint(conn, proj.id, name)
        if existing is not None:
            raise _exists(proj.name, name, existing.name)
        chosen = [self._checked(proj, model, version) for model, version in models]
        seen: set[str] = set()
        for mv, _, _, _ in chosen:
            if mv.id in seen:
                raise InvalidInputError(
                    f"Model version {mv.name}/{mv.version} is named twice.",
                    hint="Name each version once.",
                )
            seen.add(mv.id)
        first = chosen[0][0]
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        values: dict[str, Any] = {
            "id": new_id(),
            "project_id": proj.id,
            "name": name,
            "model_name": first.name,
            "model_version_id": first.id,
            "model_version": first.version,
            "status": EndpointStatus.IN_SERVICE.value,
            "capture_enabled": capture,
            "capture_percent": percent,
            "created_at": now,
            "created_by": user,
            "updated_at": now,
            "updated_by": user,
            "mode": EndpointMode.MULTI_MODEL.value,
            "model_cache_mb": cache_mb,
        }
        try:
            with self._ctx.db.write() as uow:
                existing = find_endpoint(uow.conn, proj.id, name)
                if existing is not None:
                    raise _exists(proj.name, name, existing.name)
                uow.conn.execute(insert(endpoints).values(**values))
                self._lineage.node(uow, "endpoint", values["id"], name=name, project_id=proj.id)
                for mv, ref, size, _ in chosen:
                    self._insert(uow, proj, values["id"], name, mv, ref, size)
                self._audit.record(
                    uow,
                    "endpoint.deployed",
                    "endpoint",
                    values["id"],
                    project=proj.name,
                    after={
                        "name": name,
                        "mode": EndpointMode.MULTI_MODEL.value,
                        "models": {f"{mv.name}/{mv.version}": sig for mv, _, _, sig in chosen},
                        "model_cache_mb": cache_mb,
                        "capture_enabled": capture,
                        "capture_percent": percent,
                    },
                )
        except IntegrityError as err:  # deployed concurrently under the same name
            raise _exists(proj.name, name) from err
        return self._done(proj, name)

    def list(self, project: str, endpoint: str) -> builtins.list[EndpointModel]:
        """The models of multi-model endpoint ``endpoint``, by name, newest version first.

        Raises:
            NotFoundError: The project or endpoint does not exist.
            ConflictError: It is a single-model endpoint.
        """
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            _refuse_single(row, proj)
            return to_models(model_rows(conn, row.id))

    def add(self, project: str, endpoint: str, model: str, version: int | str) -> EndpointInfo:
        """Serve ``model`` ``version`` (a number or an alias, resolved now) from multi-model
        endpoint ``endpoint`` too, without a redeploy; it loads when a request first names it.

        Raises:
            NotFoundError: The project, endpoint, model or version does not exist.
            ConflictError: A single-model endpoint; the version is not Approved, is archived
                or is served already; the endpoint holds :data:`MAX_MODELS` models.
            ArtifactIntegrityError: Its files are not the ones its approval bound, or its
                signature does not verify.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            _refuse_single(endpoint_row(conn, proj, endpoint), proj)
        mv, ref, size, signature = self._checked(proj, model, version)
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint, lock=True)
            _refuse_single(row, proj)
            rows = model_rows(uow.conn, row.id)
            if any(r.model_version_id == mv.id for r in rows):
                raise ConflictError(
                    f"Endpoint {row.name!r} already serves {mv.name}/{mv.version}.",
                    hint=f"See its models: civicml endpoints models list {row.name} "
                    f"--project {proj.name}",
                )
            if len(rows) >= MAX_MODELS:
                raise ConflictError(
                    f"Endpoint {row.name!r} holds {len(rows)} models, the most allowed.",
                    hint=f"Remove one first: civicml endpoints models remove {row.name} MODEL",
                )
            self._insert(uow, proj, row.id, row.name, mv, ref, size)
            self._touch(uow, row.id, None)
            self._audit.record(
                uow,
                "endpoint.model_added",
                "endpoint",
                row.id,
                project=proj.name,
                before={"models": _targets(rows)},
                after={
                    "models": sorted([*_targets(rows), f"{mv.name}/{mv.version}"]),
                    "added": f"{mv.name}/{mv.version}",
                    "ref": ref,
                    "signature": signature,
                },
            )
        return self._done(proj, endpoint)

    def remove(
        self, project: str, endpoint: str, model: str, version: int | str | None = None
    ) -> EndpointInfo:
        """Stop serving ``model`` (every version the endpoint holds of it, or only
        ``version``: a number or the alias it was added by) from multi-model endpoint
        ``endpoint``; requests in flight finish on it.

        Raises:
            NotFoundError: The project or endpoint does not exist, or it serves no such model.
            ConflictError: A single-model endpoint, or it would be left without any model.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint, lock=True)
            _refuse_single(row, proj)
            rows = model_rows(uow.conn, row.id)
            gone = [r for r in rows if _matches(r, model, version)]
            if not gone:
                names = sorted({r.model_name for r in rows})
                label = model if version is None else f"{model}/{version}"
                raise NotFoundError(
                    f"Endpoint {row.name!r} serves no model {label!r}.",
                    hint=closest(model, names) or f"Its models: {', '.join(_targets(rows))}.",
                )
            kept = [r for r in rows if r not in gone]
            if not kept:
                raise ConflictError(
                    f"Endpoint {row.name!r} would be left without any model.",
                    hint=f"Add another first, or delete the endpoint: civicml endpoints delete "
                    f"{row.name} --project {proj.name}",
                )
            ids = [r.id for r in gone]
            uow.conn.execute(delete(endpoint_models).where(endpoint_models.c.id.in_(ids)))
            self._touch(uow, row.id, kept[0] if row.model_version_id in _ids(gone) else None)
            self._audit.record(
                uow,
                "endpoint.model_removed",
                "endpoint",
                row.id,
                project=proj.name,
                before={"models": _targets(rows)},
                after={"models": _targets(kept), "removed": _targets(gone)},
            )
        return self._done(proj, endpoint)

    # Internals --------------------------------------------------------------------------------
    def _checked(
        self, proj: Project, model: str, version: int | str
    ) -> tuple[ModelVersion, str, int, str]:
        """The version to serve, the reference it was named by, its files' size and its
        signature status (deploy's checks: Approved, approved files, signature)."""
        validate_name("Model", model)
        mv, signature = self._deployer.deployable(proj, model, version)
        files = self._registry.get_manifest(mv).get("files", {})
        size = sum(int(f.get("size", 0)) for f in files.values() if isinstance(f, dict))
        return mv, str(version)[:128], size, signature

    def _insert(
        self,
        uow: UnitOfWork,
        proj: Project,
        endpoint_id: str,
        name: str,
        mv: ModelVersion,
        ref: str,
        size: int,
    ) -> None:
        uow.conn.execute(
            insert(endpoint_models).values(
                id=new_id(),
                endpoint_id=endpoint_id,
                model_name=mv.name,
                model_version_id=mv.id,
                model_version=mv.version,
                ref=ref,
                size_bytes=size,
                created_at=self._ctx.clock.now(),
                created_by=self._ctx.principal.user,
            )
        )
        self._deployer.link_version(uow, proj, mv, endpoint_id, name)

    def _touch(self, uow: UnitOfWork, endpoint_id: str, first: Any | None) -> None:
        """Mark the endpoint changed; ``first`` (a model row) becomes the model its row names."""
        values: dict[str, Any] = {
            "updated_at": self._ctx.clock.now(),
            "updated_by": self._ctx.principal.user,
        }
        if first is not None:
            values |= {
                "model_name": first.model_name,
                "model_version_id": first.model_version_id,
                "model_version": first.model_version,
            }
        uow.conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(**values))

    def _done(self, proj: Project, endpoint: str) -> EndpointInfo:
        self._deployer.refresh(proj.name, endpoint)
        return EndpointService(self._ctx, self._host).get(proj.name, endpoint)


def _refuse_single(row: Any, proj: Project) -> None:
    if not is_multi_model(row):
        raise ConflictError(
            f"Endpoint {row.name!r} is a single-model endpoint; it serves its variants, not "
            "models by name.",
            hint=f"Add a variant instead (civicml endpoints variants set {row.name} NAME "
            f"--version N --project {proj.name}), or deploy a multi-model endpoint "
            "(civicml endpoints deploy NAME MODEL VERSION --multi-model).",
        )


def _matches(row: Any, model: str, version: int | str | None) -> bool:
    if str(row.model_name).lower() != model.lower():
        return False
    if version is None:
        return True
    text = str(version)
    if text.isdigit():
        return int(text) == int(row.model_version)
    return text.lower() == str(row.ref).lower()


def _targets(rows: Sequence[Any]) -> list[str]:
    return sorted(f"{r.model_name}/{r.model_version}" for r in rows)


def _ids(rows: Sequence[Any]) -> set[str]:
    return {r.model_version_id for r in rows}


def _exists(project: str, name: str, existing: str | None = None) -> ConflictError:
    existing = existing or name
    return ConflictError(
        already_exists("Endpoint", name, existing, scope=f"project {project!r}"),
        hint=f"Add models to it instead: civicml endpoints models add {existing} MODEL VERSION "
        f"--project {project}",
    )
