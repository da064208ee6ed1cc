"""The endpoint service: deploy approved model versions, switch versions, delete endpoints.

An endpoint serves its versions as *variants* (:mod:`civicml.serving.variants`); deploy makes a
one-variant endpoint (``v<N>``) and a plain update switches every live variant to one serving the
new version, so the single-version API works as it always did. An update with a ``strategy``
starts a guarded rollout instead (:mod:`civicml.serving.rollout`).

Only an ``Approved`` (and not archived) model version is deployed, and only while its manifest
is the one its approval bound (``RegistryService.check_approved_files``) and its registration
signature verifies (``RegistryService.verify_version_signature``; a legacy unsigned version is
deployed and its audit event records ``signature: "absent"``). Deploy and update
verify and load the model *before* they commit — through the process's :class:`ModelHost` when
one is given, else by hashing every file against the registry — so an endpoint row never points
at a model that cannot be served. The row change, the lineage association (model version → endpoint,
``AssociatedWith``) and the audit event commit together in one unit of work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.core.ids import new_id, validate_name
from civicml.core.names import already_exists
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.registry.schemas import ModelVersion
from civicml.serving._deploy import (
    Deployer,
    check_cache_mb,
    check_percent,
    spec_of,
    variant_state,
    write_variants,
)
from civicml.serving._queries import (
    endpoint_row,
    find_endpoint,
    is_multi_model,
    model_rows,
    refuse_multi_model,
    to_info,
    variant_rows,
)
from civicml.serving._tables import (
    endpoint_models,
    endpoint_rollouts,
    endpoint_variant_stats,
    endpoint_variants,
    endpoints,
)
from civicml.serving.rollout import RolloutService, rollouts_in_progress
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import (
    EndpointInfo,
    EndpointMode,
    EndpointStatus,
    ModelCacheStats,
    RolloutStrategy,
    VariantRole,
)
from civicml.store.context import Context

__all__ = ["EndpointService"]


class EndpointService:
    """Deploys approved model versions as real-time endpoints.

    Args:
        ctx: The stores, principal and clock every call runs with.
        host: The model host of this process; deploy and update load the model into it before
            they commit and switch it over after. Without one, the files are only verified.

    Example:
        >>> svc = EndpointService(ctx, host=ModelHost(ctx))  # doctest: +SKIP
        >>> svc.deploy("benefits", "eligibility", "eligibility", 3)  # doctest: +SKIP
    """

    def __init__(self, ctx: Context, host: ModelHost | None = None) -> None:
        self._ctx = ctx
        self._host = host
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)
        self._deployer = Deployer(ctx, host)
        self._rollouts = RolloutService(ctx, host)

    def deploy(
        self,
        project: str,
        endpoint_name: str,
        model_name: str,
        version: int | str,
        *,
        capture_percent: float = 100.0,
        capture: bool = True,
        variant: str | None = None,
        mode: EndpointMode | str = EndpointMode.SINGLE_MODEL,
        models: Sequence[tuple[str, int | str]] | Mapping[str, int | str] = (),
        model_cache_mb: float | None = None,
    ) -> EndpointInfo:
        """Serve an approved model version as endpoint ``endpoint_name``.

        With ``mode="multi-model"`` the endpoint serves ``model_name`` ``version`` and every
        model of ``models`` (``(model, version)`` pairs or a mapping), each request naming
        its own (see :class:`~civicml.serving.multimodel.MultiModelService`).

        Args:
            project: Project name.
            endpoint_name: New endpoint name, unique in the project.
            model_name: Registered model name.
            version: Version number or alias (e.g. ``"production"``).
            capture_percent: Share of requests captured, 0-100.
            capture: Whether data capture is on at all.
            variant: Name of its one variant (default ``v<N>``, N the version number).
            mode: ``"single-model"`` (default) or ``"multi-model"``.
            models: A multi-model endpoint's further models.
            model_cache_mb: A multi-model endpoint's cache limit (default: the setting
                ``serving_model_cache_mb``).

        Returns:
            The endpoint, ``InService``.

        Raises:
            InvalidInputError: A bad name or capture percentage.
            NotFoundError: The project, model or version does not exist.
            ConflictError: The version is not ``Approved`` or is archived, or the endpoint exists.
            ArtifactIntegrityError: The model's files do not match the registry's digests.
        """
        if EndpointMode(mode) is EndpointMode.MULTI_MODEL:
            if variant is not None:
                raise InvalidInputError(
                    "A multi-model endpoint has no variants; a variant name does not apply.",
                    hint="Leave out --variant: requests name their model instead.",
                )
            from civicml.serving.multimodel import MultiModelService, model_refs

            refs = [(model_name, version), *model_refs(models)]
            return MultiModelService(self._ctx, self._host).deploy(
                project,
                endpoint_name,
                refs,
                capture_percent=capture_percent,
                capture=capture,
                model_cache_mb=model_cache_mb,
            )
        if models or model_cache_mb is not None:
            raise InvalidInputError(
                "Further models and a model cache limit need mode 'multi-model'.",
                hint="Deploy with --multi-model (mode='multi-model'), or leave them out.",
            )
        validate_name("Endpoint", endpoint_name)
        if variant is not None:
            validate_name("Variant", variant)
        percent = check_percent(capture_percent)
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            existing = find_endpoint(conn, proj.id, endpoint_name)  # in any letter case
            if existing is not None:
                raise _exists(proj.name, endpoint_name, existing.name)
        mv, signature = self._deployer.deployable(proj, model_name, version)
        self._deployer.prepare(mv)
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        values: dict[str, Any] = {
            "id": new_id(),
            "project_id": proj.id,
            "name": endpoint_name,
            "model_name": mv.name,
            "model_version_id": mv.id,
            "model_version": mv.version,
            "status": EndpointStatus.IN_SERVICE.value,
            "capture_enabled": capture,
            "capture_percent": percent,
            "created_at": now,
            "created_by": user,
            "updated_at": now,
            "updated_by": user,
        }
        try:
            with self._ctx.db.write() as uow:
                existing = find_endpoint(uow.conn, proj.id, endpoint_name)
                if existing is not None:
                    raise _exists(proj.name, endpoint_name, existing.name)
                uow.conn.execute(insert(endpoints).values(**values))
                _, after = write_variants(
                    uow, self._ctx, values["id"], [_single(variant or f"v{mv.version}", mv)]
                )
                self._lineage.node(
                    uow, "endpoint", values["id"], name=endpoint_name, project_id=proj.id
                )
                self._deployer.link_version(uow, proj, mv, values["id"], endpoint_name)
                self._audit.record(
                    uow,
                    "endpoint.deployed",
                    "endpoint",
                    values["id"],
                    project=proj.name,
                    after=_audit_state(values)
                    | {"signature": signature, "variants": variant_state(after)},
                )
        except IntegrityError as err:  # deployed concurrently under the same name
            raise _exists(proj.name, endpoint_name) from err
        self._deployer.refresh(proj.name, endpoint_name)
        return self._info(proj, endpoint_name)

    def update(
        self,
        project: str,
        endpoint_name: str,
        version: int | str | None = None,
        *,
        model_name: str | None = None,
        capture_percent: float | None = None,
        capture: bool | None = None,
        strategy: RolloutStrategy | str | None = None,
        canary_percent: float | str | None = None,
        linear_steps: int | None = None,
        bake_s: float | str | None = None,
        alarms: Sequence[str] = (),
        variant: str | None = None,
        model_cache_mb: float | None = None,
    ) -> EndpointInfo:
        """Switch an endpoint to another approved version and/or change its capture settings
        (or a multi-model endpoint's cache limit).

        Without ``strategy`` the new model is loaded before the switch; requests keep being
        answered by the old one until it is ready, then all go to the new one (every live
        variant is replaced by one serving it, named ``v<N>`` or ``variant``). With a
        ``strategy`` a guarded rollout starts instead (see :meth:`RolloutService.start
        <civicml.serving.rollout.RolloutService.start>`) and the endpoint is answered with it
        in ``rollout``.

        Args:
            project: Project name.
            endpoint_name: The endpoint.
            version: The version to serve (number or alias); None keeps the current one.
            model_name: Another registered model to serve (default: the current model).
            capture_percent: New capture percentage, 0-100.
            capture: Turn capture on or off.
            strategy: ``all_at_once``, ``canary`` or ``linear``: a guarded update.
            canary_percent: Canary size of a canary rollout (default 10).
            linear_steps: Equal steps of a linear rollout (default 4).
            bake_s: How long each step of a rollout is watched (seconds or "10m"; default
                10 minutes).
            alarms: Alarms of a rollout, e.g. ``["p99_ms>50", "error_rate>0.01"]``.
            variant: Name of the variant that serves the new version.
            model_cache_mb: A multi-model endpoint's new cache limit (MB).

        Raises:
            InvalidInputError: Rollout options without a strategy, or bad ones.
            NotFoundError: The project, endpoint, model or version does not exist.
            ConflictError: The version is not ``Approved``, nothing would change, or a rollout
                is in progress (only capture settings change then).
            ArtifactIntegrityError: The new model's files do not match the registry's digests.
        """
        percent = None if capture_percent is None else check_percent(capture_percent)
        cache_mb = check_cache_mb(model_cache_mb)
        if variant is not None:
            validate_name("Variant", variant)
        guarded = strategy is not None
        if not guarded and (
            canary_percent is not None or linear_steps is not None or bake_s is not None or alarms
        ):
            raise InvalidInputError(
                "A canary size, steps, bake time or alarms need a rollout strategy.",
                hint="Add --strategy all_at_once, canary or linear.",
            )
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            current_row = endpoint_row(conn, proj, endpoint_name)
            if version is not None or model_name is not None:
                refuse_multi_model(current_row, proj.name, "switching to one version")
            current = to_info(current_row, proj.name)
        if guarded:
            if version is None and model_name is None:
                raise InvalidInputError(
                    "A guarded update rolls out a version; none was named.",
                    hint="Add --version N (an Approved version).",
                )
            if percent is not None or capture is not None or cache_mb is not None:
                self.update(
                    project,
                    endpoint_name,
                    capture_percent=percent,
                    capture=capture,
                    model_cache_mb=cache_mb,
                )
            self._rollouts.start(
                project,
                endpoint_name,
                model_name or current.model_name,
                version if version is not None else "latest",
                strategy=strategy,  # type: ignore[arg-type]
                canary_percent=canary_percent,
                linear_steps=linear_steps,
                bake_s=600.0 if bake_s is None else bake_s,
                alarms=alarms,
                variant=variant,
            )
            return self._info(proj, endpoint_name)
        mv: ModelVersion | None = None
        signature: str | None = None
        if version is not None or model_name is not None:
            target_model = model_name or current.model_name
            mv, signature = self._deployer.deployable(
                proj, target_model, version if version is not None else "latest"
            )
            self._deployer.prepare(mv)
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint_name, lock=True)
            rows = variant_rows(uow.conn, row.id)
            live = [r for r in rows if r.role == VariantRole.LIVE.value]
            switch = mv is not None and (
                len(live) != 1
                or live[0].model_version_id != mv.id
                or (variant is not None and variant != live[0].name)
            )
            if switch:
                _refuse_in_rollout(uow.conn, row, proj)
            before = _audit_state(row._mapping)
            changes: dict[str, Any] = {}
            if percent is not None and percent != row.capture_percent:
                changes["capture_percent"] = percent
            if capture is not None and capture != bool(row.capture_enabled):
                changes["capture_enabled"] = capture
            if cache_mb is not None:
                if not is_multi_model(row):
                    raise ConflictError(
                        f"Endpoint {endpoint_name!r} is a single-model endpoint; only "
                        "multi-model endpoints have a model cache.",
                        hint="Leave out the cache limit.",
                    )
                if cache_mb != row.model_cache_mb:
                    changes["model_cache_mb"] = cache_mb
            if not changes and not switch:
                raise ConflictError(
                    f"Endpoint {endpoint_name!r} already serves {row.model_name} "
                    f"v{row.model_version} with these capture settings; nothing was changed.",
                    hint="Name another approved version: civicml endpoints update "
                    f"{endpoint_name} --version N --project {proj.name}",
                )
            changes |= {"updated_at": self._ctx.clock.now(), "updated_by": self._ctx.principal.user}
            uow.conn.execute(update(endpoints).where(endpoints.c.id == row.id).values(**changes))
            extra: dict[str, Any] = {}
            if "model_cache_mb" in changes:
                extra["model_cache_mb"] = cache_mb
            if switch and mv is not None:
                taken = {r.name.lower() for r in rows if r.role != VariantRole.LIVE.value}
                name = variant or f"v{mv.version}"
                if name.lower() in taken:
                    name = f"{name}-live"
                shadows = [spec_of(r) for r in rows if r.role != VariantRole.LIVE.value]
                before_rows, after_rows = write_variants(
                    uow, self._ctx, row.id, [*shadows, _single(name, mv)]
                )
                self._deployer.link_version(uow, proj, mv, row.id, endpoint_name)
                extra = {
                    "variants_before": variant_state(before_rows),
                    "variants": variant_state(after_rows),
                }
            after_row = uow.conn.execute(select(endpoints).where(endpoints.c.id == row.id)).one()
            self._audit.record(
                uow,
                "endpoint.updated",
                "endpoint",
                row.id,
                project=proj.name,
                before=before,
                after=_audit_state(after_row._mapping)
                | extra
                | ({} if signature is None else {"signature": signature}),
            )
        self._deployer.refresh(proj.name, endpoint_name)
        return self._info(proj, endpoint_name)

    def get(self, project: str, endpoint_name: str) -> EndpointInfo:
        """One endpoint, with its variants and the rollout in progress, if any.

        Raises:
            NotFoundError: The project or endpoint does not exist (with close names as a hint).
        """
        proj = self._projects.get(project, "endpoints.read")
        return self._info(proj, endpoint_name)

    def list(self, project: str) -> list[EndpointInfo]:
        """Every endpoint of ``project``, by name."""
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(endpoints)
                .where(endpoints.c.project_id == proj.id)
                .order_by(endpoints.c.name)
            ).all()
            return [self._with_stats(self._read_info(conn, proj, r)) for r in rows]

    def delete(self, project: str, endpoint_name: str) -> None:
        """Stop serving and remove an endpoint, its variants and rollouts (a rollout in
        progress ends with it); its capture files, shadow reports and lineage stay.

        Raises:
            NotFoundError: The project or endpoint does not exist.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint_name, lock=True)
            before = _audit_state(row._mapping) | {
                "variants": variant_state(variant_rows(uow.conn, row.id))
            }
            conn = uow.conn
            conn.execute(delete(endpoint_rollouts).where(endpoint_rollouts.c.endpoint_id == row.id))
            conn.execute(
                delete(endpoint_variant_stats).where(endpoint_variant_stats.c.endpoint_id == row.id)
            )
            conn.execute(delete(endpoint_variants).where(endpoint_variants.c.endpoint_id == row.id))
            if is_multi_model(row):
                before["models"] = sorted(
                    f"{m.model_name}/{m.model_version}" for m in model_rows(conn, row.id)
                )
                conn.execute(delete(endpoint_models).where(endpoint_models.c.endpoint_id == row.id))
            conn.execute(delete(endpoints).where(endpoints.c.id == row.id))
            self._lineage.mark_deleted(uow, "endpoint", row.id)
            self._audit.record(
                uow, "endpoint.deleted", "endpoint", row.id, project=proj.name, before=before
            )
        if self._host is not None:
            self._host.forget(proj.name, endpoint_name)

    # Internals --------------------------------------------------------------------------------
    def _info(self, proj: Project, endpoint_name: str) -> EndpointInfo:
        """The endpoint as committed (no permission check: the caller checked one)."""
        with self._ctx.db.read() as conn:
            return self._with_stats(
                self._read_info(conn, proj, endpoint_row(conn, proj, endpoint_name))
            )

    def _read_info(self, conn: Connection, proj: Project, row: Any) -> EndpointInfo:
        if is_multi_model(row):
            return to_info(row, proj.name, (), model_rows(conn, row.id))
        info = to_info(row, proj.name, variant_rows(conn, row.id))
        rollout = rollouts_in_progress(conn, [row.id]).get(row.id)
        if rollout is None:
            return info
        return info.model_copy(
            update={"rollout": self._rollouts.info(conn, rollout, proj.name, row.name)}
        )

    def _with_stats(self, info: EndpointInfo) -> EndpointInfo:
        """``info`` with the counters of this process's model host, where it serves it."""
        stats = None if self._host is None else self._host.stats(info.id)
        if stats is not None:
            info = info.model_copy(update={"stats": stats})
        cache = None if self._host is None else self._host.model_cache(info.id)
        if cache is None:
            return info
        return info.model_copy(
            update={
                "model_cache": ModelCacheStats(
                    limit_bytes=cache.limit_bytes,
                    used_bytes=cache.used_bytes,
                    loaded=list(cache.loaded),
                    hits=cache.hits,
                    loads=cache.loads,
                    evictions=cache.evictions,
                    load_failures=cache.load_failures,
                )
            }
        )


def _single(name: str, mv: ModelVersion) -> dict[str, Any]:
    """The one live variant of a single-version endpoint."""
    return {
        "name": name,
        "role": VariantRole.LIVE.value,
        "model_name": mv.name,
        "model_version_id": mv.id,
        "model_version": mv.version,
        "weight": 1.0,
        "shadow_percent": 0.0,
    }


def _refuse_in_rollout(conn: Connection, row: Any, proj: Project) -> None:
    if rollouts_in_progress(conn, [row.id]):
        raise ConflictError(
            f"Endpoint {row.name!r} has a rollout in progress; its live variants change only "
            "through it until it ends.",
            hint=f"Wait for it, or cancel it: civicml endpoints rollout cancel {row.name} "
            f"--project {proj.name}",
        )


def _audit_state(values: Any) -> dict[str, Any]:
    return {
        "name": values["name"],
        "model_name": values["model_name"],
        "model_version": values["model_version"],
        "model_version_id": values["model_version_id"],
        "capture_enabled": bool(values["capture_enabled"]),
        "capture_percent": float(values["capture_percent"]),
    }


def _exists(project: str, name: str, existing: str | None = None) -> ConflictError:
    existing = existing or name
    return ConflictError(
        already_exists("Endpoint", name, existing, scope=f"project {project!r}"),
        hint=f"Switch its version instead: civicml endpoints update {existing} --version N "
        f"--project {project}",
    )
