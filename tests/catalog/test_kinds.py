"""The catalog finds models, model versions and reports too, and documents models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from civicml.catalog import CatalogService, DescribeRequest
from civicml.core import InvalidInputError
from civicml.core.identity import Principal
from civicml.data import DatasetService
from civicml.governance.projects import ProjectService
from civicml.monitoring.service import MonitoringService
from civicml.store import Context
from tests.serving.helpers import register


@pytest.fixture
def world(ctx: Context, model_dir: Path) -> Context:
    ProjectService(ctx).create("benefits")
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"income": rng.normal(1500, 300, 200), "age": rng.integers(18, 90, 200)})
    datasets = DatasetService(ctx)
    datasets.ingest("benefits", "intake", data, progress=False)
    datasets.ingest("benefits", "intake", data.assign(income=data.income * 2), progress=False)
    MonitoringService(ctx).drift(
        "benefits", current=("intake", 2), baseline=("intake", 1), title="Intake drift"
    )
    register(ctx, model_dir)  # model "eligibility" v1
    return ctx


def test_models_versions_and_reports_are_found(world: Context) -> None:
    svc = CatalogService(world)
    found = svc.search("eligib")
    assert [(h.kind.value, h.version) for h in found.hits] == [("model", 1), ("model_version", 1)]
    assert found.hits[1].lineage == "civicml catalog lineage model eligibility:1 -p benefits"
    [report] = svc.search("intake drift", kinds=["report"]).hits
    assert (report.kind.value, report.subkind) == ("report", "drift")
    assert svc.search(owner="ALICE", kinds=["model"]).total == 1
    assert svc.search(owner="nobody").total == 0


def test_a_model_is_described_and_its_lineage_reached(world: Context) -> None:
    svc = CatalogService(world)
    entry = svc.describe(
        "benefits",
        "model",
        "eligibility",
        DescribeRequest(description="Benefit eligibility", classification="internal", tags=["x"]),
    )
    assert entry.kind.value == "model" and entry.latest_version == 1
    assert [h.kind.value for h in svc.search(tag="x").hits] == ["model"]
    with pytest.raises(InvalidInputError, match="Column notes are for datasets"):
        svc.describe("benefits", "model", "eligibility", DescribeRequest(columns={"a": "b"}))
    graph = svc.lineage("benefits", "model", "eligibility")
    assert graph.root.kind == "model_version"
    with pytest.raises(InvalidInputError, match="cannot be described"):
        svc.get("benefits", "report", "x")


def test_reports_follow_their_own_read_permission(world: Context) -> None:
    ProjectService(world).grant("benefits", "ivy", "invoker")  # no read permission at all
    ivy = CatalogService(world.as_principal(Principal(user="ivy", roles=frozenset())))
    assert ivy.search().total == 0
    ProjectService(world).grant("benefits", "val", "viewer")
    val = CatalogService(world.as_principal(Principal(user="val", roles=frozenset())))
    assert {h.kind.value for h in val.search(limit=200).hits} == {
        "dataset",
        "model",
        "model_version",
        "report",
    }
