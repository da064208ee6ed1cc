"""prepare_tabular / fit_tabular(prepared=...): the data side of a fit made once and reused
gives the very same model and metrics; a prepared made for other data or arguments is refused;
prepared_for shares one per frame and arguments (the trials of a tuning job)."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from civicml.core import InvalidInputError
from civicml.training import fit_tabular, train_validation_split
from civicml.training.tabular import prepare_tabular
from civicml.training.tune import lightgbm_curve, prepared_for
from tests.training.conftest import FAST

CASES = [
    ("eligible", "lightgbm"),
    ("eligible", "random_forest"),
    ("eligible", "logistic"),
    ("employment_status", "lightgbm"),
    ("monthly_benefit", "lightgbm"),
    ("monthly_benefit", "linear"),
]


def _frame(applications: pd.DataFrame, target: str) -> pd.DataFrame:
    other = {"eligible", "monthly_benefit", "employment_status"} - {target}
    frame = applications.drop(columns=sorted(other - {"employment_status"}))
    return frame.dropna(subset=[target])


@pytest.mark.parametrize(("target", "algorithm"), CASES)
def test_a_prepared_fit_is_the_same_fit(
    applications: pd.DataFrame, seed: int, target: str, algorithm: str
) -> None:
    frame = _frame(applications, target)
    plain = fit_tabular(frame, target, algorithm=algorithm, params=FAST[algorithm], seed=seed)
    prepared = prepare_tabular(frame, target, algorithm=algorithm, seed=seed)
    reused = [
        fit_tabular(
            frame, target, algorithm=algorithm, params=FAST[algorithm], seed=seed, prepared=prepared
        )
        for _ in range(2)
    ]

    for model in reused:
        assert model.metrics == plain.metrics
        assert model.confusion_matrix == plain.confusion_matrix
        assert model.signature == plain.signature
        assert model.classes_ == plain.classes_
        assert {k: v for k, v in model.training.items() if k != "fit_seconds"} == {
            k: v for k, v in plain.training.items() if k != "fit_seconds"
        }
        assert model.predict(frame.head(40)).tolist() == plain.predict(frame.head(40)).tolist()
    # Each model owns its preprocessing: the prepared one is copied, never shared.
    first, second = (m.pipeline.named_steps["preprocess"] for m in reused)
    assert first is not second and first is not prepared.preprocess


def test_metrics_of_a_prepared_fit_match_sklearn(eligibility: pd.DataFrame, seed: int) -> None:
    prepared = prepare_tabular(eligibility, "eligible", seed=seed)
    model = fit_tabular(
        eligibility, "eligible", params=FAST["lightgbm"], seed=seed, prepared=prepared
    )
    _, valid = train_validation_split(eligibility, "eligible", task="classification", seed=seed)
    truth, predicted = valid["eligible"].to_numpy(), model.predict(valid)

    assert model.metrics["f1"] == skm.f1_score(truth, predicted)
    assert model.metrics["precision"] == skm.precision_score(truth, predicted)
    assert model.metrics["recall"] == skm.recall_score(truth, predicted)
    assert model.metrics["roc_auc"] == skm.roc_auc_score(truth, model.predict_proba(valid)[:, 1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 8}, "other data or arguments"),
        ({"validation_fraction": 0.3}, "other data or arguments"),
        ({"algorithm": "logistic"}, "other data or arguments"),  # scaled + one-hot, not codes
        ({"task": "regression"}, "other data or arguments"),
        ({"features": ["income", "age"]}, "other feature columns"),
    ],
)
def test_a_prepared_made_otherwise_is_refused(
    eligibility: pd.DataFrame, change: dict[str, object], message: str
) -> None:
    frame = eligibility.assign(eligible=eligibility["eligible"].astype(int))
    prepared = prepare_tabular(frame, "eligible", seed=7)
    arguments: dict[str, object] = {"seed": 7, **change}

    with pytest.raises(InvalidInputError, match=message):
        fit_tabular(frame, "eligible", prepared=prepared, **arguments)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="other data or arguments"):
        fit_tabular(frame.head(600), "eligible", prepared=prepared, seed=7)


def test_bad_parameters_are_reported_before_the_data_is_split(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Unknown parameter 'leaves'"):
        fit_tabular(eligibility.head(3), "eligible", params={"leaves": 3})


def test_prepared_for_shares_one_per_frame_and_arguments(eligibility: pd.DataFrame) -> None:
    frame = eligibility.copy()
    first = prepared_for(frame, "eligible", algorithm="lightgbm", seed=3)

    assert prepared_for(frame, "eligible", algorithm="lightgbm", seed=3) is first
    assert prepared_for(frame, "eligible", algorithm="lightgbm", seed=4) is not first
    assert prepared_for(frame.copy(), "eligible", algorithm="lightgbm", seed=3) is not first
    from civicml.training import tune

    held = len(tune._PREPARED)
    del frame
    gc.collect()
    assert len(tune._PREPARED) < held  # the entries go with their frame


def test_the_lightgbm_curve_on_a_prepared_frame_ends_at_the_fit(
    eligibility: pd.DataFrame,
) -> None:
    prepared = prepare_tabular(eligibility, "eligible")
    seen: dict[int, float] = {}
    params = {"n_estimators": 30}
    last = lightgbm_curve(
        eligibility,
        "eligible",
        metric="val_roc_auc",
        report=seen.__setitem__,
        params=params,
        prepared=prepared,
    )
    model = fit_tabular(eligibility, "eligible", params=params, prepared=prepared)

    assert sorted(seen) == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert last == seen[30] == pytest.approx(model.metrics["roc_auc"], abs=1e-12)
    assert np.isfinite(list(seen.values())).all()
