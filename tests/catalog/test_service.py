"""The catalog: search across readable projects only, filters, paging, fuzzy suggestions,
descriptions and column notes, lineage one call away."""

from __future__ import annotations

import pandas as pd
import pytest

from civicml.catalog import CatalogService, DescribeRequest
from civicml.core import InvalidInputError, PermissionDeniedError
from civicml.core.identity import Principal
from civicml.data import DatasetService
from civicml.governance.projects import ProjectService
from civicml.store import Context


def _frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: [1, 2, 3] for c in columns})


@pytest.fixture
def world(ctx: Context) -> Context:
    projects = ProjectService(ctx)
    for name in ("benefits", "housing", "secret"):
        projects.create(name)
    data = DatasetService(ctx)
    data.ingest(
        "benefits", "applications", _frame(["applicant_id", "age", "income"]), progress=False
    )
    data.ingest("benefits", "payments", _frame(["payment_id", "amount"]), progress=False)
    data.ingest("housing", "applications_2025", _frame(["applicant_id", "rooms"]), progress=False)
    data.ingest("secret", "informants", _frame(["applicant_id", "age"]), progress=False)
    data.ingest("benefits", "odd", _frame(["x"]), description="100% synthetic", progress=False)
    data.ingest("benefits", "applicationsA2025", _frame(["x"]), progress=False)
    projects.grant("benefits", "val", "viewer")
    projects.grant("housing", "val", "data-scientist")
    return ctx


def _val(ctx: Context) -> CatalogService:
    return CatalogService(ctx.as_principal(Principal(user="val", roles=frozenset())))


def _names(page: object) -> list[tuple[str, str]]:
    return [(h.project, h.name) for h in page.hits]  # type: ignore[attr-defined]


def test_search_covers_only_the_projects_the_caller_may_read(world: Context) -> None:
    admin = CatalogService(world).search("applica", kinds=["dataset"])
    assert ("secret", "informants") not in _names(admin)
    assert _names(admin) == [
        ("benefits", "applications"),
        ("housing", "applications_2025"),
        ("benefits", "applicationsA2025"),
    ]
    by_column = _val(world).search(column="applicant_id")
    assert _names(by_column) == [("benefits", "applications"), ("housing", "applications_2025")]
    everything = _val(world).search(limit=200)
    assert {h.project for h in everything.hits} == {"benefits", "housing"}
    assert _val(world).search(project="secret").total == 0
    assert CatalogService(world).search(column="applicant_id").total == 3


def test_wildcards_are_literal_and_paging_is_stable(world: Context) -> None:
    svc = CatalogService(world)
    assert svc.search("100%").total == 0  # a dataset's own description is its versions'
    assert _names(svc.search("s_2025")) == [("housing", "applications_2025")]  # "_" is "_"
    svc.describe("benefits", "dataset", "odd", DescribeRequest(description="100% synthetic"))
    assert _names(svc.search("100%")) == [("benefits", "odd")]
    assert svc.search("100%x").total == 0
    first = svc.search(kinds=["dataset"], limit=2)
    second = svc.search(kinds=["dataset"], limit=2, offset=2)
    assert first.total == second.total == 6
    assert not set(_names(first)) & set(_names(second))


def test_nothing_found_suggests_close_names(world: Context) -> None:
    page = CatalogService(world).search("aplications")
    assert page.total == 0 and "applications" in page.suggestions


def test_describe_classification_tags_and_column_notes(world: Context) -> None:
    svc = CatalogService(world)
    entry = svc.describe(
        "benefits",
        "dataset",
        "applications",
        DescribeRequest(
            description="Applications for housing benefit",
            classification="personal",
            tags=["Benefits", "pii"],
            columns={"age": "Age in years"},
        ),
    )
    assert entry.classification is not None and entry.classification.value == "personal"
    assert entry.tags == ["benefits", "pii"]
    assert {c.name: c.note for c in entry.columns}["age"] == "Age in years"
    assert _names(svc.search(tag="pii")) == [("benefits", "applications")]
    assert _names(svc.search(classification="personal")) == [("benefits", "applications")]
    assert _names(svc.search("housing benefit")) == [("benefits", "applications")]
    [hit] = svc.search(tag="pii").hits
    assert hit.description == "Applications for housing benefit" and hit.version == 1
    assert hit.lineage == "civicml catalog lineage dataset applications -p benefits"
    again = svc.describe(
        "benefits", "dataset", "applications", DescribeRequest(columns={"age": ""})
    )
    assert {c.name: c.note for c in again.columns}["age"] == ""
    assert again.tags == ["benefits", "pii"]  # left as it was


def test_describe_refuses_unknown_columns_and_needs_write(world: Context) -> None:
    with pytest.raises(InvalidInputError, match="no column 'agee'"):
        CatalogService(world).describe(
            "benefits", "dataset", "applications", DescribeRequest(columns={"agee": "x"})
        )
    with pytest.raises(PermissionDeniedError, match=r"datasets\.write"):
        _val(world).describe(
            "benefits", "dataset", "applications", DescribeRequest(description="mine")
        )
    entry = _val(world).describe(
        "housing", "dataset", "applications_2025", DescribeRequest(description="ok")
    )
    assert entry.description == "ok"


def test_bad_filters_are_refused(world: Context) -> None:
    svc = CatalogService(world)
    with pytest.raises(InvalidInputError, match="characters long"):
        svc.search("x" * 201)
    with pytest.raises(InvalidInputError, match="not searchable"):
        svc.search(kinds=["runs"])
    with pytest.raises(InvalidInputError, match="not known"):
        svc.search(classification="secret")
    with pytest.raises(InvalidInputError, match="limit"):
        svc.search(limit=1000)


def test_lineage_of_a_dataset_version(world: Context) -> None:
    graph = CatalogService(world).lineage("benefits", "dataset", "applications")
    assert graph.root.kind == "dataset_version" and graph.root.name == "applications v1"
