"""fit_tabular: each algorithm learns, metrics match sklearn, runs reproduce, errors help."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from civicml.core.errors import InvalidInputError
from civicml.training import ALGORITHMS, fit_tabular, tabular, train_validation_split
from tests.training.conftest import FAST, benefit_applications

CLASSIFIERS = ["logistic", "random_forest", "lightgbm"]
REGRESSORS = ["linear", "random_forest", "lightgbm"]


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_classifier_beats_majority_class(
    eligibility: pd.DataFrame, seed: int, algorithm: str
) -> None:
    model = fit_tabular(
        eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm], seed=seed
    )
    _, valid = train_validation_split(eligibility, "eligible", task="classification", seed=seed)
    majority = valid["eligible"].value_counts(normalize=True).max()

    assert model.task == "classification"
    assert model.classes_ == [False, True]
    assert set(model.metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert model.metrics["accuracy"] > majority + 0.1
    assert model.metrics["roc_auc"] > 0.9
    assert model.confusion_matrix is not None
    assert model.confusion_matrix["labels"] == [False, True]
    assert sum(map(sum, model.confusion_matrix["matrix"])) == len(valid)
    assert model.training["validation_rows"] == len(valid) == 240


@pytest.mark.parametrize("algorithm", REGRESSORS)
def test_regressor_beats_mean_predictor(benefit: pd.DataFrame, seed: int, algorithm: str) -> None:
    model = fit_tabular(
        benefit, "monthly_benefit", algorithm=algorithm, params=FAST[algorithm], seed=seed
    )

    assert model.task == "regression"
    assert model.classes_ == []
    assert model.confusion_matrix is None
    assert set(model.metrics) == {"rmse", "mae", "r2"}
    assert model.metrics["r2"] > 0.5
    assert model.metrics["mae"] < model.metrics["rmse"]


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_classification_metrics_match_sklearn(
    eligibility: pd.DataFrame, seed: int, algorithm: str
) -> None:
    model = fit_tabular(
        eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm], seed=seed
    )
    _, valid = train_validation_split(eligibility, "eligible", task="classification", seed=seed)
    truth, predicted = valid["eligible"].to_numpy(), model.predict(valid)
    proba = model.predict_proba(valid)

    assert model.metrics == {
        "accuracy": skm.accuracy_score(truth, predicted),
        "precision": skm.precision_score(truth, predicted),
        "recall": skm.recall_score(truth, predicted),
        "f1": skm.f1_score(truth, predicted),
        "roc_auc": skm.roc_auc_score(truth, proba[:, 1]),
        "log_loss": skm.log_loss(truth, proba),
    }
    assert model.confusion_matrix is not None
    assert model.confusion_matrix["matrix"] == skm.confusion_matrix(truth, predicted).tolist()


@pytest.mark.parametrize("algorithm", REGRESSORS)
def test_regression_metrics_match_sklearn(benefit: pd.DataFrame, seed: int, algorithm: str) -> None:
    model = fit_tabular(
        benefit, "monthly_benefit", algorithm=algorithm, params=FAST[algorithm], seed=seed
    )
    _, valid = train_validation_split(benefit, "monthly_benefit", task="regression", seed=seed)
    truth, predicted = valid["monthly_benefit"], model.predict(valid)

    assert model.metrics == {
        "rmse": pytest.approx(skm.root_mean_squared_error(truth, predicted), rel=1e-12),
        "mae": pytest.approx(skm.mean_absolute_error(truth, predicted), rel=1e-12),
        "r2": pytest.approx(skm.r2_score(truth, predicted), rel=1e-12),
    }


def test_multiclass_uses_macro_averages_and_ovr_auc(applications: pd.DataFrame) -> None:
    frame = applications.drop(columns=["eligible", "monthly_benefit"]).dropna(
        subset=["employment_status"]
    )
    model = fit_tabular(frame, "employment_status", algorithm="lightgbm", params=FAST["lightgbm"])
    _, valid = train_validation_split(frame, "employment_status", task="classification", seed=0)
    truth, predicted = valid["employment_status"], model.predict(valid)

    assert model.classes_ == sorted(frame["employment_status"].unique())
    assert model.predict_proba(valid).shape == (len(valid), 5)
    assert model.metrics["f1"] == skm.f1_score(truth, predicted, average="macro")
    assert model.metrics["roc_auc"] == skm.roc_auc_score(
        truth, model.predict_proba(valid), multi_class="ovr", average="macro"
    )


def test_binary_positive_class_is_the_larger_label(eligibility: pd.DataFrame) -> None:
    frame = eligibility.assign(eligible=np.where(eligibility["eligible"], "yes", "no"))
    model = fit_tabular(frame, "eligible", algorithm="logistic")
    _, valid = train_validation_split(frame, "eligible", task="classification", seed=0)

    assert model.classes_ == ["no", "yes"]
    assert model.manifest()["positive_class"] == "yes"
    assert model.metrics["recall"] == skm.recall_score(
        valid["eligible"], model.predict(valid), pos_label="yes"
    )


@pytest.mark.parametrize(
    ("target", "task"),
    [
        ("household_size", "classification"),  # integers, 7 distinct values
        ("age", "regression"),  # integers, 72 distinct values
        ("income", "regression"),
        ("region", "classification"),
        ("has_disability", "classification"),
    ],
)
def test_auto_task(applications: pd.DataFrame, target: str, task: str) -> None:
    frame = applications.drop(columns=["eligible", "monthly_benefit"]).dropna(subset=[target])
    model = fit_tabular(frame, target, algorithm="lightgbm", params={"n_estimators": 5})
    assert model.task == task


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_same_data_and_seed_give_identical_results(
    eligibility: pd.DataFrame, algorithm: str
) -> None:
    first = fit_tabular(
        eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm], seed=3
    )
    again = fit_tabular(
        eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm], seed=3
    )
    other = fit_tabular(
        eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm], seed=4
    )

    assert first.metrics == again.metrics
    assert first.confusion_matrix == again.confusion_matrix
    np.testing.assert_array_equal(
        first.predict_proba(eligibility), again.predict_proba(eligibility)
    )
    assert first.metrics != other.metrics


def test_regression_is_deterministic(benefit: pd.DataFrame) -> None:
    runs = [fit_tabular(benefit, "monthly_benefit", params=FAST["lightgbm"]) for _ in range(2)]
    assert runs[0].metrics == runs[1].metrics
    np.testing.assert_array_equal(runs[0].predict(benefit), runs[1].predict(benefit))


def test_split_is_stratified_and_seeded(eligibility: pd.DataFrame) -> None:
    train, valid = train_validation_split(eligibility, "eligible", task="classification", seed=1)
    again, _ = train_validation_split(eligibility, "eligible", task="classification", seed=1)

    assert len(train) == 960 and len(valid) == 240
    assert list(train.index) == list(again.index)
    assert abs(valid["eligible"].mean() - eligibility["eligible"].mean()) < 0.005


def test_features_select_the_inputs(eligibility: pd.DataFrame) -> None:
    model = fit_tabular(
        eligibility, "eligible", algorithm="logistic", features=["income", "household_size"]
    )
    assert model.feature_names == ["income", "household_size"]
    assert model.predict([{"income": 90_000.0, "household_size": 1}]).tolist() == [False]


def test_params_override_defaults(eligibility: pd.DataFrame) -> None:
    model = fit_tabular(eligibility, "eligible", params={"n_estimators": 7, "num_leaves": 4})
    assert model.params["n_estimators"] == 7
    assert model.params["random_state"] == 0
    assert model.pipeline.named_steps["model"].n_estimators == 7


def test_docstring_examples_run() -> None:
    result = doctest.testmod(tabular, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# Errors ---------------------------------------------------------------------------------------


def test_unknown_algorithm_suggests_the_closest(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Unknown algorithm 'lightgmb'") as info:
        fit_tabular(eligibility, "eligible", algorithm="lightgmb")
    assert info.value.hint == "Did you mean 'lightgbm'?"


def test_unknown_algorithm_lists_the_choices(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Unknown algorithm 'xgboost'") as info:
        fit_tabular(eligibility, "eligible", algorithm="xgboost")
    assert info.value.hint == "Choose one of: " + ", ".join(ALGORITHMS) + "."


@pytest.mark.parametrize(
    ("algorithm", "target", "message"),
    [
        ("logistic", "monthly_benefit", "Algorithm 'logistic' does not do regression"),
        ("linear", "eligible", "Algorithm 'linear' does not do classification"),
    ],
)
def test_algorithm_task_mismatch(
    applications: pd.DataFrame, algorithm: str, target: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        fit_tabular(applications, target, algorithm=algorithm)


def test_regression_on_labels_is_refused(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="'region' is not numeric"):
        fit_tabular(eligibility.dropna(subset=["region"]), "region", task="regression")


def test_missing_target(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Target column 'eligable' is not in the data") as e:
        fit_tabular(eligibility, "eligable")
    assert e.value.hint == "Did you mean 'eligible'?"


def test_target_with_one_class(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match=r"has one class \(True\)"):
        fit_tabular(eligibility.assign(eligible=True), "eligible")


def test_target_with_missing_values(eligibility: pd.DataFrame) -> None:
    frame = eligibility.astype({"eligible": object})
    frame.loc[[3, 5], "eligible"] = None
    with pytest.raises(InvalidInputError, match="'eligible' has 2 missing value"):
        fit_tabular(frame, "eligible")


def test_class_with_one_row(eligibility: pd.DataFrame) -> None:
    frame = eligibility.assign(eligible=["a"] + ["b", "c"] * 599 + ["b"])
    with pytest.raises(InvalidInputError, match="Class 'a' of target 'eligible' has a single row"):
        fit_tabular(frame, "eligible")


@pytest.mark.parametrize(("rows", "minimum"), [(4, 7), (6, 7)])
def test_too_few_rows(rows: int, minimum: int) -> None:
    frame = benefit_applications(rows, 0).drop(columns=["eligible"])
    with pytest.raises(InvalidInputError, match=f"Too few rows to train: {rows} row") as info:
        fit_tabular(frame, "monthly_benefit")
    assert info.value.hint == f"Provide at least {minimum} rows, or change validation_fraction."


def test_too_few_rows_per_class_for_the_split() -> None:
    frame = pd.DataFrame({"x": range(12), "y": list("aabbccddeeff")})
    with pytest.raises(InvalidInputError, match="Too few rows to train: 12 row"):
        fit_tabular(frame, "y")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_validation_fraction_out_of_range(eligibility: pd.DataFrame, fraction: float) -> None:
    with pytest.raises(InvalidInputError, match="validation_fraction must be between 0 and 1"):
        fit_tabular(eligibility, "eligible", validation_fraction=fraction)


def test_features_not_in_the_frame(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Feature column 'incme' is not in the data") as e:
        fit_tabular(eligibility, "eligible", features=["incme", "age"])
    assert e.value.hint == "Did you mean 'income'?"


def test_target_listed_as_feature(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="'eligible' is also listed as a feature"):
        fit_tabular(eligibility, "eligible", features=["income", "eligible"])


def test_unknown_parameter_suggests_the_closest(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Unknown parameter 'n_estimator' for") as info:
        fit_tabular(eligibility, "eligible", params={"n_estimator": 10})
    assert info.value.hint is not None and "'n_estimators'" in info.value.hint


def test_unknown_task(eligibility: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="Unknown task 'clasification'"):
        fit_tabular(eligibility, "eligible", task="clasification")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("mixed", ["a", 1] * 600, "Column 'mixed' mixes value types"),
        ("empty", [None] * 1200, "Column 'empty' has no values"),
        ("span", [pd.Timedelta(1)] * 1200, "Column 'span' has type timedelta64"),
    ],
)
def test_unusable_feature_columns(
    eligibility: pd.DataFrame, column: str, values: list[object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fit_tabular(eligibility.assign(**{column: values}), "eligible")
