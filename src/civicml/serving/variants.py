"""Endpoint variants: several approved versions behind one endpoint, with traffic weights, and at
most one shadow (SageMaker's production and shadow variants, Azure ML's deployments with
``traffic`` and ``mirror_traffic``; anchors.md B4).

A live variant answers ``weight / Σ weight`` of the requests that do not pin a variant; a weight
of 0 keeps it out of the draw, so it answers only requests that pin it with the header
``civicml-variant: NAME`` (or Azure's ``azureml-model-deployment``) — how a new version is tried
by hand before it gets any traffic. The shadow receives a copy of ``shadow_percent`` of the live,
unpinned requests after they were answered; its answers are captured, never returned
(:mod:`civicml.serving.shadow`). Weights change without a redeploy and without a failed request:
every model is loaded before the change commits and the serving process swaps its route whole.

Every change is one unit of work: the variant rows, the endpoint's primary variant, the lineage
(model version → endpoint) and the audit event ``endpoint.variants_changed`` with the variants
before and after. While a guarded rollout is in progress the live variants change only through
it (a 409 says how to cancel it); the shadow may still be set or removed.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError, closest
from civicml.core.ids import validate_name
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.registry.schemas import ModelVersion
from civicml.serving._deploy import (
    Deployer,
    check_percent,
    default_variant_name,
    spec_of,
    variant_state,
    write_variants,
)
from civicml.serving._queries import (
    endpoint_row,
    refuse_multi_model,
    to_variants,
    variant_rows,
)
from civicml.serving.rollout import rollouts_in_progress
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import EndpointInfo, VariantInfo, VariantRole
from civicml.serving.service import EndpointService
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["MAX_VARIANTS", "VariantService"]

#: The most variants (live and shadow) one endpoint holds.
MAX_VARIANTS = 10
_LIVE = VariantRole.LIVE.value
_SHADOW = VariantRole.SHADOW.value


class VariantService:
    """Adds, reweights and removes the variants of endpoints, and sets their shadow.

    Args:
        ctx: The stores, principal and clock every call runs with.
        host: The model host of this process (models load into it before a change commits).

    Example:
        >>> svc = VariantService(ctx, host)  # doctest: +SKIP
        >>> svc.put("benefits", "eligibility", "green", "eligibility", 4)  # doctest: +SKIP
        >>> svc.set_weights("benefits", "eligibility", {"blue": 90, "green": 10})  # doctest: +SKIP
    """

    def __init__(self, ctx: Context, host: ModelHost | None = None) -> None:
        self._ctx = ctx
        self._host = host
        self._projects = ProjectService(ctx)
        self._deployer = Deployer(ctx, host)
        self._endpoints = EndpointService(ctx, host)

    def list(self, project: str, endpoint: str) -> builtins.list[VariantInfo]:
        """The endpoint's variants, live ones first (by name), then the shadow."""
        proj = self._projects.get(project, "endpoints.read")
        with self._ctx.db.read() as conn:
            row = endpoint_row(conn, proj, endpoint)
            return to_variants(variant_rows(conn, row.id))

    def put(
        self,
        project: str,
        endpoint: str,
        name: str,
        model_name: str,
        version: int | str,
        *,
        weight: float = 0.0,
    ) -> EndpointInfo:
        """Add live variant ``name`` serving ``model_name`` ``version`` (or switch the variant
        of that name to it) with ``weight`` (default 0: it answers only pinned requests).

        Raises:
            InvalidInputError: A bad name or weight.
            NotFoundError: The project, endpoint, model or version does not exist.
            ConflictError: The version is not Approved, the name is the shadow's, the endpoint
                would have more than :data:`MAX_VARIANTS` variants, no live variant would have
                weight, or a rollout is in progress.
        """
        validate_name("Variant", name)
        weight = _check_weight(name, weight)
        proj = self._projects.get(project, "endpoints.write")
        mv, signature = self._deployer.deployable(proj, model_name, version)
        self._deployer.prepare(mv)

        def change(rows: builtins.list[Any]) -> builtins.list[dict[str, Any]]:
            same = next((r for r in rows if r.name.lower() == name.lower()), None)
            if same is not None and same.role == _SHADOW:
                raise ConflictError(
                    f"Variant {same.name!r} of endpoint {endpoint!r} is its shadow.",
                    hint="Remove the shadow first (civicml endpoints shadow remove "
                    f"{endpoint}), or pick another name.",
                )
            desired = [spec_of(r) for r in rows if r.name.lower() != name.lower()]
            return [*desired, _live(same.name if same is not None else name, mv, weight)]

        return self._change(proj, endpoint, change, rollout_free=True, mv=mv, signature=signature)

    def set_weights(
        self, project: str, endpoint: str, weights: Mapping[str, float]
    ) -> EndpointInfo:
        """Give the named live variants new traffic weights (the others keep theirs); share =
        weight / Σ live weights. Takes effect without a redeploy or a failed request.

        Raises:
            InvalidInputError: A weight is negative or not a number, or none was given.
            NotFoundError: The endpoint has no live variant of a given name.
            ConflictError: No live variant would have weight, or a rollout is in progress.
        """
        if not weights:
            raise InvalidInputError(
                "No weights were given.", hint="Give NAME=WEIGHT pairs, e.g. blue=90 green=10."
            )
        checked = {validate_name("Variant", n): _check_weight(n, w) for n, w in weights.items()}
        proj = self._projects.get(project, "endpoints.write")

        def change(rows: builtins.list[Any]) -> builtins.list[dict[str, Any]]:
            live = {r.name.lower(): r for r in rows if r.role == _LIVE}
            for given in checked:
                if given.lower() not in live:
                    raise _unknown(endpoint, given, [r.name for r in rows if r.role == _LIVE])
            lower = {n.lower(): w for n, w in checked.items()}
            return [
                spec_of(r) | ({"weight": lower[r.name.lower()]} if r.name.lower() in lower else {})
                for r in rows
            ]

        return self._change(proj, endpoint, change, rollout_free=True)

    def remove(self, project: str, endpoint: str, name: str) -> EndpointInfo:
        """Remove variant ``name`` (live or shadow).

        Raises:
            NotFoundError: The endpoint has no such variant.
            ConflictError: It is the last live variant with weight, or a rollout is in
                progress and it is live.
        """
        proj = self._projects.get(project, "endpoints.write")
        with self._ctx.db.read() as conn:
            found = {
                r.name.lower(): r for r in variant_rows(conn, endpoint_row(conn, proj, endpoint).id)
            }
        target = found.get(name.lower())
        if target is None:
            raise _unknown(endpoint, name, [r.name for r in found.values()])

        def change(rows: builtins.list[Any]) -> builtins.list[dict[str, Any]]:
            return [spec_of(r) for r in rows if r.name.lower() != name.lower()]

        return self._change(proj, endpoint, change, rollout_free=target.role == _LIVE)

    def set_shadow(
        self,
        project: str,
        endpoint: str,
        model_name: str,
        version: int | str,
        *,
        percent: float = 100.0,
        name: str | None = None,
    ) -> EndpointInfo:
        """Make ``model_name`` ``version`` the endpoint's one shadow variant: ``percent`` of the
        live, unpinned requests are copied to it after they are answered; its answers are
        captured (marked shadow) and never returned. Replaces the shadow there was.

        Raises:
            InvalidInputError: A bad name or percent (above 0, at most 100).
            NotFoundError: The project, endpoint, model or version does not exist.
            ConflictError: The version is not Approved, data capture is off (the shadow's
                answers would go nowhere), or the name is a live variant's.
        """
        if name is not None:
            validate_name("Variant", name)
        share = check_percent(percent, "Shadow percentage")
        if share == 0:
            raise InvalidInputError(
                "Shadow percentage 0 copies nothing.",
                hint="Use a percent above 0, or remove the shadow: civicml endpoints shadow "
                f"remove {endpoint}",
            )
        proj = self._projects.get(project, "endpoints.write")
        mv, signature = self._deployer.deployable(proj, model_name, version)
        self._deployer.prepare(mv)

        def change(rows: builtins.list[Any]) -> builtins.list[dict[str, Any]]:
            kept = [r for r in rows if r.role != _SHADOW]
            taken = {r.name.lower() for r in kept}
            chosen = name or default_variant_name(mv, None, taken) + "-shadow"
            if chosen.lower() in taken:
                raise ConflictError(
                    f"Endpoint {endpoint!r} has a live variant {chosen!r}.",
                    hint="Give the shadow another name (--name NAME).",
                )
            shadow = _live(chosen, mv, 0.0) | {"role": _SHADOW, "shadow_percent": share}
            return [*(spec_of(r) for r in kept), shadow]

        return self._change(
            proj, endpoint, change, rollout_free=False, mv=mv, signature=signature, capture=True
        )

    def remove_shadow(self, project: str, endpoint: str) -> EndpointInfo:
        """Stop copying requests to the endpoint's shadow and remove it.

        Raises:
            NotFoundError: The project or endpoint does not exist.
            ConflictError: The endpoint has no shadow.
        """
        proj = self._projects.get(project, "endpoints.write")

        def change(rows: builtins.list[Any]) -> builtins.list[dict[str, Any]]:
            if not any(r.role == _SHADOW for r in rows):
                raise ConflictError(
                    f"Endpoint {endpoint!r} has no shadow variant.",
                    hint=f"Set one: civicml endpoints shadow set {endpoint} --model M "
                    "--version N --percent 10",
                )
            return [spec_of(r) for r in rows if r.role != _SHADOW]

        return self._change(proj, endpoint, change, rollout_free=False)

    # Internals --------------------------------------------------------------------------------
    def _change(
        self,
        proj: Project,
        endpoint: str,
        change: Any,
        *,
        rollout_free: bool,
        mv: ModelVersion | None = None,
        signature: str | None = None,
        capture: bool = False,
    ) -> EndpointInfo:
        with self._ctx.db.write() as uow:
            row = endpoint_row(uow.conn, proj, endpoint, lock=True)
            refuse_multi_model(row, proj.name, "changing variants, weights or the shadow")
            if rollout_free:
                _refuse_in_rollout(uow, row, proj)
            if capture and not row.capture_enabled:
                raise ConflictError(
                    f"Endpoint {row.name!r} has data capture off; a shadow's answers are only "
                    "ever captured, so they would go nowhere.",
                    hint=f"Turn capture on first: civicml endpoints update {row.name} "
                    f"--capture-percent 100 --project {proj.name}",
                )
            desired = change(variant_rows(uow.conn, row.id))
            if len(desired) > MAX_VARIANTS:
                raise ConflictError(
                    f"Endpoint {row.name!r} would have {len(desired)} variants; at most "
                    f"{MAX_VARIANTS} are allowed.",
                    hint="Remove a variant first: civicml endpoints variants remove "
                    f"{row.name} NAME",
                )
            before, after = write_variants(uow, self._ctx, row.id, desired)
            if before == after:
                raise ConflictError(
                    f"Endpoint {row.name!r} already has these variants; nothing was changed.",
                    hint=f"See them: civicml endpoints variants list {row.name}",
                )
            if mv is not None:
                self._deployer.link_version(uow, proj, mv, row.id, row.name)
            AuditTrail(self._ctx).record(
                uow,
                "endpoint.variants_changed",
                "endpoint",
                row.id,
                project=proj.name,
                before={"variants": variant_state(before)},
                after={"variants": variant_state(after)}
                | ({} if signature is None else {"signature": signature}),
            )
        self._deployer.refresh(proj.name, endpoint)
        return self._endpoints.get(proj.name, endpoint)


def _check_weight(name: str, weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not (0 <= weight <= 1e6):
        raise InvalidInputError(
            f"Weight {weight!r} of variant {name!r} is not a number from 0 to 1,000,000.",
            hint="Weights are relative (share = weight / sum of the live weights): e.g. 90 and "
            "10; 0 keeps a variant for pinned requests only.",
        )
    return float(weight)


def _unknown(endpoint: str, name: str, names: builtins.list[str]) -> NotFoundError:
    return NotFoundError(
        f"Endpoint {endpoint!r} has no variant {name!r}.",
        hint=closest(name, names) or f"Its variants: {', '.join(names) or 'none'}.",
    )


def _refuse_in_rollout(uow: UnitOfWork, row: Any, proj: Project) -> None:
    if rollouts_in_progress(uow.conn, [row.id]):
        raise ConflictError(
            f"Endpoint {row.name!r} has a rollout in progress; its live variants change only "
            "through it until it ends.",
            hint=f"Wait for it, or cancel it: civicml endpoints rollout cancel {row.name} "
            f"--project {proj.name}",
        )


def _live(name: str, mv: ModelVersion, weight: float) -> dict[str, Any]:
    return {
        "name": name,
        "role": _LIVE,
        "model_name": mv.name,
        "model_version_id": mv.id,
        "model_version": mv.version,
        "weight": weight,
        "shadow_percent": 0.0,
    }
