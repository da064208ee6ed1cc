"""SHAP explanations agree with the shap library's, are additive, and speak in raw columns."""

from __future__ import annotations

import itertools
import re
import warnings
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap
from sklearn.inspection import partial_dependence as sk_partial_dependence

from civicml.core.errors import InvalidInputError
from civicml.data.samples import benefit_applications
from civicml.evaluation import (
    ExplanationReport,
    GlobalExplanation,
    LocalExplanation,
    ModelExplainer,
    explain,
    explain_global,
    explain_local,
    explain_schemas,
    partial_dependence,
    render_explanation_html,
)
from civicml.training import TabularModel, fit_tabular

FAST = {
    "logistic": {},
    "linear": {},
    "random_forest": {"n_estimators": 25, "max_depth": 6},
    "lightgbm": {"n_estimators": 40},
}
# Same explainer, same matrix: the only differences are float summation order.
RTOL, ATOL = 1e-6, 1e-9


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return benefit_applications(400, seed=3)


@pytest.fixture(scope="module")
def models(data: pd.DataFrame) -> dict[str, TabularModel]:
    return {
        name: fit_tabular(data, "eligible", algorithm=name, params=FAST[name], seed=1)
        for name in ("logistic", "random_forest", "lightgbm")
    }


def _direct_shap(model: TabularModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Call shap ourselves on the transformed matrix; sum to raw columns by output names."""
    preprocess, estimator = model.pipeline[:-1], model.pipeline[-1]
    x = preprocess.transform(model.validate(frame[model.feature_names]))
    if model.algorithm in ("logistic", "linear"):
        explainer = shap.LinearExplainer(estimator, x)
    else:
        explainer = shap.TreeExplainer(estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        values = np.asarray(explainer.shap_values(x))
    base = np.atleast_1d(explainer.expected_value)
    if values.ndim == 3:  # random forest, binary: the positive class
        values, base = values[:, :, 1], base[1:]
    # "category__region_north" -> "region": prefix off, then the longest raw name it starts with.
    names = [n.split("__", 1)[1] for n in preprocess[0].get_feature_names_out()]
    raw = np.zeros((len(x), len(model.feature_names)))
    for t, name in enumerate(names):
        source = max(
            (c for c in model.feature_names if name == c or name.startswith(c + "_")), key=len
        )
        raw[:, model.feature_names.index(source)] += values[:, t]
    return raw, base


def _margin(model: TabularModel, frame: pd.DataFrame) -> np.ndarray:
    """The model output in the explainer's space, positive class / value."""
    x = model.pipeline[:-1].transform(model.validate(frame[model.feature_names]))
    estimator = model.pipeline[-1]
    if model.task == "regression":
        return estimator.predict(x)
    if model.algorithm == "lightgbm":
        return estimator.predict(x, raw_score=True)
    if model.algorithm == "logistic":
        return estimator.decision_function(x)
    return estimator.predict_proba(x)[:, 1]


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_attributions_agree_with_shap(
    models: dict[str, TabularModel], data: pd.DataFrame, algorithm: str
) -> None:
    model = models[algorithm]
    expected, expected_base = _direct_shap(model, data)
    found = ModelExplainer(model, data).attributions(data[model.feature_names])
    assert found.columns == model.feature_names
    assert found.outputs == [1]
    np.testing.assert_allclose(found.values[:, :, 0], expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(found.base_values, expected_base, rtol=RTOL, atol=ATOL)

    overall = explain_global(model, data)
    importance = {c.column: c.importance for c in overall.importance}
    mean_abs = np.abs(expected).mean(axis=0)
    for j, column in enumerate(model.feature_names):
        assert importance[column] == pytest.approx(mean_abs[j], rel=RTOL, abs=ATOL)
    ranked = [c.importance for c in overall.importance]
    assert ranked == sorted(ranked, reverse=True)
    assert sum(c.share for c in overall.importance) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("algorithm", "space"),
    [("logistic", "margin"), ("random_forest", "probability"), ("lightgbm", "margin")],
)
def test_local_additivity_in_explainer_space(
    models: dict[str, TabularModel], data: pd.DataFrame, algorithm: str, space: str
) -> None:
    model = models[algorithm]
    rows = data.head(7)
    records = rows[model.feature_names].to_dict("records")
    local = explain_local(model, records, background=data)
    margin = _margin(model, rows)
    assert [e.row for e in local] == list(range(7))
    for e, expected in zip(local, margin, strict=True):
        assert e.output_space == space
        (out,) = e.outputs
        assert out.label == 1
        assert list(out.attributions) == model.feature_names
        assert out.output == pytest.approx(expected, abs=1e-6)
        assert out.base_value + sum(out.attributions.values()) == pytest.approx(out.output)
    assert [e.prediction for e in local] == model.predict(rows).tolist()


def test_one_hot_columns_are_summed_back(
    models: dict[str, TabularModel], data: pd.DataFrame
) -> None:
    model = models["logistic"]
    width = model.pipeline[0].transform(model.validate(data[model.feature_names])).shape[1]
    overall = explain_global(model, data)
    assert width > len(model.feature_names)  # one-hot made more columns...
    assert overall.columns == [c["name"] for c in model.signature]  # ...reported as the raw ones
    assert sorted(c.column for c in overall.importance) == sorted(model.feature_names)
    assert overall.explainer == "linear"


def test_regression_and_multiclass(data: pd.DataFrame) -> None:
    regression_data = data.drop(columns="eligible")
    for algorithm in ("linear", "lightgbm", "random_forest"):
        model = fit_tabular(regression_data, "age", algorithm=algorithm, params=FAST[algorithm])
        (e,) = explain_local(model, regression_data.head(1), background=regression_data)
        assert e.output_space == "value"
        assert e.outputs[0].label is None
        assert e.outputs[0].output == pytest.approx(float(model.predict(data.head(1))[0]))
    three = data.assign(employment_status=data["employment_status"].replace("retired", "student"))
    three = three[three["employment_status"].isin(["employed", "unemployed", "student"])]
    model = fit_tabular(three, "employment_status", algorithm="lightgbm", params=FAST["lightgbm"])
    (e,) = explain_local(model, three.drop(columns="employment_status").head(1))
    assert [o.label for o in e.outputs] == model.classes_
    x = model.pipeline[:-1].transform(model.validate(three[model.feature_names].head(1)))
    raw = model.pipeline[-1].predict(x, raw_score=True)[0]
    np.testing.assert_allclose([o.output for o in e.outputs], raw, atol=1e-6)
    overall = explain_global(model, three)
    assert len(overall.base_values) == 3
    assert all(len(c.by_output) == 3 for c in overall.importance)


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_strong_column_ranks_first(algorithm: str) -> None:
    rng = np.random.default_rng(0)
    rows = 400
    frame = pd.DataFrame(
        {
            "noise_a": rng.normal(size=rows),
            "signal": rng.normal(size=rows),
            "noise_b": rng.choice(["x", "y", "z"], rows),
            "noise_c": rng.normal(size=rows),
        }
    )
    frame["label"] = (frame["signal"] + 0.1 * rng.normal(size=rows) > 0).astype("int64")
    model = fit_tabular(frame, "label", algorithm=algorithm, params=FAST[algorithm])
    overall = explain_global(model, frame)
    assert overall.importance[0].column == "signal"
    assert overall.importance[0].share > 0.5


def test_partial_dependence_is_monotone_for_a_linear_effect() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"dose": rng.uniform(0, 10, 300), "other": rng.normal(size=300)})
    frame["response"] = 3 * frame["dose"] + rng.normal(size=300)
    model = fit_tabular(frame, "response", algorithm="linear")
    (curve,) = partial_dependence(model, frame, ["dose"], grid=20)
    assert curve.kind == "numeric"
    assert len(curve.grid) == 20
    average = curve.curves[0].average
    assert all(b > a for a, b in itertools.pairwise(average))
    slope = (average[-1] - average[0]) / (float(curve.grid[-1]) - float(curve.grid[0]))
    assert slope == pytest.approx(3, rel=0.1)


def test_partial_dependence_matches_scikit_learn(
    models: dict[str, TabularModel], data: pd.DataFrame
) -> None:
    model = models["lightgbm"]
    frame = model.validate(data[model.feature_names])
    curves = partial_dependence(model, frame, ["age", "household_size", "region"], grid=20)
    for curve in curves:
        categorical = [curve.column] if curve.kind == "categorical" else None
        expected = sk_partial_dependence(
            model.pipeline,
            frame,
            [curve.column],
            grid_resolution=20,
            categorical_features=categorical,
            kind="average",
        )
        if curve.kind == "numeric":
            assert curve.grid == pytest.approx(list(expected["grid_values"][0]))
        else:
            assert curve.grid == list(expected["grid_values"][0])
        np.testing.assert_allclose(curve.curves[0].average, expected["average"][0], atol=1e-12)
    top = partial_dependence(model, data, top_k=2)
    assert [c.column for c in top] == [c.column for c in explain_global(model, data).importance[:2]]


def test_kernel_fallback_is_additive_in_probability(
    models: dict[str, TabularModel], data: pd.DataFrame
) -> None:
    model = models["logistic"]
    rows = data.head(3)
    local = explain_local(model, rows[model.feature_names], background=data, method="kernel")
    proba = model.predict_proba(rows)[:, 1]
    for e, p in zip(local, proba, strict=True):
        assert e.explainer == "kernel"
        assert e.output_space == "probability"
        assert e.outputs[0].output == pytest.approx(p, abs=1e-6)
    overall = explain_global(model, data, method="kernel", max_rows=40)
    assert overall.rows_explained == 40
    assert overall.importance[0].column == explain_global(model, data).importance[0].column


def test_linear_explainer_needs_a_background(models: dict[str, TabularModel]) -> None:
    with pytest.raises(InvalidInputError, match=re.escape("needs background rows")):
        explain_local(models["logistic"], {"income": 1.0})


def test_global_sample_is_seeded(models: dict[str, TabularModel], data: pd.DataFrame) -> None:
    first = explain_global(models["lightgbm"], data, max_rows=100, seed=4)
    again = explain_global(models["lightgbm"], data, max_rows=100, seed=4)
    assert first == again
    assert (first.rows_total, first.rows_explained) == (400, 100)
    assert GlobalExplanation.model_validate_json(first.model_dump_json()) == first


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Any]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def test_html_report_is_self_contained(data: pd.DataFrame) -> None:
    evil = "<b>income</b>"
    frame = data.rename(columns={"income": evil})
    model = fit_tabular(frame, "eligible", algorithm="lightgbm", params=FAST["lightgbm"])
    report = explain(model, frame, top_k=3, local_rows=2)
    assert isinstance(report, ExplanationReport)
    assert all(isinstance(e, LocalExplanation) for e in report.local)
    page = render_explanation_html(report, title="Eligibility <model>")
    parser = _Collect()
    parser.feed(page)
    assert "http://" not in page
    assert "https://" not in page
    assert "script" not in parser.tags
    assert "<b>" not in page
    assert "&lt;b&gt;income&lt;/b&gt;" in page
    assert "Eligibility &lt;model&gt;" in page
    assert parser.tags.count("svg") == 1 + len(report.partial_dependence) + len(report.local) == 6
    assert ExplanationReport.model_validate_json(report.model_dump_json()) == report


def test_schema_fields_are_described() -> None:
    from pydantic import BaseModel

    for name in explain_schemas.__all__:
        value = getattr(explain_schemas, name)
        if isinstance(value, type) and issubclass(value, BaseModel):
            assert value.__doc__
            for field, info in value.model_fields.items():
                assert info.description, f"{name}.{field} has no description"
