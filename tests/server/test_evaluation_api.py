"""The evaluation routes through the real server on loopback, and the remote SDK handle."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from civicml.core import InvalidInputError, NotFoundError
from civicml.evaluation import BiasReport, ExplanationReport
from civicml.evaluation.records import BiasSummary, Evaluation, ExplanationSummary
from civicml.sdk.client import connect
from civicml.server.routers.monitoring import html_policy
from tests.evaluation.helpers import DATASET, LABEL, MODEL, publish
from tests.server.helpers import API, Server, assert_error, audit_count


@pytest.fixture(scope="module")
def project(server: Server) -> str:
    """A project with applications v1 and eligibility v1 (registered, not approved)."""
    name = f"fair-{uuid.uuid4().hex[:8]}"
    with connect(server.url, user="data-scientist") as ml:
        publish(ml, name)
    return name


@pytest.fixture
def base(project: str) -> str:
    return f"{API}/projects/{project}/evaluations"


def _bias(**extra: Any) -> dict[str, Any]:
    return {
        "dataset": {"dataset": DATASET, "version": 1},
        "label": LABEL,
        "positive_label": 1,
        "facets": ["sex", {"column": "age", "threshold": 60}],
        **extra,
    }


def _explanation(**extra: Any) -> dict[str, Any]:
    return {
        "model": {"name": MODEL, "version": 1},
        "dataset": {"dataset": DATASET},
        "rows": 200,
        "top_k": 2,
        **extra,
    }


def test_bias_create_show_list_and_files(api: httpx.Client, base: str) -> None:
    created = api.post(f"{base}/bias", json=_bias(model={"name": MODEL, "version": 1}))
    assert created.status_code == 201, created.text
    ev = Evaluation.model_validate(created.json())
    assert created.headers["location"] == f"{API}/evaluations/{ev.id}"
    assert ev.kind == "bias_post_training"
    assert ev.model is not None and (ev.model.name, ev.model.version) == (MODEL, 1)
    summary = created.json()["summary"]
    assert set(summary) == {"stage", "label", "positive_label", "facets", "values"}
    assert summary["facets"] == ["sex", "age"] and summary["positive_label"] == ["1"]
    assert set(summary["values"]["sex"]) == {"female", "male"}
    assert {"DPL", "DPPL", "DI", "FT"} <= set(summary["values"]["sex"]["female"])
    assert api.get(created.headers["location"]).json() == created.json()

    listed = api.get(base, params={"kind": "bias_post_training", "model": MODEL, "version": "1"})
    assert ev.id in [e["id"] for e in listed.json()]
    assert ev.id not in [e["id"] for e in api.get(base, params={"kind": "explanation"}).json()]

    digests = {f.path: f.digest for f in ev.files}
    as_json = api.get(f"{API}/evaluations/{ev.id}/json")
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert hashlib.sha256(as_json.content).hexdigest() == digests["report.json"]
    report = BiasReport.model_validate_json(as_json.content)
    assert report.stage == "post_training" and report.prediction_source == "model"
    assert isinstance(ev.summary, BiasSummary)
    assert (
        ev.summary.values["sex"]["female"]["DI"]
        == report.result("sex", "female").metric("DI").value
    )

    page = api.get(f"{API}/evaluations/{ev.id}/html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert hashlib.sha256(page.content).hexdigest() == digests["report.html"]
    assert "<script" not in page.text
    assert page.headers.get_list("content-security-policy") == [html_policy(page.text)]
    assert "unsafe-inline" not in page.headers["content-security-policy"]

    events = api.get(f"{API}/audit/events", params={"limit": 10_000}).json()
    assert [e["action"] for e in events if e["entity_id"] == ev.id] == ["evaluation.created"]
    assert api.get(f"{API}/audit/verify").json()["ok"] is True
    lineage = api.get(f"{API}/lineage/evaluation/{ev.id}", params={"direction": "upstream"})
    assert {n["kind"] for n in lineage.json()["nodes"]} >= {
        "evaluation",
        "dataset_version",
        "model_version",
    }


def test_explanation_create_and_files(api: httpx.Client, base: str) -> None:
    created = api.post(f"{base}/explanation", json=_explanation(title="Why"))
    assert created.status_code == 201, created.text
    ev = Evaluation.model_validate(created.json())
    assert (ev.kind, ev.title) == ("explanation", "Why")
    assert isinstance(ev.summary, ExplanationSummary)
    assert ev.summary.n_rows == 200 and len(ev.summary.pd_columns) == 2
    summary = created.json()["summary"]
    assert set(summary["top_features"][0]) == {"column", "importance"}
    result = ExplanationReport.model_validate_json(
        api.get(f"{API}/evaluations/{ev.id}/json").content
    )
    assert [c.column for c in result.global_explanation.importance] == [
        f.column for f in ev.summary.top_features
    ]
    page = api.get(f"{API}/evaluations/{ev.id}/html")
    assert page.status_code == 200 and "Why" in page.text
    assert page.headers.get_list("content-security-policy") == [html_policy(page.text)]


@pytest.mark.parametrize(
    ("route", "body", "status", "error", "message"),
    [
        ("bias", _bias(label="eligibl"), 422, "InvalidInputError", "Column 'eligibl' (label)"),
        (
            "bias",
            _bias(positive_label="yes"),
            422,
            "InvalidInputError",
            "Positive label 'yes' is not a value of label column 'eligible'",
        ),
        ("bias", _bias(facets=["gender"]), 422, "InvalidInputError", "Column 'gender' (facet)"),
        (
            "bias",
            _bias(facets=[{"column": "sex", "values": ["x"]}]),
            422,
            "InvalidInputError",
            "Facet value 'x' is not in column 'sex'",
        ),
        (
            "bias",
            _bias(facets=[{"column": "age", "threshold": 1, "values": [2]}]),
            422,
            "InvalidInputError",
            None,
        ),
        ("bias", _bias(facets=[{"colum": "sex"}]), 422, "InvalidInputError", None),
        (
            "bias",
            _bias(dataset={"dataset": DATASET, "version": 7}),
            404,
            "NotFoundError",
            "has no version 7",
        ),
        (
            "bias",
            _bias(model={"name": "nope", "version": 1}),
            404,
            "NotFoundError",
            "Model 'nope' does not exist",
        ),
        ("bias", _bias(model={"name": MODEL}), 422, "InvalidInputError", None),
        ("bias", {**_bias(), "colour": "red"}, 422, "InvalidInputError", None),
        ("bias", _bias(title="x" * 300), 422, "InvalidInputError", None),
        ("explanation", _explanation(rows=0), 422, "InvalidInputError", None),
        ("explanation", _explanation(top_k=51), 422, "InvalidInputError", None),
        (
            "explanation",
            _explanation(model={"name": MODEL, "version": "prod"}),
            404,
            "NotFoundError",
            "has no alias 'prod'",
        ),
        (
            "explanation",
            _explanation(dataset={"dataset": "applicatons"}),
            404,
            "NotFoundError",
            "Dataset 'applicatons' does not exist",
        ),
    ],
)
def test_bad_requests_are_4xx_and_store_nothing(
    api: httpx.Client,
    base: str,
    route: str,
    body: dict[str, Any],
    status: int,
    error: str,
    message: str | None,
) -> None:
    before = (len(api.get(base).json()), audit_count(api))
    assert_error(api.post(f"{base}/{route}", json=body), status, error, message)
    assert (len(api.get(base).json()), audit_count(api)) == before


def test_not_found_and_bad_queries(api: httpx.Client, base: str) -> None:
    for path in ("nope", "nope/html", "nope/json"):
        assert_error(api.get(f"{API}/evaluations/{path}"), 404, "NotFoundError", "'nope'")
    assert_error(
        api.get(f"{API}/projects/nope/evaluations"), 404, "NotFoundError", "Project 'nope'"
    )
    assert_error(api.get(base, params={"kind": "fairness"}), 422, "InvalidInputError", "'fairness'")
    assert_error(
        api.get(base, params={"version": "1"}), 422, "InvalidInputError", "without a model"
    )
    assert_error(
        api.post(f"{API}/projects/nope/evaluations/bias", json=_bias()),
        404,
        "NotFoundError",
        "Project 'nope' does not exist",
    )


@pytest.fixture
def remote(server: Server) -> Iterator[Any]:
    with connect(server.url, user="reviewer") as ml:
        yield ml


def test_remote_sdk_handle(remote: Any, project: str) -> None:
    proj = remote.project(project)
    dv = proj.datasets.version(DATASET, 1)
    mv = proj.models.version(MODEL, 1)
    evals = proj.evaluations
    ev = evals.bias(dv, label=LABEL, positive_label=1, facets="sex", model=mv, title="remote")
    assert (ev.kind, ev.title, ev.created_by) == ("bias_post_training", "remote", "reviewer")
    assert evals.get(ev.id) == ev and evals.get(ev) == ev
    result = evals.result(ev)
    assert isinstance(result, BiasReport) and result.stage == "post_training"
    assert evals.html(ev).startswith("<!doctype html>")
    why = evals.explain((MODEL, 1), (DATASET, "latest"), rows=100, top_k=1)
    assert isinstance(evals.result(why), ExplanationReport)
    assert evals.latest(mv, kind="explanation") == why
    assert evals.latest(mv, kind="bias_post_training") == ev
    assert [e.id for e in evals.list(model=mv)][:2] == [why.id, ev.id]
    with pytest.raises(InvalidInputError, match="Column 'gender' \\(facet\\)"):
        evals.bias(dv, label=LABEL, positive_label=1, facets="gender")
    with pytest.raises(NotFoundError, match="has no version 9"):
        evals.explain((MODEL, 9), dv)
    with pytest.raises(InvalidInputError, match="neither a DatasetVersion"):
        evals.bias("applications", label=LABEL, positive_label=1, facets="sex")  # type: ignore[arg-type]
