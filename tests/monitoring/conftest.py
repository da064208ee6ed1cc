"""Seeded data for the monitoring tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261123)


def _exact(rng: np.random.Generator, values: list[object], probs: list[float], n: int) -> object:
    """Exactly the given proportions, shuffled: an undrifted column that never fails by chance."""
    counts = np.floor(np.asarray(probs) * n).astype(int)
    counts[0] += n - counts.sum()
    return rng.permutation(np.repeat(np.array(values, dtype=object), counts))


def make_frame(rng: np.random.Generator, n: int, *, drifted: bool) -> pd.DataFrame:
    """Benefit applications: income (numeric), age (integers), region, household, flag.

    ``income`` and ``region`` drift strongly when ``drifted``; ``stable_income`` (stratified
    lognormal quantiles), ``household`` and ``urban`` (exact proportions) never do.
    """
    shift = 1.0 if drifted else 0.0
    ranks = (np.arange(n) + 0.5) / n
    return pd.DataFrame(
        {
            "income": rng.lognormal(10 + 0.5 * shift, 0.5, n),
            "stable_income": rng.permutation(stats.lognorm.ppf(ranks, 0.5, scale=np.exp(10))),
            "age": rng.integers(18, 90, n),
            "region": rng.choice(
                ["north", "south", "east", "west"],
                n,
                p=[0.1, 0.2, 0.3, 0.4] if drifted else [0.4, 0.3, 0.2, 0.1],
            ),
            "household": _exact(rng, ["single", "couple", "family"], [0.5, 0.3, 0.2], n),
            "urban": _exact(rng, [True, False], [0.6, 0.4], n).astype(bool),
        }
    )
