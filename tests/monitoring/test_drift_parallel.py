"""Large frames are compared a column per thread, the baseline statistics reuse the drift
tests' sorted values, and quantiles of sorted values skip numpy's partition: none of it may
change a single number of the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from civicml.monitoring import _parallel, drift_report
from civicml.monitoring.constraints import (
    _QUANTILE_RANKS,
    _sorted_quantiles,
    column_statistics,
    compute_statistics,
)


def _frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)

    def frame(shift: float) -> pd.DataFrame:
        income = rng.normal(1500 + shift, 300, rows)
        income[rng.random(rows) < 0.02] = np.nan
        return pd.DataFrame(
            {
                "income": income,
                "age": rng.integers(18, 90, rows),
                "household": rng.integers(1, 6, rows),  # few values: categorical
                "region": pd.Series(rng.choice(["north", "south", "east"], rows), dtype="str"),
                "mixed": pd.Series(rng.choice(["1", "2.5", "x", None], rows), dtype=object),
                "flag": rng.random(rows) < 0.3,
            }
        )

    return frame(0.0), frame(200.0)


def test_threads_and_reused_sorts_give_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    reference, current = _frames(40_000)  # 80,000 rows: over the threads' floor
    monkeypatch.setattr(_parallel, "usable_cpus", lambda: 4)
    threaded = drift_report(reference, current)
    monkeypatch.setattr(_parallel, "usable_cpus", lambda: 1)
    serial = drift_report(reference, current)
    assert threaded.model_dump() == serial.model_dump()
    assert threaded.columns[0].drift_detected is True  # income moved by 2/3 of its sd
    for frame in (reference, current):
        whole = compute_statistics(frame)
        assert whole == compute_statistics(
            frame, presorted={"income": np.sort(frame["income"].dropna().to_numpy())}
        )
        age = column_statistics("age", frame["age"])
        assert whole == compute_statistics(frame, computed={"age": age})


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000, 1001, 54_321])
def test_quantiles_of_sorted_values_are_numpys(n: int) -> None:
    rng = np.random.default_rng(n)
    for values in (rng.normal(size=n), rng.integers(0, 7, n).astype(float)):
        ascending = np.sort(values)
        assert np.array_equal(
            _sorted_quantiles(ascending, _QUANTILE_RANKS), np.quantile(ascending, _QUANTILE_RANKS)
        )


def test_the_wasserstein_sum_in_blocks_is_scipys() -> None:
    from scipy.stats import wasserstein_distance

    from civicml.monitoring.drift import _BLOCK, wasserstein_normed

    rng = np.random.default_rng(5)
    ref = np.sort(rng.normal(0, 1, _BLOCK))
    cur = np.sort(np.round(rng.normal(0.2, 1.3, _BLOCK // 2 + 7), 2))  # ties, several blocks
    expected = wasserstein_distance(ref, cur) / np.std(ref)
    assert wasserstein_normed(ref, cur) == pytest.approx(expected, rel=1e-12)
