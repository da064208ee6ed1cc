"""Catalog: search datasets, models and reports across the caller's projects; describe a
dataset or model; its lineage in one call.

Searching needs no permission of its own: each kind is searched in the projects where the caller
may read it (``datasets.read``, ``models.read``, ``monitoring.read``, ``evaluations.read``), so
a project it may not read never appears. Describing takes ``datasets.write`` or ``models.write``,
the lineage ``lineage.read``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from civicml.catalog.schemas import MAX_PAGE, MAX_QUERY, CatalogEntry, DescribeRequest, SearchPage
from civicml.catalog.service import CatalogService
from civicml.core.types import INT64_MAX
from civicml.governance.schemas import LineageGraph
from civicml.server.deps import Services, services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["catalog"])
Svc = Annotated[Services, Depends(services)]
Kind = Annotated[
    Literal["datasets", "models"], Path(description="What is documented: datasets or models.")
]
Name = Annotated[str, Path(min_length=1, max_length=128, description="Its name.")]
Text = Annotated[str | None, Query(max_length=256, description="Exact-filter value.")]
HitKinds = Literal["dataset", "model", "model_version", "report"]


def _singular(kind: str) -> str:
    return kind.removesuffix("s")


@router.get("/catalog/search", response_model=SearchPage)
def search(
    svc: Svc,
    q: Annotated[
        str | None,
        Query(max_length=MAX_QUERY, description="Part of a name, description or report title."),
    ] = None,
    kind: Annotated[
        list[HitKinds] | None, Query(max_length=4, description="Kinds to search (repeatable).")
    ] = None,
    column: Annotated[
        str | None, Query(max_length=256, description="Datasets with a column of this name.")
    ] = None,
    tag: Annotated[str | None, Query(max_length=64, description="With this catalog tag.")] = None,
    owner: Annotated[str | None, Query(max_length=128, description="Created by this user.")] = None,
    classification: Annotated[
        Literal["public", "internal", "confidential", "personal"] | None,
        Query(description="With this classification."),
    ] = None,
    project: Annotated[str | None, Query(max_length=128, description="Only this project.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Hits per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Hits to skip.")] = 0,
) -> SearchPage:
    """One page of what the caller may read and matches (no permission of its own)."""
    return CatalogService(svc.ctx).search(
        q,
        kinds=list(kind) if kind else None,
        column=column,
        tag=tag,
        owner=owner,
        classification=classification,
        project=project,
        limit=limit,
        offset=offset,
    )


@router.get("/projects/{project}/catalog/{kind}/{name}", response_model=CatalogEntry)
def get_entry(project: str, kind: Kind, name: Name, svc: Svc) -> CatalogEntry:
    """A dataset's or model's catalog entry (`datasets.read` / `models.read`)."""
    return CatalogService(svc.ctx).get(project, _singular(kind), name)


@router.put("/projects/{project}/catalog/{kind}/{name}", response_model=CatalogEntry)
def describe(project: str, kind: Kind, name: Name, body: DescribeRequest, svc: Svc) -> CatalogEntry:
    """Write a dataset's or model's description, classification, tags or column notes
    (`datasets.write` / `models.write`)."""
    return CatalogService(svc.ctx).describe(project, _singular(kind), name, body)


@router.get("/projects/{project}/catalog/{kind}/{name}/lineage", response_model=LineageGraph)
def lineage(
    project: str,
    kind: Kind,
    name: Name,
    svc: Svc,
    version: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="Version; default the latest.")
    ] = None,
    direction: Annotated[
        Literal["upstream", "downstream", "both"], Query(description="Which way to walk.")
    ] = "both",
    max_depth: Annotated[int, Query(ge=1, le=50, description="Hops to follow.")] = 10,
) -> LineageGraph:
    """The lineage of a dataset or model version (`lineage.read`)."""
    return CatalogService(svc.ctx).lineage(
        project, _singular(kind), name, version, direction=direction, max_depth=max_depth
    )
