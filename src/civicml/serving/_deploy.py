"""What every change to an endpoint's variants shares: which model versions may be served,
loading them before the commit, and writing the variant rows with their audit and lineage.

``Deployer.deployable`` admits only an ``Approved``, unarchived version whose files are the ones
its approval bound and whose registration signature verifies; ``Deployer.prepare`` loads it into
the process's model host (or at least hashes every file) *before* anything is committed, so a
variant row never points at a model that cannot be served. :func:`write_variants` brings an
endpoint's variant rows to a desired list in the caller's unit of work and keeps the endpoint
row's ``model_*`` columns on its primary variant.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, update

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.core.ids import new_id
from civicml.evaluation.models import fetch_version_files
from civicml.governance.lineage import LineageService
from civicml.governance.schemas import Project
from civicml.registry.schemas import ApprovalStatus, ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving._queries import primary, variant_rows
from civicml.serving._tables import endpoint_variants, endpoints
from civicml.serving.runtime import LoadedModel, ModelHost
from civicml.serving.schemas import VariantRole
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = [
    "MAX_CACHE_MB",
    "Deployer",
    "check_cache_mb",
    "check_percent",
    "default_variant_name",
    "spec_of",
    "variant_state",
    "write_variants",
]


class Deployer:
    """Checks, loads and links model versions for the endpoint services."""

    def __init__(self, ctx: Context, host: ModelHost | None) -> None:
        self._ctx = ctx
        self._host = host
        self._registry = RegistryService(ctx)
        self._lineage = LineageService(ctx)

    def deployable(
        self, proj: Project, model_name: str, version: int | str
    ) -> tuple[ModelVersion, str]:
        """The version to serve and its registration signature status (``"verified"``, or
        ``"absent"`` for a legacy version registered before versions were signed).

        Raises:
            NotFoundError: The model or version does not exist.
            ConflictError: The version is not ``Approved``, or is archived.
            ArtifactIntegrityError: Its files are not the ones its approval bound.
        """
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

    def prepare(self, mv: ModelVersion) -> LoadedModel | None:
        """Load (with a host) or at least verify every file of ``mv`` before committing."""
        if self._host is not None:
            return self._host.load(mv)
        root = self._ctx.settings.home / "serving" / "cache"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            fetch_version_files(self._ctx, mv, Path(tmp))
        return None

    def link_version(
        self, uow: UnitOfWork, proj: Project, mv: ModelVersion, endpoint_id: str, name: str
    ) -> str:
        """Lineage: model version --AssociatedWith--> endpoint; returns the endpoint's node."""
        node = self._lineage.node(uow, "endpoint", endpoint_id, name=name, project_id=proj.id)
        src = self._lineage.node(
            uow, "model_version", mv.id, name=f"{mv.name} v{mv.version}", project_id=proj.id
        )
        self._lineage.link(uow, src, node, "AssociatedWith")
        return node

    def refresh(self, project: str, endpoint: str) -> None:
        """Switch this process's host to the endpoint as committed (no-op without a host)."""
        if self._host is not None:
            self._host.refresh(project, endpoint)


def check_percent(value: object, what: str = "Capture percentage") -> float:
    """``value`` as a float from 0 to 100.

    Raises:
        InvalidInputError: It is not a finite number from 0 to 100.
    """
    hint = (
        "Use a number from 0 (capture nothing) to 100 (capture every request)."
        if what == "Capture percentage"
        else "Use a number from 0 to 100, e.g. 10 for one request in ten."
    )
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{what} {value!r} is not a number.", hint=hint)
    if not 0 <= value <= 100:
        raise InvalidInputError(f"{what} {value} is out of range.", hint=hint)
    return float(value)


#: The largest model cache limit a multi-model endpoint may set (MB).
MAX_CACHE_MB = 10_000_000.0


def check_cache_mb(value: object) -> float | None:
    """A multi-model endpoint's cache limit: None, or a finite number of MB above 0.

    Raises:
        InvalidInputError: It is not a number above 0 and at most :data:`MAX_CACHE_MB`.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_CACHE_MB
    ):
        raise InvalidInputError(
            f"Model cache limit {value!r} is not a number of MB above 0 and at most "
            f"{MAX_CACHE_MB:,.0f}.",
            hint="E.g. 512 for half a gigabyte of model files; leave it out for the server's "
            "serving_model_cache_mb.",
        )
    return float(value)


def default_variant_name(mv: ModelVersion, endpoint_model: str | None, taken: set[str]) -> str:
    """``v<N>`` (``<model>-v<N>`` for another model than the endpoint's), made unique against
    the lower-case names in ``taken`` with ``-2``, ``-3``, ..."""
    base = f"v{mv.version}"
    if endpoint_model is not None and mv.name.lower() != endpoint_model.lower():
        base = f"{mv.name}-v{mv.version}"[:120]
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def spec_of(row: Any) -> dict[str, Any]:
    """A variant row as :func:`write_variants` takes it."""
    return {
        "name": row.name,
        "role": row.role,
        "model_name": row.model_name,
        "model_version_id": row.model_version_id,
        "model_version": row.model_version,
        "weight": float(row.weight),
        "shadow_percent": float(row.shadow_percent),
    }


def variant_state(rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Variants as the audit trail records them: name -> role, version, weight, percent."""
    out = {}
    for row in rows:
        v = row if isinstance(row, dict) else row._mapping
        state: dict[str, Any] = {
            "role": v["role"],
            "model": f"{v['model_name']} v{v['model_version']}",
            "model_version_id": v["model_version_id"],
        }
        if v["role"] == VariantRole.SHADOW.value:
            state["shadow_percent"] = float(v["shadow_percent"])
        else:
            state["weight"] = float(v["weight"])
        out[v["name"]] = state
    return out


def write_variants(
    uow: UnitOfWork, ctx: Context, endpoint_id: str, desired: Sequence[dict[str, Any]]
) -> tuple[list[Any], list[Any]]:
    """Bring the endpoint's variant rows to ``desired`` (dicts with ``name``, ``role``,
    ``model_name``, ``model_version_id``, ``model_version``, ``weight``, ``shadow_percent``;
    matched by lower-case name) and the endpoint row's ``model_*`` columns to its primary
    variant. Returns (rows before, rows after).

    Raises:
        ConflictError: No live variant would have any weight (nothing could answer).
    """
    conn = uow.conn
    before = variant_rows(conn, endpoint_id)
    live = VariantRole.LIVE.value
    if not any(d["role"] == live and float(d["weight"]) > 0 for d in desired):
        raise ConflictError(
            "No live variant would have a traffic weight above 0, so nothing could answer.",
            hint="Give at least one live variant a weight above 0 (weights are relative: "
            "share = weight / sum of the live weights).",
        )
    now, user = ctx.clock.now(), ctx.principal.user
    current = {r.name.lower(): r for r in before}
    wanted = {str(d["name"]).lower(): d for d in desired}
    for key, row in current.items():
        if key not in wanted:
            conn.execute(delete(endpoint_variants).where(endpoint_variants.c.id == row.id))
    fields = ("role", "model_name", "model_version_id", "model_version")
    for key, want in wanted.items():
        values = {
            "role": want["role"],
            "model_name": want["model_name"],
            "model_version_id": want["model_version_id"],
            "model_version": int(want["model_version"]),
            "weight": float(want["weight"]),
            "shadow_percent": float(want.get("shadow_percent", 0.0)),
        }
        row = current.get(key)
        if row is None:
            conn.execute(
                insert(endpoint_variants).values(
                    id=new_id(),
                    endpoint_id=endpoint_id,
                    name=want["name"],
                    created_at=now,
                    created_by=user,
                    updated_at=now,
                    updated_by=user,
                    **values,
                )
            )
        elif any(getattr(row, f) != values[f] for f in fields) or (
            float(row.weight),
            float(row.shadow_percent),
        ) != (values["weight"], values["shadow_percent"]):
            conn.execute(
                update(endpoint_variants)
                .where(endpoint_variants.c.id == row.id)
                .values(updated_at=now, updated_by=user, **values)
            )
    after = variant_rows(conn, endpoint_id)
    main = primary(after)
    if main is not None:
        conn.execute(
            update(endpoints)
            .where(endpoints.c.id == endpoint_id)
            .values(
                model_name=main["model_name"],
                model_version_id=main["model_version_id"],
                model_version=main["model_version"],
                updated_at=now,
                updated_by=user,
            )
        )
    return before, after
