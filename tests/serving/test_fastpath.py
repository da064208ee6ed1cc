"""The compiled fast path answers what the pipeline answers, for every built-in algorithm."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from civicml.serving import fastpath
from civicml.serving.fastpath import Encoded, FastPath, compile_fast_path
from civicml.training import TabularModel, fit_tabular

REGIONS = ["north", "south", "east", "west"]
SMALL = {"random_forest": {"n_estimators": 25}, "lightgbm": {"n_estimators": 40}}


def frame(rows: int, seed: int) -> pd.DataFrame:
    """Mixed columns with missing values: int, float, string, bool, timestamp; three targets."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows)
    income = rng.normal(1500, 500, rows).round(2)
    income[rng.random(rows) < 0.1] = np.nan
    region = rng.choice(REGIONS, rows).astype(object)
    region[rng.random(rows) < 0.1] = None
    member = rng.random(rows) < 0.4
    applied = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 86400, rows), "s")
    score = (1500 - np.nan_to_num(income, nan=1500)) / 500 + (age - 50) / 30 + member
    return pd.DataFrame(
        {
            "age": age,
            "income": income,
            "region": region,
            "member": member,
            "applied": applied,
            "eligible": score + rng.normal(0, 0.5, rows) > 0,
            "band": np.where(score < -0.5, "low", np.where(score < 0.5, "mid", "high")),
            "amount": score * 100 + rng.normal(0, 10, rows),
        }
    )


def random_records(rows: int, seed: int) -> list[dict[str, Any]]:
    """Realistic requests: missing values, unseen categories, time zones, whole floats."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        record: dict[str, Any] = {
            "age": int(rng.integers(10, 100)),
            "income": float(rng.normal(1500, 700)),
            "region": str(rng.choice([*REGIONS, "atlantis"])),
            "member": bool(rng.random() < 0.5),
            "applied": (
                pd.Timestamp("2023-06-01") + pd.Timedelta(seconds=int(rng.integers(0, 10**8)))
            ).isoformat(),
        }
        if rng.random() < 0.3:
            record["applied"] += "+02:00"
        if rng.random() < 0.2:
            record["age"] = float(record["age"])
        for column in record:
            if rng.random() < 0.15:
                record[column] = None
        out.append(record)
    return out


CASES = [
    ("logistic", "eligible"),
    ("logistic", "band"),
    ("linear", "amount"),
    ("random_forest", "eligible"),
    ("random_forest", "band"),
    ("random_forest", "amount"),
    ("lightgbm", "eligible"),
    ("lightgbm", "band"),
    ("lightgbm", "amount"),
]


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], TabularModel]:
    data = frame(300, seed=0)
    features = ["age", "income", "region", "member", "applied"]
    return {
        (algorithm, target): fit_tabular(
            data[[*features, target]],
            target,
            algorithm=algorithm,
            params=SMALL.get(algorithm),
            seed=0,
        )
        for algorithm, target in CASES
    }


def pipeline_answer(model: TabularModel, records: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    validated = model.validate(records)
    if model.task == "classification":
        result: np.ndarray[Any, Any] = model.pipeline.predict_proba(validated)
    else:
        result = model.pipeline.predict(validated)
    return result


def compiled(model: TabularModel) -> FastPath:
    fast = compile_fast_path(model)
    assert fast is not None
    return fast


@pytest.mark.parametrize(("algorithm", "target"), CASES)
def test_fast_path_equals_the_pipeline(
    models: dict[tuple[str, str], TabularModel], algorithm: str, target: str
) -> None:
    model = models[(algorithm, target)]
    fast = compiled(model)
    kinds = {"logistic": "linear", "linear": "linear", "random_forest": "forest"}
    assert fast.kind == kinds.get(algorithm, algorithm)
    if fast.kind == "linear":
        assert fast.inline_records == fastpath.INLINE_MAX_RECORDS
    else:  # measured when compiled: what fits the budget on this machine
        assert 0 <= fast.inline_records <= fastpath.INLINE_MAX_RECORDS
    assert fast.inline is (fast.inline_records > 0)
    records = random_records(200, seed=7)
    want = pipeline_answer(model, records)
    encoded = fast.encode(records)
    assert encoded is not None and len(encoded) == 200
    from_frame = fast.from_frame(model.validate(records))
    for batch in (encoded, from_frame):
        labels, probabilities = fast.predict(batch)
        if model.task == "classification":
            assert probabilities is not None
            if fast.kind == "linear":
                np.testing.assert_allclose(probabilities, want, rtol=1e-9, atol=1e-9)
            else:
                assert probabilities == want.tolist()  # bit for bit
            assert labels == model.predict(records).tolist()
        else:
            assert probabilities is None
            if fast.kind == "linear":
                np.testing.assert_allclose(labels, want, rtol=1e-9, atol=1e-9)
            else:
                assert labels == want.tolist()


@pytest.mark.parametrize(("algorithm", "target"), CASES[::2])
def test_one_row_at_a_time_and_concatenated(
    models: dict[tuple[str, str], TabularModel], algorithm: str, target: str
) -> None:
    model = models[(algorithm, target)]
    fast = compiled(model)
    records = random_records(12, seed=3)
    parts = [fast.encode([r]) for r in records]
    assert all(p is not None for p in parts)
    joined = Encoded.concat([p for p in parts if p is not None])
    whole = fast.encode(records)
    assert whole is not None
    np.testing.assert_array_equal(joined.numbers, whole.numbers)
    assert joined.categories == whole.categories
    singles = [fast.predict(p)[0][0] for p in parts if p is not None]
    together = fast.predict(whole)[0]
    if model.task == "regression":  # one row's dot product may round differently in a batch
        np.testing.assert_allclose(singles, together, rtol=1e-12)
        np.testing.assert_allclose(together, model.predict(records), rtol=1e-9)
    else:
        assert singles == together == model.predict(records).tolist()


@pytest.mark.parametrize(
    "change",
    [
        {"age": 41.5},  # a fraction in an integer column
        {"age": True},  # a boolean is not a number
        {"income": float("inf")},
        {"income": "1500"},
        {"region": 3},
        {"member": "yes"},
        {"applied": 1700000000},
        {"applied": "last tuesday"},  # not ISO 8601: the model's validation decides
        {"age": np.int64(41)},  # NumPy scalars: the model's validation converts them
    ],
)
def test_values_that_do_not_plainly_fit_go_to_the_models_validation(
    models: dict[tuple[str, str], TabularModel], change: dict[str, Any]
) -> None:
    fast = compiled(models[("logistic", "eligible")])
    record = {**random_records(1, seed=1)[0], **change}
    assert fast.encode([record]) is None


def test_records_of_the_wrong_shape_go_to_the_models_validation(
    models: dict[tuple[str, str], TabularModel],
) -> None:
    fast = compiled(models[("lightgbm", "eligible")])
    record = random_records(1, seed=1)[0]
    assert fast.encode([record]) is not None
    assert fast.encode([]) is None
    assert fast.encode(record) is None  # one record, not a list
    assert fast.encode([{**record, "extra": 1}]) is None
    assert fast.encode([{k: v for k, v in record.items() if k != "age"}]) is None
    assert fast.encode(pd.DataFrame([record])) is None
    # NaN is not a missing value in a record (null is): the validation refuses it by name.
    assert fast.encode([{**record, "income": float("nan")}]) is None
    assert fast.encode([{**record, "income": float("inf")}]) is None
    missing = fast.encode([{**record, "income": None}])
    assert missing is not None and np.isnan(missing.numbers[0]).sum() >= 1


def test_unknown_pipelines_are_not_compiled(models: dict[tuple[str, str], TabularModel]) -> None:
    model = copy.deepcopy(models[("random_forest", "eligible")])
    tree = DecisionTreeClassifier(random_state=0)
    data = frame(100, seed=2)
    features = model.feature_names
    x = model.pipeline[0].transform(model.validate(data[features]))
    tree.fit(x, data["eligible"])
    model.pipeline.steps[-1] = ("model", tree)
    assert compile_fast_path(model) is None  # an estimator it does not know
    other = copy.deepcopy(models[("logistic", "eligible")])
    other.pipeline.steps[0][1].transformers_[0][1].steps[0][1].strategy = "mean"
    assert compile_fast_path(other) is None  # an imputer setting it does not know


def test_a_fast_path_that_disagrees_is_not_used(
    models: dict[tuple[str, str], TabularModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_linear = fastpath._linear

    def off_by_a_little(*args: Any, **kwargs: Any) -> Any:
        predict = compile_linear(*args, **kwargs)
        return lambda x, cats: predict(x, cats) * (1 + 1e-6)

    monkeypatch.setattr(fastpath, "_linear", off_by_a_little)
    assert compile_fast_path(models[("logistic", "eligible")]) is None


def test_reference_record_is_a_valid_typical_row(
    models: dict[tuple[str, str], TabularModel],
) -> None:
    model = models[("logistic", "eligible")]
    fast = compiled(model)
    reference = fast.reference_record()
    assert list(reference) == model.feature_names
    assert reference["region"] in REGIONS and isinstance(reference["member"], bool)
    assert isinstance(reference["age"], int)
    validated = model.validate([reference])  # passes the model's own validation
    filled = model.pipeline[0].named_transformers_["number"].named_steps["impute"]
    assert validated["income"].iloc[0] == filled.statistics_[1]


def test_epoch_seconds_equal_the_pipelines_own() -> None:
    from civicml.serving.fastpath import _epoch_seconds
    from civicml.training._preprocess import epoch_seconds

    rng = np.random.default_rng(0)
    stamps = rng.integers(-(2**62), 2**62, 50_000).astype("datetime64[ns]")
    stamps[::7] = np.datetime64("NaT")
    want = epoch_seconds(pd.DataFrame({"t": stamps}))[:, 0]
    np.testing.assert_array_equal(_epoch_seconds(stamps), want)


class _Clock:
    """A clock that advances by what each timed encode + predict of ``records`` should cost."""

    def __init__(self, fast: FastPath, first_s: float, per_record_s: float) -> None:
        self.now, self.first, self.per = 0.0, first_s, per_record_s
        encode = fast.encode

        def timed_encode(records: Any) -> Any:
            self.now += self.first + self.per * (len(records) - 1)
            return encode(records)

        fast.encode = timed_encode  # type: ignore[method-assign]

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("first_us", "per_record_us", "expected"),
    [
        (100, 50, 19),  # 100 + 18 * 50 = 1,000 us: 19 records fit the millisecond
        (900, 200, 1),  # one record fits, two do not
        (1_500, 10, 0),  # one record is over the budget: never on the event loop
        (5, 0.1, fastpath.INLINE_MAX_RECORDS),  # capped
    ],
)
def test_a_tree_model_is_answered_inline_only_for_what_fits_the_budget(
    models: dict[tuple[str, str], TabularModel],
    first_us: float,
    per_record_us: float,
    expected: int,
) -> None:
    fast = copy.copy(compiled(models[("lightgbm", "eligible")]))
    clock = _Clock(fast, first_us / 1e6, per_record_us / 1e6)
    assert fastpath.inline_records(fast, budget_s=0.001, clock=clock) == expected


def test_a_count_that_does_not_fit_when_timed_is_halved(
    models: dict[tuple[str, str], TabularModel],
) -> None:
    """1 and 8 records suggest 64 fit, but 64 (and 32) records cost more than linearly."""
    fast = copy.copy(compiled(models[("lightgbm", "eligible")]))
    clock = _Clock(fast, 100e-6, 5e-6)
    encode = fast.encode

    def superlinear(records: Any) -> Any:
        if len(records) > 16:
            clock.now += 0.002
        return encode(records)

    fast.encode = superlinear  # type: ignore[method-assign]
    assert fastpath.inline_records(fast, budget_s=0.001, clock=clock) == 16


@pytest.mark.parametrize(
    ("algorithm", "target"),
    [
        ("logistic", "eligible"),
        ("linear", "amount"),
        ("random_forest", "band"),
        ("lightgbm", "eligible"),
    ],
)
@pytest.mark.parametrize("gaps", [True, False])
def test_a_numeric_frame_is_converted_at_once_and_answers_as_the_pipeline(
    algorithm: str, target: str, gaps: bool
) -> None:
    # Numbers only (no timestamp): from_frame takes the frame's float block in one conversion
    # (Fortran-ordered) and the linear model folds its scaling into the weights.
    data = frame(300, seed=3)
    model = fit_tabular(
        data[["age", "income", target]],
        target,
        algorithm=algorithm,
        params=SMALL.get(algorithm),
        seed=0,
    )
    fast = compiled(model)
    rows = frame(500, seed=4)[["age", "income"]]
    if not gaps:
        rows = rows.fillna({"income": 1500.0})
    before = rows.copy()
    valid = model.validate(rows)
    got = fast.predict_raw(fast.from_frame(valid))
    if model.task == "classification":
        want = model.pipeline.predict_proba(valid)
    else:
        want = model.pipeline.predict(valid)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    pd.testing.assert_frame_equal(rows, before)  # the caller's frame is untouched


def _early_stopped_booster() -> Any:
    import lightgbm

    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 6))
    y = (x[:, 0] + 0.3 * rng.normal(size=600) > 0).astype(int)
    params = {"objective": "binary", "learning_rate": 0.3, "verbose": -1}
    booster = lightgbm.train(
        params,
        lightgbm.Dataset(x[:400], y[:400]),
        num_boost_round=400,
        valid_sets=[lightgbm.Dataset(x[400:], y[400:])],
        callbacks=[lightgbm.early_stopping(5, verbose=False)],
        keep_training_booster=True,  # the rounds after the best stay in the booster
    )
    assert 0 < booster.best_iteration < booster.current_iteration()  # Booster.predict's case
    return booster, rng.normal(size=(50, 6))


def test_the_lightgbm_runner_answers_as_booster_predict_with_early_stopping() -> None:
    booster, x = _early_stopped_booster()
    params = {"num_threads": 1}
    run = fastpath._lightgbm_runner(booster, params)
    assert not isinstance(run, functools.partial)  # the predictor built once, not the fallback
    want = booster.predict(x, validate_features=False, **params)
    np.testing.assert_array_equal(run(x), want)
    np.testing.assert_array_equal(run(x[:1]), want[:1])  # one row, as an endpoint asks


def test_the_lightgbm_runner_falls_back_to_booster_predict() -> None:
    booster, x = _early_stopped_booster()

    class Moved:  # what a lightgbm whose internals moved looks like to the runner
        def __init__(self) -> None:
            self.predict = booster.predict

    run = fastpath._lightgbm_runner(Moved(), {"num_threads": 1})
    assert isinstance(run, functools.partial)
    np.testing.assert_array_equal(run(x), booster.predict(x, num_threads=1))
