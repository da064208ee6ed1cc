"""A seeded, public-sector-like frame: benefit applications with an eligibility label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

REGIONS = ["North", "South", "East", "West", "Capital"]
EMPLOYMENT = ["employed", "unemployed", "self-employed", "retired", "student"]
FAST = {
    "logistic": {},
    "linear": {},
    "random_forest": {"n_estimators": 30},
    "lightgbm": {"n_estimators": 60},
}


def benefit_applications(rows: int, seed: int) -> pd.DataFrame:
    """Applications with missing values sprinkled in, a noisy eligibility rule and a benefit."""
    rng = np.random.default_rng(seed)
    household = rng.integers(1, 8, rows)
    employment = rng.choice(EMPLOYMENT, rows, p=[0.5, 0.15, 0.1, 0.15, 0.1])
    region = rng.choice(REGIONS, rows)
    age = rng.integers(18, 90, rows)
    income = np.round(rng.lognormal(10.0, 0.5, rows), 2)
    income[employment == "unemployed"] *= 0.3
    disability = rng.random(rows) < 0.12
    threshold = 12_000 + 4_500 * household + np.where(region == "Capital", 6_000, 0)
    score = (threshold - income) / 5_000 + 1.2 * disability + 0.8 * (employment == "unemployed")
    eligible = score + rng.normal(0, 0.6, rows) > 0
    benefit = (
        np.clip(threshold - income, 0, None) * 0.4 + 150 * household + rng.normal(0, 300, rows)
    )
    frame = pd.DataFrame(
        {
            "income": income,
            "household_size": household,
            "age": age,
            "region": region,
            "employment_status": employment,
            "has_disability": disability,
            "applied_at": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 24, rows), unit="h"),
            "eligible": eligible,
            "monthly_benefit": np.round(benefit, 2),
        }
    )
    for column, share in (("income", 0.05), ("region", 0.04), ("employment_status", 0.03)):
        frame.loc[rng.random(rows) < share, column] = None
    return frame


@pytest.fixture
def seed() -> int:
    return 7


@pytest.fixture
def applications(seed: int) -> pd.DataFrame:
    return benefit_applications(1_200, seed)


@pytest.fixture
def eligibility(applications: pd.DataFrame) -> pd.DataFrame:
    """The classification frame: features and the ``eligible`` label."""
    return applications.drop(columns=["monthly_benefit"])


@pytest.fixture
def benefit(applications: pd.DataFrame) -> pd.DataFrame:
    """The regression frame: features and the ``monthly_benefit`` target."""
    return applications.drop(columns=["eligible"])
