"""The endpoint service: deploy approved model versions, switch versions, delete endpoints.

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

import math
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.core.ids import new_id, validate_name
from civicml.core.names import already_exists
from civicml.evaluation.models import fetch_version_files
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.registry.schemas import ApprovalStatus, ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving._queries import endpoint_row, find_endpoint, to_info
from civicml.serving._tables import endpoints
from civicml.serving.runtime import LoadedModel, ModelHost
from civicml.serving.schemas import EndpointInfo, EndpointStatus
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
        self._registry = RegistryService(ctx)

    def deploy(
        self,
        project: str,
        endpoint_name: str,
        model_name: str,
        version: int | str,
        *,
        capture_percent: float = 100.0,
        capture: bool = True,
    ) -> EndpointInfo:
        """Serve an approved model version as endpoint ``endpoint_name``.

        Args:
            project: Project name.
            endpoint_name: New endpoint name, unique in the project.
            model_name: Registered model name.
            version: Version number or alias (e.g. ``"production"``).
            capture_percent: Share of requests captured, 0-100.
            capture: Whether data capture is on at all.

        Returns:
            The endpoint, ``InService``.

        Raises:
            InvalidInputError: A bad name or capture percentage.
            NotFoundError: The project, model or version does not exist.
            ConflictError: The version is not ``Approved`` or is archived, or the endpoint exists.
            ArtifactIntegrityError: The model's files do not match the registry's digests.
        """
        validate_name("Endpoint", endpoint_name)
        percent = _check_percent(capture_percent)
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            existing = find_endpoint(conn, proj.id, endpoint_name)  # in any letter case
            if existing is not None:
                raise _exists(proj.name, endpoint_name, existing.name)
        mv, signature = self._deployable(proj, model_name, version)
        loaded = self._prepare(mv)
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
                node = self._lineage.node(
                    uow, "endpoint", values["id"], name=endpoint_name, project_id=proj.id
                )
                self._link_version(uow, proj, mv, node)
                self._audit.record(
                    uow,
                    "endpoint.deployed",
                    "endpoint",
                    values["id"],
                    project=proj.name,
                    after=_audit_state(values) | {"signature": signature},
                )
        except IntegrityError as err:  # deployed concurrently under the same name
            raise _exists(proj.name, endpoint_name) from err
        info = to_info(values, proj.name)
        self._activate(proj, info, loaded)
        return self._with_stats(info)

    def update(
        self,
        project: str,
        endpoint_name: str,
        version: int | str | None = None,
        *,
        model_name: str | None = None,
        capture_percent: float | None = None,
        capture: bool | None = None,
    ) -> EndpointInfo:
        """Switch an endpoint to another approved version and/or change its capture settings.

        The new model is loaded before the switch; requests keep being answered by the old one
        until it is ready, then all go to the new one.

        Args:
            project: Project name.
            endpoint_name: The endpoint.
            version: The version to serve (number or alias); None keeps the current one.
            model_name: Another registered model to serve (default: the current model).
            capture_percent: New capture percentage, 0-100.
            capture: Turn capture on or off.

        Raises:
            NotFoundError: The project, endpoint, model or version does not exist.
            ConflictError: The version is not ``Approved``, or nothing would change.
            ArtifactIntegrityError: The new model's files do not match the registry's digests.
        """
        percent = None if capture_percent is None else _check_percent(capture_percent)
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            current = to_info(endpoint_row(conn, proj, endpoint_name), proj.name)
        mv: ModelVersion | None = None
        loaded: LoadedModel | None = None
        signature: str | None = None
        if version is not None or model_name is not None:
            target_model = model_name or current.model_name
            mv, signature = self._deployable(
                proj, target_model, version if version is not None else "latest"
            )
            if mv.id != current.model_version_id:
                loaded = self._prepare(mv)
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint_name, lock=True)
            before = _audit_state(row._mapping)
            changes: dict[str, Any] = {}
            if mv is not None and mv.id != row.model_version_id:
                changes |= {
                    "model_name": mv.name,
                    "model_version_id": mv.id,
                    "model_version": mv.version,
                }
            if percent is not None and percent != row.capture_percent:
                changes["capture_percent"] = percent
            if capture is not None and capture != bool(row.capture_enabled):
                changes["capture_enabled"] = capture
            if not changes:
                raise ConflictError(
                    f"Endpoint {endpoint_name!r} already serves {row.model_name} "
                    f"v{row.model_version} with these capture settings; nothing was changed.",
                    hint="Name another approved version: civicml endpoints update "
                    f"{endpoint_name} --version N --project {proj.name}",
                )
            changes |= {"updated_at": self._ctx.clock.now(), "updated_by": self._ctx.principal.user}
            uow.conn.execute(update(endpoints).where(endpoints.c.id == row.id).values(**changes))
            after_row = uow.conn.execute(select(endpoints).where(endpoints.c.id == row.id)).one()
            if mv is not None and "model_version_id" in changes:
                node = self._lineage.node(
                    uow, "endpoint", row.id, name=endpoint_name, project_id=proj.id
                )
                self._link_version(uow, proj, mv, node)
            self._audit.record(
                uow,
                "endpoint.updated",
                "endpoint",
                row.id,
                project=proj.name,
                before=before,
                after=_audit_state(after_row._mapping)
                | ({} if signature is None else {"signature": signature}),
            )
        info = to_info(after_row, proj.name)
        if self._host is not None:
            if loaded is None:  # same model, new capture settings
                mv = mv or self._registry.get_version(project, info.model_name, info.model_version)
                loaded = self._host.load(mv)
            self._activate(proj, info, loaded)
        return self._with_stats(info)

    def get(self, project: str, endpoint_name: str) -> EndpointInfo:
        """One endpoint.

        Raises:
            NotFoundError: The project or endpoint does not exist (with close names as a hint).
        """
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            info = to_info(endpoint_row(conn, proj, endpoint_name), proj.name)
        return self._with_stats(info)

    def list(self, project: str) -> list[EndpointInfo]:
        """Every endpoint of ``project``, by name."""
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(endpoints)
                .where(endpoints.c.project_id == proj.id)
                .order_by(endpoints.c.name)
            ).all()
        return [self._with_stats(to_info(r, proj.name)) for r in rows]

    def delete(self, project: str, endpoint_name: str) -> None:
        """Stop serving and remove an endpoint; its capture files and lineage stay.

        Raises:
            NotFoundError: The project or endpoint does not exist.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint_name, lock=True)
            uow.conn.execute(delete(endpoints).where(endpoints.c.id == row.id))
            self._lineage.mark_deleted(uow, "endpoint", row.id)
            self._audit.record(
                uow,
                "endpoint.deleted",
                "endpoint",
                row.id,
                project=proj.name,
                before=_audit_state(row._mapping),
            )
        if self._host is not None:
            self._host.forget(proj.name, endpoint_name)

    # Internals --------------------------------------------------------------------------------
    def _with_stats(self, info: EndpointInfo) -> EndpointInfo:
        """``info`` with the counters of this process's model host, where it serves it."""
        stats = None if self._host is None else self._host.stats(info.id)
        return info if stats is None else info.model_copy(update={"stats": stats})

    def _deployable(
        self, proj: Project, model_name: str, version: int | str
    ) -> tuple[ModelVersion, str]:
        """The version to deploy and its registration signature status (``"verified"``, or
        ``"absent"`` for a legacy version registered before versions were signed)."""
        if version == "latest":
            versions = self._registry.list_versions(proj.name, model_name)
            approved = [v for v in versions if v.approval_status is ApprovalStatus.APPROVED]
            if not approved:
                raise ConflictError(
                    f"Model {model_name!r} has no Approved version to deploy.",
                    hint=f"Approve one: civicml models approve {model_name} VERSION --note "
                    f"'<why>' --project {proj.name}",
                )
            self._registry.check_approved_files(approved[-1])  # approved as it is now
            signature = self._registry.verify_version_signature(approved[-1])  # as registered
            return approved[-1], signature
        mv = self._registry.get_version(proj.name, model_name, version)
        label = f"{mv.name}/{mv.version}"
        if mv.approval_status is not ApprovalStatus.APPROVED:
            raise ConflictError(
                f"Model version {label} is {mv.approval_status.value}; only Approved versions "
                "can be deployed.",
                hint=f"Approve it first: civicml models approve {mv.name} {mv.version} --note "
                f"'<why>' --project {proj.name}",
            )
        if mv.archived:
            raise ConflictError(
                f"Model version {label} is archived; archived versions cannot be deployed.",
                hint=f"Unarchive it first: civicml models unarchive {mv.name} {mv.version} "
                f"--project {proj.name}",
            )
        self._registry.check_approved_files(mv)  # the approval bound these exact files
        signature = self._registry.verify_version_signature(mv)  # signed at registration
        return mv, signature

    def _prepare(self, mv: ModelVersion) -> LoadedModel | None:
        """Load (with a host) or at least verify every file of ``mv`` before committing."""
        if self._host is not None:
            return self._host.load(mv)
        import tempfile

        root = self._ctx.settings.home / "serving" / "cache"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            from pathlib import Path

            fetch_version_files(self._ctx, mv, Path(tmp))
        return None

    def _activate(self, proj: Project, info: EndpointInfo, loaded: LoadedModel | None) -> None:
        if self._host is not None and loaded is not None:
            self._host.activate(proj.id, info, loaded)

    def _link_version(self, uow: Any, proj: Project, mv: ModelVersion, node: str) -> None:
        src = self._lineage.node(
            uow, "model_version", mv.id, name=f"{mv.name} v{mv.version}", project_id=proj.id
        )
        self._lineage.link(uow, src, node, "AssociatedWith")


def _check_percent(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(
            f"Capture percentage {value!r} is not a number.",
            hint="Use a number from 0 (capture nothing) to 100 (capture every request).",
        )
    if not 0 <= value <= 100:
        raise InvalidInputError(
            f"Capture percentage {value} is out of range.",
            hint="Use a number from 0 (capture nothing) to 100 (capture every request).",
        )
    return float(value)


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
