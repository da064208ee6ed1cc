"""cm.train.tabular end to end: dataset version → run (params, metrics, files, lineage) →
registry, embedded and through the real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import civicml as cm
from civicml.core import InvalidInputError


def _applications(rows: int = 600, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(30_000, 9_000, rows).round(2)
    household = rng.integers(1, 7, rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    eligible = (income / household < 9_000) ^ (rng.random(rows) < 0.05)
    return pd.DataFrame(
        {
            "income": income,
            "household_size": household,
            "region": region,
            "eligible": eligible.astype(int),
        }
    )


@pytest.fixture(params=["embedded", "remote"])
def ml(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "embedded":
        client = cm.connect(home=tmp_path / "emb")
    else:
        client = cm.connect(request.getfixturevalue("live_server"))
    yield client
    client.close()


def test_train_record_and_register(ml) -> None:  # type: ignore[no-untyped-def]
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", _applications())
    with proj.start_run(experiment="baseline") as run:
        trained = cm.train.tabular(raw, target="eligible", algorithm="logistic", run=run)
    info = run.info
    assert info.params["algorithm"] == "logistic"
    assert info.params["dataset"] == "applications@v1"
    assert info.metrics["val_accuracy"] == pytest.approx(trained.model.metrics["accuracy"])
    assert info.metrics["val_accuracy"] > 0.8
    files = {a.path for a in run.list_artifacts()}
    assert {
        "model/model.skops",
        "model/civicml-model.json",
        "evaluation/confusion_matrix.json",
    } <= files
    mv = proj.models.register("eligibility", trained, run=run)
    assert mv.run_id == run.id
    assert [c.name for c in mv.signature or []] == ["income", "household_size", "region"]
    assert mv.metrics["val_accuracy"] == pytest.approx(info.metrics["val_accuracy"])
    upstream = ml.lineage("model_version", mv.id, direction="upstream")
    kinds = {n.kind for n in upstream.nodes}
    assert {"dataset_version", "run", "model_version"} <= kinds
    assert ml.verify_audit().ok


def test_train_refuses_what_is_not_a_dataset_version(tmp_path: Path) -> None:
    with cm.connect(home=tmp_path / "h") as ml, ml.project("p").start_run() as run:
        with pytest.raises(InvalidInputError, match="needs a dataset version"):
            cm.train.tabular(_applications(), target="eligible", run=run)  # type: ignore[arg-type]


def _reviewer(ml):  # type: ignore[no-untyped-def]
    """The same store or server, acting as another user (who may approve)."""
    backend = ml.backend
    if backend.remote:
        return cm.connect(backend.location, user="reviewer")
    return cm.connect(home=backend.ctx.settings.home, user="reviewer")


def test_the_lifecycle_through_the_sdk(ml) -> None:  # type: ignore[no-untyped-def]
    from civicml.data.samples import benefit_applications

    proj = ml.project("lifecycle")
    raw = proj.datasets.ingest("applications", benefit_applications(800, seed=1))
    with proj.start_run() as run:
        trained = cm.train.tabular(raw, target="eligible", algorithm="logistic", run=run)
    mv = proj.models.register("eligibility", trained, run=run)
    with pytest.raises(cm.CivicMLError, match="only Approved versions can be deployed"):
        proj.endpoints.deploy("eligibility", mv)
    with pytest.raises(cm.CivicMLError, match="separation of duties"):
        proj.models.approve(mv, note="ok")
    with _reviewer(ml) as reviewer:
        mv = reviewer.project("lifecycle").models.approve(mv, note="ok")
    endpoint = proj.endpoints.deploy("eligibility", mv)
    later = benefit_applications(40, seed=1, drifted=True).drop(columns=["eligible"])
    records = later.astype(object).where(later.notna(), None).to_dict("records")
    result = endpoint.predict(records)
    assert len(result.predictions) == 40
    captured = endpoint.capture_to_dataset("requests")
    assert captured.row_count == 40
    report = proj.monitoring.drift(captured, baseline=raw, columns=list(later.columns))
    assert report.summary.n_columns == len(later.columns)
    assert ml.verify_audit().ok
