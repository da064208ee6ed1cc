"""Tests of ``civicml.evaluation.service``: bias and explanation reports stored, in lineage and
audited, with figures equal to the engines' own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from civicml.core import FrozenClock, InvalidInputError, NotFoundError
from civicml.data import DatasetService, DatasetVersion
from civicml.evaluation import (
    BiasReport,
    ExplanationReport,
    explain_global,
    posttraining_bias,
    pretraining_bias,
)
from civicml.evaluation.records import BiasSummary, ExplanationSummary
from civicml.evaluation.schemas import POSTTRAINING_CODES, PRETRAINING_CODES
from civicml.evaluation.service import EvaluationService
from civicml.governance import AuditTrail, LineageService
from civicml.registry import ModelVersion
from civicml.store import Context
from civicml.training import TabularModel
from tests.evaluation.helpers import DATASET, LABEL, MODEL, PROJECT, fit, frame, ingest, register


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return frame()


@pytest.fixture(scope="module")
def model(data: pd.DataFrame) -> TabularModel:
    return fit(data)


@pytest.fixture
def dv(ctx: Context, data: pd.DataFrame) -> DatasetVersion:
    return ingest(ctx, data)


@pytest.fixture
def mv(ctx: Context, dv: DatasetVersion, model: TabularModel, tmp_path: Path) -> ModelVersion:
    return register(ctx, model, tmp_path / "model")


@pytest.fixture
def svc(ctx: Context) -> EvaluationService:
    return EvaluationService(ctx)


def _stored(ctx: Context, dv: DatasetVersion) -> pd.DataFrame:
    """The dataset version as the service reads it (Parquet round trip)."""
    return DatasetService(ctx).to_pandas(dv)


def _values(report: BiasReport) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for f in report.facets:
        out.setdefault(f.facet, {})[f.facet_value] = {m.code: m.value for m in f.metrics}
    return out


def _created_events(ctx: Context) -> list[Any]:
    return [e for e in AuditTrail(ctx).list(project=PROJECT) if e.action == "evaluation.created"]


def test_pre_training_bias_is_stored_in_lineage_and_audited(
    ctx: Context, svc: EvaluationService, dv: DatasetVersion
) -> None:
    ev = svc.bias(
        PROJECT,
        dataset=(DATASET, "latest"),
        label=LABEL,
        positive_label=1,
        facets="sex",
        group="region",
    )

    assert (ev.kind, ev.project, ev.model) == ("bias_pre_training", PROJECT, None)
    assert ev.title == "Bias: applications v1"
    assert ev.created_by == "alice" and ev.created_at == ctx.clock.now()
    assert (ev.dataset.dataset, ev.dataset.version, ev.dataset.id) == (DATASET, 1, dv.id)
    assert (ev.dataset.digest, ev.dataset.rows) == (dv.digest, 600)
    assert ev.inputs.model_dump() == {
        "label": LABEL,
        "positive_label": [1],
        "facets": [{"column": "sex", "threshold": None, "values": None}],
        "group": "region",
    }

    # The figures are the engine's on the stored rows, in the documented shape.
    expected = pretraining_bias(
        _stored(ctx, dv), label=LABEL, positive_label=1, facet="sex", group="region"
    )
    summary = ev.summary
    assert isinstance(summary, BiasSummary)
    assert summary.model_dump() == {
        "stage": "pre_training",
        "label": LABEL,
        "positive_label": ["1"],
        "facets": ["sex"],
        "values": _values(expected),
    }
    assert set(summary.values["sex"]) == {"female", "male"}
    assert list(summary.values["sex"]["female"]) == list(PRETRAINING_CODES)
    assert summary.values["sex"]["female"]["CDDL"] is not None
    # DPL from first principles: q_a - q_d.
    rows = _stored(ctx, dv)
    q = rows.groupby("sex")[LABEL].mean()
    assert summary.values["sex"]["female"]["DPL"] == pytest.approx(q["male"] - q["female"])

    # Files: content-addressed, named under the evaluation, verified on read.
    assert [f.path for f in ev.files] == ["report.html", "report.json"]
    assert {f.owner_kind for f in ev.files} == {"evaluation"}
    assert svc.read_result(ev.id) == expected
    with svc.open_file(ev.id, "report.html") as handle:
        html = handle.read().decode()
    assert html.startswith("<!doctype html>") and "Bias: applications v1" in html

    # Lineage: the dataset version contributed to the evaluation.
    graph = LineageService(ctx).query("evaluation", ev.id, direction="upstream")
    assert {(n.kind, n.ref) for n in graph.nodes} == {
        ("evaluation", ev.id),
        ("dataset_version", dv.id),
    }
    assert [e.kind for e in graph.edges] == ["ContributedTo"]

    # Audit: one event, and the chain still verifies.
    [event] = _created_events(ctx)
    assert (event.entity_kind, event.entity_id) == ("evaluation", ev.id)
    after = event.after or {}
    assert after["kind"] == "bias_pre_training" and after["dataset"] == "applications v1"
    assert after["model"] is None and after["facets"] == ["sex"]
    assert after["files"] == {f.path: f.digest for f in ev.files}
    assert AuditTrail(ctx).verify().ok

    assert svc.get(ev.id) == ev
    assert svc.list(PROJECT) == [ev]


def test_post_training_bias_holds_both_stages_and_matches_the_engine(
    ctx: Context, svc: EvaluationService, dv: DatasetVersion, mv: ModelVersion, model: TabularModel
) -> None:
    ev = svc.bias(
        PROJECT,
        dataset=(DATASET, 1),
        label=LABEL,
        positive_label="1",  # text, as the CLI sends it: matched to the integer label
        facets=["sex", {"column": "age", "threshold": 60}],
        model=(MODEL, 1),
    )

    assert ev.kind == "bias_post_training"
    assert ev.title == "Bias: eligibility v1 on applications v1"
    assert ev.model is not None and (ev.model.name, ev.model.version, ev.model.id) == (
        MODEL,
        1,
        mv.id,
    )
    summary = ev.summary
    assert isinstance(summary, BiasSummary)
    assert summary.stage == "post_training" and summary.facets == ["sex", "age"]
    top = int(_stored(ctx, dv)["age"].max())
    assert set(summary.values) == {"sex", "age"}
    assert list(summary.values["age"]) == [f"(60, {top}]"]
    for by_value in summary.values.values():
        for codes in by_value.values():
            assert list(codes) == [*PRETRAINING_CODES, *POSTTRAINING_CODES]

    # Cross-check with the engines on the same rows: the model predicts from its signature
    # columns, the label column is the truth, FT compares the complete numeric inputs.
    rows = _stored(ctx, dv)
    scored = rows.assign(pred=model.predict(rows))
    complete = [
        c
        for c in model.feature_names
        if pd.api.types.is_numeric_dtype(rows[c].dtype) and rows[c].notna().all()
    ]
    assert complete == ["household_size", "age", "prior_claims"]
    for facet, threshold in (("sex", None), ("age", 60.0)):
        pre = pretraining_bias(
            rows, label=LABEL, positive_label=1, facet=facet, threshold=threshold
        )
        post = posttraining_bias(
            scored,
            label=LABEL,
            positive_label=1,
            facet=facet,
            threshold=threshold,
            predicted="pred",
            features=[c for c in complete if c != facet],
        )
        for value, codes in _values(pre)[facet].items():
            assert summary.values[facet][value] == {**codes, **_values(post)[facet][value]}
    assert summary.values["sex"]["female"]["FT"] is not None
    # DPPL from first principles: q'_a - q'_d.
    share = scored.groupby("sex")["pred"].mean()
    assert summary.values["sex"]["female"]["DPPL"] == pytest.approx(share["male"] - share["female"])

    result = svc.read_result(ev.id)
    assert isinstance(result, BiasReport)
    assert (result.prediction_source, result.predicted) == ("model", "eligibility v1")
    assert any("FT's nearest-neighbour search" in n for n in result.notes)

    # Lineage: the dataset version and the model version contributed.
    graph = LineageService(ctx).query("evaluation", ev.id, direction="upstream", max_depth=1)
    assert {(n.kind, n.ref) for n in graph.nodes} == {
        ("evaluation", ev.id),
        ("dataset_version", dv.id),
        ("model_version", mv.id),
    }
    assert {e.kind for e in graph.edges} == {"ContributedTo"} and len(graph.edges) == 2
    [event] = _created_events(ctx)
    assert (event.after or {})["model"] == "eligibility v1"

    assert svc.latest(PROJECT, MODEL, 1, "bias_post_training") == ev
    assert svc.latest(PROJECT, MODEL, 1) == ev
    assert svc.latest(PROJECT, MODEL, 1, "explanation") is None


def test_chosen_facet_values(ctx: Context, svc: EvaluationService, dv: DatasetVersion) -> None:
    ev = svc.bias(
        PROJECT,
        dataset=(DATASET, 1),
        label=LABEL,
        positive_label=[1],
        facets=[{"column": "region", "values": ["north", ["east", "WEST"]]}],
        title="  Regions  ",
    )
    assert ev.title == "Regions"
    summary = ev.summary
    assert isinstance(summary, BiasSummary)
    assert list(summary.values["region"]) == ["north", "east,west"]
    # Values are recorded as the column holds them.
    assert ev.inputs.model_dump()["facets"][0]["values"] == ["north", ["east", "west"]]
    expected = pretraining_bias(
        _stored(ctx, dv),
        label=LABEL,
        positive_label=1,
        facet="region",
        facet_values=["north", ("east", "west")],
    )
    assert summary.values == _values(expected)


def test_explanation_is_stored_and_matches_the_engine(
    ctx: Context, svc: EvaluationService, dv: DatasetVersion, mv: ModelVersion, model: TabularModel
) -> None:
    ev = svc.explain(PROJECT, model=(MODEL, 1), dataset=(DATASET, 1), rows=250, seed=3, top_k=2)

    assert (ev.kind, ev.title) == ("explanation", "Explanation: eligibility v1 on applications v1")
    assert ev.inputs.model_dump() == {"rows": 250, "seed": 3, "top_k": 2}
    summary = ev.summary
    assert isinstance(summary, ExplanationSummary)
    expected = explain_global(model, _stored(ctx, dv), max_rows=250, seed=3)
    assert summary.model_dump() == {
        "output": "1",
        "output_space": "margin",
        "explainer": "tree",
        "top_features": [
            {"column": c.column, "importance": c.importance} for c in expected.importance
        ],
        "n_rows": 250,
        "pd_columns": [c.column for c in expected.importance[:2]],
    }
    importances = [f.importance for f in summary.top_features]
    assert importances == sorted(importances, reverse=True)
    assert {f.column for f in summary.top_features} == set(model.feature_names)

    result = svc.read_result(ev.id)
    assert isinstance(result, ExplanationReport)
    assert result.global_explanation == expected
    assert len(result.local) == 3
    with svc.open_file(ev.id, "report.html") as handle:
        assert "Explanation: eligibility v1 on applications v1" in handle.read().decode()

    graph = LineageService(ctx).query("model_version", mv.id, direction="downstream")
    assert ("evaluation", ev.id) in {(n.kind, n.ref) for n in graph.nodes}
    [event] = _created_events(ctx)
    after = event.after or {}
    assert after["kind"] == "explanation"
    assert after["top_features"] == [f.column for f in summary.top_features[:5]]
    assert svc.latest(PROJECT, MODEL, "1", "explanation") == ev


def test_list_filters_and_orders(
    ctx: Context,
    clock: FrozenClock,
    svc: EvaluationService,
    dv: DatasetVersion,
    mv: ModelVersion,
    model: TabularModel,
    tmp_path: Path,
) -> None:
    pre = svc.bias(PROJECT, dataset=(DATASET, 1), label=LABEL, positive_label=1, facets="sex")
    clock.advance(minutes=1)
    post = svc.bias(
        PROJECT,
        dataset=(DATASET, 1),
        label=LABEL,
        positive_label=1,
        facets="sex",
        model=(MODEL, 1),
    )
    clock.advance(minutes=1)
    second = register(ctx, model, tmp_path / "second")
    why = svc.explain(PROJECT, model=(MODEL, second.version), dataset=(DATASET, 1), rows=50)

    assert [e.id for e in svc.list(PROJECT)] == [why.id, post.id, pre.id]
    assert [e.id for e in svc.list(PROJECT, kind="bias_pre_training")] == [pre.id]
    assert [e.id for e in svc.list(PROJECT, model=MODEL)] == [why.id, post.id]
    assert [e.id for e in svc.list(PROJECT, model=MODEL, version=1)] == [post.id]
    assert [e.id for e in svc.list(PROJECT, model=MODEL, version="2")] == [why.id]
    assert svc.latest(PROJECT, MODEL, 1, "explanation") is None
    with pytest.raises(InvalidInputError, match=re.escape("Evaluation kind 'bias' is not known.")):
        svc.list(PROJECT, kind="bias")
    with pytest.raises(InvalidInputError, match="Version 1 was given without a model"):
        svc.list(PROJECT, version=1)
    with pytest.raises(NotFoundError, match="has no version 9"):
        svc.list(PROJECT, model=MODEL, version=9)
    with pytest.raises(NotFoundError, match=re.escape("Evaluation 'nope' does not exist.")):
        svc.get("nope")
    with pytest.raises(InvalidInputError, match=re.escape("Evaluations have no file 'x.csv'.")):
        svc.open_file(pre.id, "x.csv")


_BIAS: dict[str, Any] = {
    "dataset": (DATASET, 1),
    "label": LABEL,
    "positive_label": 1,
    "facets": "sex",
}


@pytest.mark.parametrize(
    ("changes", "error", "message", "hint"),
    [
        (
            {"label": "eligibl"},
            InvalidInputError,
            "Column 'eligibl' (label) is not in dataset applications v1.",
            "Did you mean 'eligible'?",
        ),
        (
            {"positive_label": "yes"},
            InvalidInputError,
            "Positive label 'yes' is not a value of label column 'eligible' in dataset "
            "applications v1.",
            "Values present: 0, 1.",
        ),
        (
            {"positive_label": [1, 2]},
            InvalidInputError,
            "Positive label 2 is not a value of label column 'eligible'",
            "Values present: 0, 1.",
        ),
        (
            {"facets": ["sex", "gender"]},
            InvalidInputError,
            "Column 'gender' (facet) is not in dataset applications v1.",
            "Its columns:",
        ),
        (
            {"facets": {"column": "sex", "values": ["femal"]}},
            InvalidInputError,
            "Facet value 'femal' is not in column 'sex' of dataset applications v1.",
            "Did you mean 'female'",
        ),
        (
            {"facets": {"column": "age", "threshold": 40, "values": [30]}},
            InvalidInputError,
            "has both a threshold and values",
            "{'column': 'age', 'threshold': 40}",
        ),
        (
            {"facets": {"column": "age", "threshold": 400}},
            InvalidInputError,
            "No rows of facet 'age' are above the threshold 400",
            "Choose a threshold inside that range.",
        ),
        ({"facets": ["sex", "sex"]}, InvalidInputError, "Facet 'sex' is named twice.", None),
        ({"facets": []}, InvalidInputError, "names no facet", None),
        ({"facets": "eligible"}, InvalidInputError, "is both the label and a facet", None),
        ({"group": "sex"}, InvalidInputError, "Group column 'sex' is also", None),
        (
            {"dataset": ("applications",)},
            InvalidInputError,
            "The dataset version ('applications',) is not (dataset name, version).",
            "('applications', 'latest')",
        ),
        (
            {"dataset": (DATASET, 4)},
            NotFoundError,
            "Dataset 'applications' of project 'benefits' has no version 4.",
            None,
        ),
        (
            {"model": ("eligibilty", 1)},
            NotFoundError,
            "Model 'eligibilty' does not exist",
            "Did you mean 'eligibility'?",
        ),
        (
            {"model": (MODEL, "production")},
            NotFoundError,
            "has no alias 'production'",
            None,
        ),
        (
            {"label": "sex", "positive_label": "female", "facets": "region", "model": (MODEL, 1)},
            InvalidInputError,
            "Model eligibility v1 predicts 0, 1; none is the positive label 'female'.",
            "the model was trained to predict 'eligible'",
        ),
        ({"title": " "}, InvalidInputError, "Evaluation title ' ' is not valid.", None),
    ],
)
def test_bad_bias_requests_store_nothing(
    ctx: Context,
    svc: EvaluationService,
    mv: ModelVersion,
    changes: dict[str, Any],
    error: type[Exception],
    message: str,
    hint: str | None,
) -> None:
    with pytest.raises(error, match=re.escape(message)) as info:
        svc.bias(PROJECT, **{**_BIAS, **changes})
    if hint is not None:
        assert hint in (getattr(info.value, "hint", None) or "")
    assert svc.list(PROJECT) == [] and _created_events(ctx) == []


def test_models_that_cannot_be_evaluated(
    ctx: Context, svc: EvaluationService, data: pd.DataFrame, mv: ModelVersion, tmp_path: Path
) -> None:
    regression = register(ctx, fit(data, target="age", algorithm="linear"), tmp_path / "r", "age")
    with pytest.raises(InvalidInputError, match="Model age v1 is a regression model"):
        svc.bias(PROJECT, **{**_BIAS, "model": ("age", 1)})

    ingest(ctx, data.drop(columns=["income", "prior_claims"]), "partial")
    message = (
        "Column 'income' that model eligibility v1 needs is not in dataset partial v1 "
        "(2 of its input columns are missing)."
    )
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        svc.bias(PROJECT, **{**_BIAS, "dataset": ("partial", 1), "model": (MODEL, 1)})
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        svc.explain(PROJECT, model=(MODEL, 1), dataset=("partial", 1))
    assert regression.version == 1 and svc.list(PROJECT) == [] and _created_events(ctx) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": 0}, "rows = 0 is out of range."),
        ({"rows": 100_001}, "rows = 100001 is out of range."),
        ({"top_k": 0}, "top_k = 0 is out of range."),
        ({"seed": -1}, "seed = -1 is out of range."),
        ({"model": "eligibility"}, "The model version 'eligibility' is not (model name, version)."),
    ],
)
def test_bad_explanation_requests(
    ctx: Context, svc: EvaluationService, mv: ModelVersion, changes: dict[str, Any], message: str
) -> None:
    options: dict[str, Any] = {"model": (MODEL, 1), "dataset": (DATASET, 1), **changes}
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        svc.explain(PROJECT, **options)
    assert svc.list(PROJECT) == []


def test_text_values_match_the_column(ctx: Context, svc: EvaluationService) -> None:
    """Booleans and floats given as text (a CLI or a query string) find the column's values."""
    rng = np.random.default_rng(5)
    flags = pd.DataFrame(
        {
            "approved": rng.random(200) < 0.4,
            "band": rng.choice([1.0, 2.0, 3.0], 200),
        }
    )
    ingest(ctx, flags, "flags")
    ev = svc.bias(
        PROJECT,
        dataset=("flags", 1),
        label="approved",
        positive_label="true",
        facets={"column": "band", "values": ["2"]},
    )
    assert ev.inputs.model_dump()["positive_label"] == [True]
    summary = ev.summary
    assert isinstance(summary, BiasSummary)
    assert list(summary.values["band"]) == ["2.0"]
