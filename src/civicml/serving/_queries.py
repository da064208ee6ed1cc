"""Reading endpoint rows, shared by the service, the runtime and capture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from civicml.core.errors import ConflictError, NotFoundError, closest
from civicml.core.names import name_key
from civicml.governance.schemas import Project
from civicml.serving._tables import endpoint_models, endpoint_variants, endpoints
from civicml.serving.schemas import (
    CaptureConfig,
    EndpointInfo,
    EndpointMode,
    EndpointModel,
    EndpointStatus,
    VariantInfo,
    VariantRole,
)

__all__ = [
    "endpoint_row",
    "find_endpoint",
    "is_multi_model",
    "model_rows",
    "primary",
    "refuse_multi_model",
    "to_info",
    "to_models",
    "to_variants",
    "variant_rows",
]


def find_endpoint(
    conn: Connection, project_id: str, name: str, *, lock: bool = False
) -> Any | None:
    """The endpoint row, or None."""
    query = select(endpoints).where(  # names are case-insensitive
        endpoints.c.project_id == project_id, func.lower(endpoints.c.name) == name_key(name)
    )
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def endpoint_row(conn: Connection, proj: Project, name: str, *, lock: bool = False) -> Any:
    """The endpoint row; NotFoundError with close names (or how to deploy) otherwise."""
    row = find_endpoint(conn, proj.id, name, lock=lock)
    if row is None:
        names = conn.execute(
            select(endpoints.c.name).where(endpoints.c.project_id == proj.id)
        ).scalars()
        raise NotFoundError(
            f"Endpoint {name!r} does not exist in project {proj.name!r}.",
            hint=closest(name, names)
            or f"Deploy it: civicml endpoints deploy {name} MODEL VERSION --project {proj.name}",
        )
    return row


def variant_rows(conn: Connection, endpoint_id: str) -> list[Any]:
    """The variant rows of an endpoint, live ones first (by name), then the shadow."""
    rows = conn.execute(
        select(endpoint_variants).where(endpoint_variants.c.endpoint_id == endpoint_id)
    ).all()
    return sorted(rows, key=lambda r: (r.role != VariantRole.LIVE.value, r.name.lower()))


def primary(rows: Sequence[Any]) -> Any | None:
    """The values of the primary variant: the live one with the most weight (ties: the first
    by name); None without a live variant."""
    values = [r if isinstance(r, dict) else r._mapping for r in rows]
    live = [v for v in values if v["role"] == VariantRole.LIVE.value]
    live.sort(key=lambda v: (-float(v["weight"]), str(v["name"]).lower()))
    return live[0] if live else None


def to_variants(rows: Sequence[Any]) -> list[VariantInfo]:
    """The schemas of variant rows (Rows or dicts), each with its share of live traffic."""
    values = [r if isinstance(r, dict) else r._mapping for r in rows]
    live = VariantRole.LIVE.value
    total = sum(float(v["weight"]) for v in values if v["role"] == live)
    return [
        VariantInfo(
            id=v["id"],
            name=v["name"],
            role=VariantRole(v["role"]),
            model_name=v["model_name"],
            model_version=v["model_version"],
            model_version_id=v["model_version_id"],
            weight=float(v["weight"]),
            share=float(v["weight"]) / total if v["role"] == live and total > 0 else 0.0,
            shadow_percent=float(v["shadow_percent"]),
            created_at=v["created_at"],
            created_by=v["created_by"],
            updated_at=v["updated_at"],
            updated_by=v["updated_by"],
        )
        for v in values
    ]


def is_multi_model(row: Any) -> bool:
    """Whether an endpoint row (a Row or a dict of its values) is a multi-model endpoint."""
    values = row if isinstance(row, dict) else row._mapping
    return values.get("mode") == EndpointMode.MULTI_MODEL.value


def refuse_multi_model(row: Any, project: str, what: str) -> None:
    """Raise a ConflictError when ``row`` is a multi-model endpoint (it has no variants, so
    ``what`` — weights, a shadow, a rollout, a version switch — does not apply)."""
    if is_multi_model(row):
        raise ConflictError(
            f"Endpoint {row.name!r} is a multi-model endpoint; {what} applies only to "
            "single-model endpoints (their variants).",
            hint=f"Add or remove its models instead: civicml endpoints models add {row.name} "
            f"MODEL VERSION --project {project}",
        )


def model_rows(conn: Connection, endpoint_id: str) -> list[Any]:
    """The model rows of a multi-model endpoint, by model name, newest version first."""
    rows = conn.execute(
        select(endpoint_models).where(endpoint_models.c.endpoint_id == endpoint_id)
    ).all()
    return sorted(rows, key=lambda r: (r.model_name.lower(), -r.model_version))


def to_models(rows: Sequence[Any]) -> list[EndpointModel]:
    """The schemas of a multi-model endpoint's model rows."""
    return [
        EndpointModel(
            id=r.id,
            model_name=r.model_name,
            model_version=r.model_version,
            model_version_id=r.model_version_id,
            ref=r.ref,
            target=f"{r.model_name}/{r.model_version}",
            size_bytes=int(r.size_bytes),
            created_at=r.created_at,
            created_by=r.created_by,
        )
        for r in rows
    ]


def to_info(
    row: Any, project: str, variants: Sequence[Any] = (), models: Sequence[Any] = ()
) -> EndpointInfo:
    """The schema of an endpoint row (a Row or a dict of its values) with its variant rows
    (or, for a multi-model endpoint, its model rows)."""
    values = row if isinstance(row, dict) else row._mapping
    cache_mb = values.get("model_cache_mb")
    return EndpointInfo(
        id=values["id"],
        project=project,
        name=values["name"],
        model_name=values["model_name"],
        model_version=values["model_version"],
        model_version_id=values["model_version_id"],
        status=EndpointStatus(values["status"]),
        capture=CaptureConfig(
            enabled=bool(values["capture_enabled"]), percent=float(values["capture_percent"])
        ),
        created_at=values["created_at"],
        created_by=values["created_by"],
        updated_at=values["updated_at"],
        updated_by=values["updated_by"],
        variants=to_variants(variants),
        mode=EndpointMode(values.get("mode") or EndpointMode.SINGLE_MODEL.value),
        models=to_models(models),
        model_cache_mb=None if cache_mb is None else float(cache_mb),
    )
