"""Model Monitor style baseline and violations (anchors B2)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from civicml.monitoring import check_constraints, compute_statistics, suggest_baseline
from civicml.monitoring.constraints import linf_categorical, linf_numeric, linf_robust


@pytest.fixture
def baseline_frame(rng: np.random.Generator) -> pd.DataFrame:
    n = 2000
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(30000, 5000, n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )


def _clean(rng: np.random.Generator, n: int = 1500) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(30000, 5000, n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )


def _types(violations: list) -> set[tuple[str, str]]:
    return {(v.feature_name, v.constraint_check_type) for v in violations}


def test_suggested_baseline_has_model_monitor_shape(baseline_frame: pd.DataFrame) -> None:
    stats, constraints = suggest_baseline(baseline_frame)
    by_name = {f.name: f for f in stats.features}
    assert stats.version == 0
    assert stats.item_count == 2000
    assert by_name["age"].inferred_type == "Integral"
    assert by_name["income"].inferred_type == "Fractional"
    assert by_name["region"].inferred_type == "String"
    income = by_name["income"].numerical_statistics
    assert income is not None
    assert len(income.buckets) == 10
    assert sum(b.count for b in income.buckets) == 2000
    assert income.mean == pytest.approx(baseline_frame["income"].mean())
    assert income.std_dev == pytest.approx(baseline_frame["income"].std(ddof=0))
    assert by_name["region"].string_statistics.distinct_count == 3  # type: ignore[union-attr]
    cons = {f.name: f for f in constraints.features}
    assert cons["region"].domains == ["east", "north", "south"]
    assert cons["age"].completeness == 1.0
    assert cons["age"].is_non_negative is True
    config = constraints.monitoring_config
    assert config.datatype_check_threshold == 0.1
    assert config.distribution_constraints.comparison_method == "Robust"
    assert "monitoring_config" in constraints.model_dump()


def test_clean_frame_has_no_violations(
    rng: np.random.Generator, baseline_frame: pd.DataFrame
) -> None:
    stats, constraints = suggest_baseline(baseline_frame)
    assert check_constraints(constraints, compute_statistics(_clean(rng)), baseline=stats) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda df: df.drop(columns=["region"]), ("region", "missing_column_check")),
        (lambda df: df.assign(extra=1), ("extra", "extra_column_check")),
        (
            lambda df: df.assign(income=df["income"].where(df.index % 5 != 0)),
            ("income", "completeness_check"),
        ),
        (
            lambda df: df.assign(age=df["age"].astype(object).where(df.index % 4 != 0, "old")),
            ("age", "data_type_check"),
        ),
        (
            lambda df: df.assign(age=df["age"] + 0.5),  # fractional values in an Integral column
            ("age", "data_type_check"),
        ),
        (
            lambda df: df.assign(region=df["region"].where(df.index % 3 != 0, "atlantis")),
            ("region", "categorical_values_check"),
        ),
        (lambda df: df.assign(income=df["income"] * 1.5), ("income", "baseline_drift_check")),
        (
            lambda df: df.assign(region=np.where(df.index % 10 < 8, "north", df["region"])),
            ("region", "baseline_drift_check"),
        ),
    ],
    ids=[
        "missing_column",
        "extra_column",
        "completeness",
        "data_type_strings",
        "data_type_fractional",
        "categorical_values",
        "baseline_drift_numeric",
        "baseline_drift_categorical",
    ],
)
def test_each_violation_type_fires(
    rng: np.random.Generator,
    baseline_frame: pd.DataFrame,
    mutate: object,
    expected: tuple[str, str],
) -> None:
    stats, constraints = suggest_baseline(baseline_frame)
    current = mutate(_clean(rng))  # type: ignore[operator]
    violations = check_constraints(constraints, compute_statistics(current), baseline=stats)
    assert expected in _types(violations)
    assert all(v.description for v in violations)


def test_linf_robust_formula() -> None:
    # Deequ: max(0, linf_simple - c(alpha) * sqrt((n + m) / (n m))), c(alpha) = 1.8
    assert linf_robust(0.3, 100, 100) == pytest.approx(0.3 - 1.8 * math.sqrt(200 / 10000))
    assert linf_robust(0.1, 20, 20) == 0.0
    c_alpha = math.sqrt(-math.log(0.05 / 2) / 2)
    assert linf_robust(0.5, 50, 80, c_alpha) == pytest.approx(0.5 - c_alpha * math.sqrt(130 / 4000))


def test_linf_numeric_is_ks_distance(rng: np.random.Generator) -> None:
    from scipy import stats as st

    a, b = rng.normal(0, 1, 5000), rng.normal(0.4, 1, 4000)
    qa = np.quantile(a, np.linspace(0, 1, 1001)).tolist()
    qb = np.quantile(b, np.linspace(0, 1, 1001)).tolist()
    assert linf_numeric(qa, qb) == pytest.approx(st.ks_2samp(a, b).statistic, abs=0.002)


def test_linf_categorical() -> None:
    assert linf_categorical({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(0.3)
    assert linf_categorical({"a": 10}, {"b": 10}) == pytest.approx(1.0)


def test_small_samples_do_not_fire_robust_drift(rng: np.random.Generator) -> None:
    base = pd.DataFrame({"x": rng.normal(0, 1, 30)})
    cur = pd.DataFrame({"x": rng.normal(0.3, 1, 30)})
    stats, constraints = suggest_baseline(base)
    assert check_constraints(constraints, compute_statistics(cur), baseline=stats) == []
