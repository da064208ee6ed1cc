"""The same search SQL on SQLite and on the real PostgreSQL (ILIKE, JSON as text, paging)."""

from __future__ import annotations

import pandas as pd

from civicml.catalog import CatalogService, DescribeRequest
from civicml.data import DatasetService
from civicml.governance.projects import ProjectService
from civicml.store import Context


def test_search_on_each_backend(any_ctx: Context) -> None:
    ProjectService(any_ctx).create("benefits")
    data = DatasetService(any_ctx)
    frame = pd.DataFrame({"Applicant_ID": ["a", "b"], "age": [1, 2]})
    data.ingest("benefits", "applications", frame, progress=False)
    data.ingest("benefits", "payments", pd.DataFrame({"amount": [1.0]}), progress=False)
    svc = CatalogService(any_ctx)
    svc.describe(
        "benefits",
        "dataset",
        "payments",
        DescribeRequest(
            description="Paid 100% on time", tags=["finance"], classification="internal"
        ),
    )
    assert [h.name for h in svc.search("APPLIC").hits] == ["applications"]
    assert [h.name for h in svc.search(column="applicant_id").hits] == ["applications"]
    assert [h.name for h in svc.search("100%").hits] == ["payments"]
    assert svc.search("100_").total == 0
    assert [h.name for h in svc.search(tag="Finance").hits] == ["payments"]
    assert [h.name for h in svc.search(classification="internal").hits] == ["payments"]
    page = svc.search(kinds=["dataset"], limit=1, offset=1)
    assert page.total == 2 and [h.name for h in page.hits] == ["payments"]
