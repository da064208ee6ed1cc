"""Drift statistics checked against SciPy; verdicts in both size regimes (anchors B3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from civicml.monitoring import DriftInputError, drift_report
from civicml.monitoring.drift import choose_stattest, infer_kind, psi, wasserstein_normed
from tests.monitoring.conftest import make_frame


def _col(report, name):
    return next(c for c in report.columns if c.column == name)


def test_small_reference_uses_ks_chisquare_z_and_matches_scipy(rng: np.random.Generator) -> None:
    ref, cur = make_frame(rng, 800, drifted=False), make_frame(rng, 600, drifted=True)
    report = drift_report(ref, cur, check_constraints=False)

    income = _col(report, "income")
    expected = stats.ks_2samp(ref["income"], cur["income"])
    assert income.stattest == "ks"
    assert income.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert income.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert income.drift_detected
    assert income.threshold == 0.05

    stable = _col(report, "stable_income")
    assert stable.stattest == "ks"
    assert not stable.drift_detected

    region = _col(report, "region")
    keys = sorted(set(ref["region"]) | set(cur["region"]))
    f_obs = [int((cur["region"] == k).sum()) for k in keys]
    f_exp = [int((ref["region"] == k).sum()) * len(cur) / len(ref) for k in keys]
    chi = stats.chisquare(f_obs, f_exp)
    assert region.stattest == "chisquare"
    assert region.statistic == pytest.approx(chi.statistic, rel=1e-9)
    assert region.p_value == pytest.approx(chi.pvalue, rel=1e-9, abs=1e-300)
    assert region.drift_detected
    assert not _col(report, "household").drift_detected

    urban = _col(report, "urban")
    assert urban.stattest == "z"
    p1, p2 = ref["urban"].mean(), cur["urban"].mean()
    pooled = (p1 * len(ref) + p2 * len(cur)) / (len(ref) + len(cur))
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / len(ref) + 1 / len(cur)))
    assert abs(urban.statistic) == pytest.approx(abs(z), rel=1e-9)
    assert urban.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert not urban.drift_detected


def test_large_reference_uses_wasserstein_and_jensenshannon(rng: np.random.Generator) -> None:
    ref, cur = make_frame(rng, 5000, drifted=False), make_frame(rng, 4000, drifted=True)
    report = drift_report(ref, cur, check_constraints=False)

    income = _col(report, "income")
    expected = stats.wasserstein_distance(ref["income"], cur["income"]) / np.std(ref["income"])
    assert income.stattest == "wasserstein"
    assert income.statistic == pytest.approx(expected, rel=1e-9)
    assert income.p_value is None
    assert income.drift_detected
    assert not _col(report, "stable_income").drift_detected

    region = _col(report, "region")
    keys = sorted(set(ref["region"]) | set(cur["region"]))
    p = [float((ref["region"] == k).mean()) for k in keys]
    q = [float((cur["region"] == k).mean()) for k in keys]
    assert region.stattest == "jensenshannon"
    assert region.statistic == pytest.approx(distance.jensenshannon(p, q), rel=1e-9)
    assert region.threshold == 0.1
    assert region.drift_detected
    assert not _col(report, "household").drift_detected
    assert _col(report, "urban").stattest == "jensenshannon"

    assert report.n_drifted == 2
    assert report.n_columns == 6
    assert not report.dataset_drift  # 2/6 < 0.5
    assert drift_report(ref, cur, drift_share=0.3, check_constraints=False).dataset_drift


def test_wasserstein_normed_matches_scipy_with_ties(rng: np.random.Generator) -> None:
    a = np.sort(rng.integers(0, 30, 3000).astype(float))
    b = np.sort(rng.integers(5, 40, 2000).astype(float))
    expected = stats.wasserstein_distance(a, b) / np.std(a)
    assert wasserstein_normed(a, b) == pytest.approx(expected, rel=1e-12)


def test_psi_against_hand_computed_example() -> None:
    # bins: ref 50/30/20 %, cur 30/30/40 %
    # PSI = (.5-.3)ln(.5/.3) + 0 + (.2-.4)ln(.2/.4) = 0.2·0.510826 + 0.2·0.693147 = 0.240795
    assert psi(np.array([0.5, 0.3, 0.2]), np.array([0.3, 0.3, 0.4])) == pytest.approx(
        0.2407945, rel=1e-6
    )
    # empty bin filled with 0.0001 (Evidently's feel_zeroes): (.5-1e-4)·ln(.5/1e-4) + …
    value = psi(np.array([0.5, 0.5]), np.array([0.0, 1.0]))
    assert value == pytest.approx(
        (0.5 - 1e-4) * np.log(0.5 / 1e-4) + (0.5 - 1.0) * np.log(0.5), rel=1e-9
    )


def test_psi_in_report_uses_sturges_bins(rng: np.random.Generator) -> None:
    ref = pd.DataFrame({"x": rng.normal(0, 1, 3000)})
    cur = pd.DataFrame({"x": rng.normal(0.3, 1, 2000)})
    combined = np.concatenate([ref["x"], cur["x"]])
    edges = np.histogram_bin_edges(combined, bins="sturges")
    r = np.histogram(ref["x"], edges)[0] / 3000
    c = np.histogram(cur["x"], edges)[0] / 2000
    report = drift_report(ref, cur, check_constraints=False)
    assert report.columns[0].psi == pytest.approx(psi(r, c), rel=1e-12)


def test_choose_stattest_table() -> None:
    assert choose_stattest("numeric", 6, 1000) == "ks"
    assert choose_stattest("numeric", 5, 1000) == "chisquare"
    assert choose_stattest("numeric", 2, 1000) == "z"
    assert choose_stattest("numeric", 6, 1001) == "wasserstein"
    assert choose_stattest("numeric", 5, 1001) == "jensenshannon"
    assert choose_stattest("categorical", 3, 10) == "chisquare"
    assert choose_stattest("categorical", 50, 5000) == "jensenshannon"


def test_infer_kind_follows_evidently() -> None:
    assert infer_kind(pd.Series([1.0, 2.0])) == "numeric"
    assert infer_kind(pd.Series(range(11))) == "numeric"
    assert infer_kind(pd.Series(range(10))) == "categorical"
    assert infer_kind(pd.Series(["a", "b"])) == "categorical"
    assert infer_kind(pd.Series([True, False])) == "categorical"


def test_missing_shares_type_violations_and_overrides(rng: np.random.Generator) -> None:
    ref = pd.DataFrame({"amount": rng.normal(100, 10, 500), "code": rng.integers(0, 50, 500)})
    amounts: list[object] = list(rng.normal(100, 10, 400))
    amounts[:20] = ["n/a"] * 20
    amounts[20:60] = [None] * 40
    cur = pd.DataFrame({"amount": amounts, "code": rng.integers(0, 50, 400)})
    report = drift_report(
        ref, cur, categorical=["code"], stattest={"amount": "psi"}, check_constraints=False
    )
    amount = _col(report, "amount")
    assert amount.type_violations == 20
    assert amount.missing_share_current == pytest.approx(40 / 400)
    assert amount.missing_share_reference == 0.0
    assert amount.current_count == 340
    assert amount.stattest == "psi"
    assert amount.statistic == amount.psi
    assert _col(report, "code").kind == "categorical"
    assert _col(report, "code").stattest == "chisquare"


def test_all_missing_current_column_is_reported_not_tested() -> None:
    ref = pd.DataFrame({"x": np.arange(100.0)})
    cur = pd.DataFrame({"x": [np.nan] * 10})
    col = drift_report(ref, cur, check_constraints=False).columns[0]
    assert col.statistic is None
    assert not col.drift_detected
    assert col.note is not None
    assert "current" in col.note


def test_bad_input_errors() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(DriftInputError, match=r"\[.y.\] are not in the reference frame"):
        drift_report(frame, frame, columns=["y"])
    with pytest.raises(DriftInputError, match="Unknown test 'kl'"):
        drift_report(frame, frame, stattest="kl")  # type: ignore[arg-type]
    with pytest.raises(DriftInputError, match="drift_share must be in"):
        drift_report(frame, frame, drift_share=0)
    with pytest.raises(DriftInputError, match="needs a numeric column"):
        drift_report(pd.DataFrame({"c": ["a", "b"]}), pd.DataFrame({"c": ["a"]}), stattest="ks")


def test_json_form_has_the_required_fields(rng: np.random.Generator) -> None:
    ref, cur = make_frame(rng, 300, drifted=False), make_frame(rng, 300, drifted=True)
    data = drift_report(ref, cur).model_dump(mode="json")
    column = data["columns"][0]
    for key in (
        "column",
        "kind",
        "stattest",
        "statistic",
        "p_value",
        "threshold",
        "drift_detected",
        "psi",
        "missing_share_reference",
        "missing_share_current",
        "type_violations",
    ):
        assert key in column
    assert {"dataset_drift", "n_drifted", "n_columns", "violations"} <= data.keys()
