"""Demo data, generated (nothing is downloaded): benefit applications with an eligibility label.

The columns look like what an agency holds: income, household size, age, region, employment
status, months at the current address, a prior-claims count, and ``sex`` as a protected
attribute (for the bias work that builds on it). The label follows a noisy rule of the kind a
caseworker applies. ``drifted=True`` gives a later batch whose distribution has moved: incomes
rose, the applicant mix shifted towards younger, urban and self-employed people, and a new
region code appears.
"""

from __future__ import annotations

from typing import Any

__all__ = ["benefit_applications"]

REGIONS = ["north", "south", "east", "west", "central"]
EMPLOYMENT = ["employed", "unemployed", "self-employed", "retired", "student"]


def benefit_applications(rows: int = 5_000, *, seed: int = 7, drifted: bool = False) -> Any:
    """A ``pandas.DataFrame`` of synthetic benefit applications with an ``eligible`` label.

    Example:
        >>> frame = benefit_applications(100, seed=1)
        >>> sorted(frame.columns)[:3]
        ['age', 'eligible', 'employment_status']
    """
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed + (1_000 if drifted else 0))
    age = rng.normal(34 if drifted else 45, 14, rows).clip(18, 90).round().astype("int64")
    household = rng.poisson(2.4, rows).clip(1, 9).astype("int64")
    base = rng.lognormal(10.15 if drifted else 10.0, 0.45, rows)
    income = (base * (1.25 if drifted else 1.0)).round(2)
    region_p = [0.15, 0.15, 0.15, 0.15, 0.40] if drifted else [0.25, 0.25, 0.2, 0.2, 0.1]
    region = rng.choice(REGIONS, rows, p=region_p).astype(object)
    if drifted:  # a region code the model never saw
        region[rng.random(rows) < 0.05] = "islands"
    employment_p = [0.45, 0.15, 0.3, 0.05, 0.05] if drifted else [0.5, 0.2, 0.1, 0.15, 0.05]
    employment = rng.choice(EMPLOYMENT, rows, p=employment_p)
    months = rng.exponential(40, rows).round().astype("int64")
    prior = rng.poisson(0.6, rows).astype("int64")
    sex = rng.choice(["female", "male"], rows, p=[0.52, 0.48])
    per_person = income / household
    score = (
        -per_person / 6_000
        + 0.9 * (employment == "unemployed")
        + 0.4 * (employment == "student")
        + 0.25 * prior
        - 0.004 * months
        + rng.normal(0, 0.6, rows)
    )
    eligible = (score > np.quantile(score, 0.62)).astype("int64")
    frame = pd.DataFrame(
        {
            "income": income,
            "household_size": household,
            "age": age,
            "region": region,
            "employment_status": employment,
            "months_at_address": months,
            "prior_claims": prior,
            "sex": sex,
            "eligible": eligible,
        }
    )
    # Missing values, as real forms have them.
    frame.loc[rng.random(rows) < 0.03, "income"] = np.nan
    frame.loc[rng.random(rows) < 0.02, "months_at_address"] = pd.NA
    frame["months_at_address"] = frame["months_at_address"].astype("Int64")
    frame["region"] = frame["region"].astype(str)
    return frame
