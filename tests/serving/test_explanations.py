"""Explanations from a live endpoint: SHAP attributions add up to what the endpoint answered."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest

from civicml.core import InvalidInputError
from civicml.serving import EndpointService, ModelHost, runtime
from civicml.serving.runtime import LoadedModel
from civicml.store import Context
from civicml.training import TabularModel, fit_tabular
from tests.serving.helpers import MODEL, records, register, training_frame


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def check_additive(explanation: dict[str, Any], columns: list[str]) -> None:
    for output in explanation["outputs"]:
        assert list(output["attributions"]) == columns
        total = output["base_value"] + sum(output["attributions"].values())
        assert total == pytest.approx(output["output"], abs=1e-9)


def test_invoke_with_explain_adds_up_to_the_answer(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    rows = records(6)
    rows[1]["income"] = None  # a missing number: filled with the median, the reference value
    plain = host.invoke(project, "web", rows)
    assert "explanations" not in plain
    loaded = host.load(_version(ctx, project))  # the model the endpoint serves
    assert not loaded.explainer.built  # built by the first request that asks
    result = host.invoke(project, "web", rows, explain=True)
    assert loaded.explainer.built
    assert result["predictions"] == plain["predictions"]
    explanations = result["explanations"]
    assert len(explanations) == len(rows)
    for i, (explanation, proba) in enumerate(
        zip(explanations, result["probabilities"], strict=True)
    ):
        assert explanation["row"] == i and explanation["explainer"] == "linear"
        assert explanation["output_space"] == "margin"
        assert explanation["prediction"] == result["predictions"][i]
        [output] = explanation["outputs"]  # binary: the positive class only
        assert output["label"] is True
        check_additive(explanation, ["age", "income", "region"])
        # Margin space: the output is the log-odds of the probability the endpoint answered.
        assert output["output"] == pytest.approx(logit(proba[1]), abs=1e-9)
    assert explanations[1]["outputs"][0]["attributions"]["income"] == pytest.approx(0, abs=1e-12)


def _version(ctx: Context, project: str) -> Any:
    from civicml.registry import RegistryService

    return RegistryService(ctx).get_version(project, MODEL, 1)


@pytest.mark.parametrize(
    ("algorithm", "target"),
    [("lightgbm", "eligible"), ("random_forest", "eligible"), ("linear", "income")],
)
def test_every_kind_of_model_explains_additively(algorithm: str, target: str) -> None:
    frame = training_frame(120)
    model = fit_tabular(frame, target, algorithm=algorithm, params=_small(algorithm), seed=0)
    classification = model.task == "classification"
    classes = model.classes_ if classification else []
    loaded = LoadedModel("v", "m", 1, model, classes, classification)
    columns = model.feature_names
    rows = [{k: v for k, v in r.items() if k in columns} for r in _rows(5)]
    explanations = loaded.explainer.explain(loaded.validate(rows))
    for explanation, row in zip(explanations, rows, strict=True):
        check_additive(explanation, columns)
        [output] = explanation["outputs"]
        if algorithm == "lightgbm":  # margin: the log-odds of the positive class
            proba = model.predict_proba([row])[0, 1]
            assert output["output"] == pytest.approx(logit(proba), abs=1e-6)
        elif algorithm == "random_forest":  # probability space
            assert output["output"] == pytest.approx(model.predict_proba([row])[0, 1], abs=1e-9)
        else:
            assert output["output"] == pytest.approx(model.predict([row])[0], rel=1e-9)


def _small(algorithm: str) -> dict[str, Any] | None:
    return {"random_forest": {"n_estimators": 20}, "lightgbm": {"n_estimators": 30}}.get(algorithm)


def _rows(n: int) -> list[dict[str, Any]]:
    out = records(n, seed=5)
    for row in out:
        row["eligible"] = True
    return out


def test_a_model_without_a_typical_record_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "compile_fast_path", lambda model: None)
    model = fit_tabular(training_frame(), "eligible", algorithm="logistic", seed=0)
    loaded = LoadedModel("v", "eligibility", 3, model, model.classes_, True)
    assert loaded.fast is None
    frame = loaded.validate(records(2))
    message = "Model eligibility v3 cannot be explained: The linear explainer needs background"
    for _ in range(2):  # the failure is kept, not rebuilt per request
        with pytest.raises(InvalidInputError, match=message):
            loaded.explainer.explain(frame)
    # A tree model needs no background: it explains without a fast path too.
    forest = fit_tabular(
        training_frame(), "eligible", algorithm="random_forest", params=_small("random_forest")
    )
    trees = LoadedModel("v", "trees", 1, forest, forest.classes_, True)
    assert len(trees.explainer.explain(trees.validate(records(2)))) == 2


def test_concurrent_explanations_build_one_explainer(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    explain_module = importlib.import_module("civicml.evaluation.explain")

    built: list[Any] = []
    original = explain_module.ModelExplainer.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(explain_module.ModelExplainer, "__init__", counting)
    model = fit_tabular(training_frame(), "eligible", algorithm="logistic", seed=0)
    loaded = LoadedModel("v", "m", 1, model, model.classes_, True)
    frame = loaded.validate(records(3))
    results: list[Any] = [None] * 8
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        results[i] = loaded.explainer.explain(frame)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(built) == 1
    assert all(r == results[0] for r in results)


def test_reference_is_the_typical_record(model_dirs: tuple[Path, Path]) -> None:
    model = TabularModel.load(model_dirs[0])
    loaded = LoadedModel("v", "m", 1, model, model.classes_, True)
    assert loaded.fast is not None
    reference = loaded.fast.reference_record()
    steps = model.pipeline[0].named_transformers_  # fitted on the training split
    assert reference["income"] == steps["number"].named_steps["impute"].statistics_[1]
    assert reference["region"] == steps["category"].named_steps["impute"].statistics_[0]
    # The typical record itself has no attributions: everything is at the reference.
    [explanation] = loaded.explainer.explain(loaded.validate([reference]))
    assert all(abs(v) < 1e-12 for v in explanation["outputs"][0]["attributions"].values())
