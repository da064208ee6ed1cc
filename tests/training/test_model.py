"""TabularModel: validating raw rows, unseen categories, save/load round trip, public names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import civicml.training
from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.serving.fastpath import compile_fast_path
from civicml.training import MANIFEST_FILE, MODEL_FILE, TabularModel, fit_tabular
from tests.training.conftest import FAST

ROW = {
    "income": 18_500.0,
    "household_size": 3,
    "age": 41,
    "region": "North",
    "employment_status": "employed",
    "has_disability": False,
    "applied_at": "2024-05-02T09:30:00Z",
}


@pytest.fixture(scope="module")
def model() -> TabularModel:
    from tests.training.conftest import benefit_applications

    frame = benefit_applications(600, 11).drop(columns=["monthly_benefit"])
    return fit_tabular(frame, "eligible", algorithm="lightgbm", params=FAST["lightgbm"])


def test_signature_describes_the_raw_columns(model: TabularModel) -> None:
    assert model.signature == [
        {"name": "income", "type": "float64", "nullable": True},
        {"name": "household_size", "type": "int64", "nullable": False},
        {"name": "age", "type": "int64", "nullable": False},
        {"name": "region", "type": "string", "nullable": True},
        {"name": "employment_status", "type": "string", "nullable": True},
        {"name": "has_disability", "type": "bool", "nullable": False},
        {"name": "applied_at", "type": "timestamp", "nullable": False},
    ]
    assert model.feature_names == [c["name"] for c in model.signature]


def test_records_are_predicted(model: TabularModel) -> None:
    frame = model.validate([ROW, {**ROW, "income": 95_000.0}])
    assert list(frame.columns) == model.feature_names
    assert model.predict([ROW, {**ROW, "income": 95_000.0}]).tolist() == [True, False]
    assert model.predict(ROW).shape == (1,)
    proba = model.predict_proba([ROW])
    assert proba.shape == (1, 2) and proba.sum() == pytest.approx(1.0)


def test_nulls_are_imputed_in_every_column(model: TabularModel) -> None:
    row = dict.fromkeys(ROW)
    assert model.predict([row]).shape == (1,)


def test_records_and_frames_conform_alike(model: TabularModel) -> None:
    rows = [
        ROW,
        dict.fromkeys(ROW),
        {**ROW, "income": 7, "household_size": 2.0, "has_disability": True},
        {k: v for k, v in ROW.items() if k != "region"},
    ]
    from_records = model.validate(rows)
    from_frame = model.validate(pd.DataFrame(rows))
    pd.testing.assert_frame_equal(from_records, from_frame)
    assert from_records.dtypes.astype(str).tolist() == [
        "float64",
        "float64",
        "float64",
        "object",
        "object",
        "object",
        "datetime64[ns]",
    ]


def test_integers_are_accepted_for_float_columns_and_whole_floats_for_int(
    model: TabularModel,
) -> None:
    frame = model.validate([{**ROW, "income": 18_500, "household_size": 3.0}])
    assert frame["income"].dtype == "float64"
    assert frame["household_size"].tolist() == [3.0]


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_unknown_category_at_predict_time(eligibility: pd.DataFrame, algorithm: str) -> None:
    fitted = fit_tabular(eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm])
    unseen = fitted.predict_proba([{**ROW, "region": "Atlantis", "employment_status": "pirate"}])
    assert unseen.shape == (1, 2)
    assert np.isfinite(unseen).all()


@pytest.mark.parametrize(
    ("row", "message", "problem"),
    [
        (
            {k: v for k, v in ROW.items() if k != "region"},
            "Input is missing column 'region' (string).",
            "missing",
        ),
        ({**ROW, "regoin": "North"}, "Input has unexpected column 'regoin'", "unexpected"),
        (
            {**ROW, "income": "a lot"},
            "Column 'income' should be float64 but has string values (e.g. 'a lot').",
            "wrong_type",
        ),
        (
            {**ROW, "household_size": 2.5},
            "Column 'household_size' should be int64 but has non-integer values (e.g. 2.5).",
            "wrong_type",
        ),
        (
            {**ROW, "age": True},
            "Column 'age' should be int64 but has bool values (e.g. True).",
            "wrong_type",
        ),
        (
            {**ROW, "region": 7},
            "Column 'region' should be string but has integer values (e.g. 7).",
            "wrong_type",
        ),
        (
            {**ROW, "has_disability": "no"},
            "Column 'has_disability' should be bool but has string values (e.g. 'no').",
            "wrong_type",
        ),
        (
            {**ROW, "applied_at": "last tuesday"},
            "Column 'applied_at' should be timestamp but has values that are not ISO 8601",
            "wrong_type",
        ),
    ],
)
@pytest.mark.parametrize("as_frame", [False, True], ids=["records", "frame"])
def test_validate_names_the_column(
    model: TabularModel, row: dict[str, object], message: str, problem: str, as_frame: bool
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)) as info:
        model.validate(pd.DataFrame([row]) if as_frame else [row])
    assert info.value.status == 422
    assert info.value.details[0]["problem"] == problem


def test_unexpected_column_suggests_the_closest(model: TabularModel) -> None:
    with pytest.raises(InvalidInputError) as info:
        model.validate({**ROW, "regoin": "North"})
    assert info.value.hint == "Did you mean 'region'?"


def test_every_problem_is_in_details(model: TabularModel) -> None:
    row = {**ROW, "income": "x", "extra": 1}
    del row["age"]
    with pytest.raises(InvalidInputError, match=r"missing column 'age'.*2 more problem") as info:
        model.validate([row])
    assert [(d["column"], d["problem"]) for d in info.value.details] == [
        ("age", "missing"),
        ("extra", "unexpected"),
        ("income", "wrong_type"),
    ]


def test_timestamps_from_strings_datetimes_and_time_zones_agree(model: TabularModel) -> None:
    rows = [
        {**ROW, "applied_at": "2024-05-02T09:30:00Z"},
        {**ROW, "applied_at": "2024-05-02T11:30:00+02:00"},
        {**ROW, "applied_at": "2024-05-02 09:30:00"},
    ]
    as_strings = model.validate(rows)
    as_datetimes = model.validate(
        pd.DataFrame(rows).assign(applied_at=pd.Timestamp("2024-05-02 09:30"))
    )
    assert as_strings["applied_at"].nunique() == 1
    pd.testing.assert_frame_equal(as_strings, as_datetimes)
    np.testing.assert_array_equal(model.predict_proba(rows), model.predict_proba(as_datetimes))


def test_predict_ignores_extra_columns_but_validate_refuses_them(model: TabularModel) -> None:
    frame = pd.DataFrame([{**ROW, "eligible": True}])
    assert model.predict(frame).shape == (1,)
    with pytest.raises(InvalidInputError, match="unexpected column 'eligible'"):
        model.validate(frame)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "Input has no rows"),
        ("income=3", "Input must be a pandas DataFrame or a list of records, not str"),
        ([1, 2], "Input rows must be objects"),
    ],
)
def test_malformed_input(model: TabularModel, data: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        model.validate(data)


def test_predict_proba_needs_classification(benefit: pd.DataFrame) -> None:
    regression = fit_tabular(benefit, "monthly_benefit", algorithm="linear")
    with pytest.raises(InvalidInputError, match="predict_proba needs a classification model"):
        regression.predict_proba(benefit)


@pytest.mark.parametrize(
    ("algorithm", "target"),
    [
        ("logistic", "eligible"),
        ("random_forest", "eligible"),
        ("lightgbm", "eligible"),
        ("linear", "monthly_benefit"),
        ("random_forest", "monthly_benefit"),
        ("lightgbm", "monthly_benefit"),
    ],
)
def test_save_load_round_trip(
    applications: pd.DataFrame, tmp_path: Path, algorithm: str, target: str
) -> None:
    other = "monthly_benefit" if target == "eligible" else "eligible"
    frame = applications.drop(columns=[other])
    fitted = fit_tabular(frame, target, algorithm=algorithm, params=FAST[algorithm], seed=5)

    written = fitted.save(tmp_path / "model")
    loaded = TabularModel.load(tmp_path / "model")

    assert written == [tmp_path / "model" / MODEL_FILE, tmp_path / "model" / MANIFEST_FILE]
    np.testing.assert_array_equal(loaded.predict(frame), fitted.predict(frame))
    if fitted.task == "classification":
        np.testing.assert_array_equal(loaded.predict_proba(frame), fitted.predict_proba(frame))
    for name in ("task", "algorithm", "target", "params", "seed", "signature", "classes_"):
        assert getattr(loaded, name) == getattr(fitted, name), name
    assert loaded.metrics == fitted.metrics
    assert loaded.confusion_matrix == fitted.confusion_matrix
    # the compiled NumPy fast path still reads the loaded pipeline
    assert compile_fast_path(loaded) is not None


def test_manifest_is_plain_json(model: TabularModel, tmp_path: Path) -> None:
    model.save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())

    assert manifest["format"] == "civicml.tabular/2"
    assert manifest["model_file"] == "model.skops"
    assert manifest["task"] == "classification"
    assert manifest["algorithm"] == "lightgbm"
    assert manifest["classes"] == [False, True]
    assert manifest["positive_class"] is True
    assert manifest["seed"] == 0
    assert manifest["params"]["verbose"] == -1
    assert manifest["signature"] == model.signature
    assert manifest["confusion_matrix"]["labels"] == [False, True]
    assert set(manifest["library_versions"]) == {
        "python",
        "scikit-learn",
        "lightgbm",
        "skops",
        "numpy",
        "pandas",
    }


def test_load_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=re.escape("civicml-model.json is missing")):
        TabularModel.load(tmp_path)


def test_load_refuses_other_formats(model: TabularModel, tmp_path: Path) -> None:
    model.save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": "mlflow"}))
    with pytest.raises(InvalidInputError, match="has format 'mlflow'"):
        TabularModel.load(tmp_path)


def test_public_names_are_documented() -> None:
    assert civicml.training.__doc__
    for name in civicml.training.__all__:
        value = getattr(civicml.training, name)
        if isinstance(value, type) or callable(value):
            assert value.__doc__, f"civicml.training.{name} has no docstring"


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_labels_from_probabilities_match_predict(eligibility: pd.DataFrame, algorithm: str) -> None:
    fitted = fit_tabular(eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm])
    proba = fitted.pipeline.predict_proba(fitted.validate(eligibility.drop(columns=["eligible"])))
    labels = np.asarray(fitted.classes_)[proba.argmax(axis=1)]
    np.testing.assert_array_equal(labels, fitted.predict(eligibility))
