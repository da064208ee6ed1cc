"""Bias metrics: each against a hand computation of Clarify's formula (anchors.md B1), and
against Fairlearn wherever Fairlearn computes the same quantity."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    selection_rate,
    true_negative_rate,
    true_negative_rate_difference,
)
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn.metrics import accuracy_score, precision_score, recall_score

from civicml.core.errors import InvalidInputError
from civicml.evaluation import (
    BiasReport,
    posttraining_bias,
    pretraining_bias,
    render_bias_html,
)
from civicml.evaluation.schemas import POSTTRAINING_CODES, PRETRAINING_CODES

TOL = 1e-12
FEATURES = ["income", "age", "household_size"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def apps() -> pd.DataFrame:
    """Benefit applications: approval correlated with sex; a model that widens the gap."""
    rng = np.random.default_rng(20240611)
    n = 3000
    sex = rng.choice(["F", "M"], size=n, p=[0.45, 0.55])
    region = rng.choice(["north", "south", "east", "west"], size=n, p=[0.3, 0.3, 0.25, 0.15])
    male = sex == "M"
    income = rng.lognormal(10.1 + 0.15 * male, 0.45)
    age = rng.integers(18, 80, size=n)
    household = rng.integers(1, 7, size=n)
    region_effect = pd.Series(region).map({"north": 0.3, "south": -0.2, "east": 0.0, "west": 0.1})
    logit = (
        0.2
        + 0.6 * male
        - (income - 25_000) / 20_000
        + 0.25 * (household - 3)
        + region_effect.to_numpy()
    )
    approved = rng.random(n) < _sigmoid(logit)
    # The model: noisy, and with an extra push towards approving men (the known disparity).
    score = _sigmoid(logit + 0.8 * male - 0.3 + rng.normal(0, 0.8, size=n))
    return pd.DataFrame(
        {
            "sex": sex,
            "region": region,
            "income": income,
            "age": age,
            "household_size": household,
            "decision": np.where(approved, "approved", "rejected"),
            "predicted": np.where(score > 0.5, "approved", "rejected"),
            "score": score,
        }
    )


# --------------------------------------------------------------------------------------
# Hand computations, straight from the B1 formulas
# --------------------------------------------------------------------------------------


def _counts(df: pd.DataFrame, d: pd.Series) -> dict[str, dict[str, float]]:
    y = df["decision"] == "approved"
    yh = df["predicted"] == "approved"
    out = {}
    for name, m in (("a", ~d), ("d", d)):
        out[name] = {
            "n": float(m.sum()),
            "pos": float((y & m).sum()),
            "pred_pos": float((yh & m).sum()),
            "tp": float((y & yh & m).sum()),
            "fp": float((~y & yh & m).sum()),
            "fn": float((y & ~yh & m).sum()),
            "tn": float((~y & ~yh & m).sum()),
        }
        out[name]["neg"] = out[name]["n"] - out[name]["pos"]
        out[name]["pred_neg"] = out[name]["n"] - out[name]["pred_pos"]
    return out


def _hand_pre(df: pd.DataFrame, d: pd.Series) -> dict[str, float]:
    c = _counts(df, d)
    a, dd = c["a"], c["d"]
    qa, qd = a["pos"] / a["n"], dd["pos"] / dd["n"]
    pa, pd_ = np.array([1 - qa, qa]), np.array([1 - qd, qd])
    m = (pa + pd_) / 2
    return {
        "CI": (a["n"] - dd["n"]) / (a["n"] + dd["n"]),
        "DPL": qa - qd,
        "KL": float(sum(pa * np.log(pa / pd_))),
        "JS": 0.5 * float(sum(pa * np.log(pa / m)) + sum(pd_ * np.log(pd_ / m))),
        "LP": math.sqrt(float(sum((pa - pd_) ** 2))),
        "TVD": 0.5 * float(sum(abs(pa - pd_))),
        "KS": float(max(abs(pa - pd_))),
    }


def _hand_post(df: pd.DataFrame, d: pd.Series) -> dict[str, float]:
    c = _counts(df, d)
    a, dd = c["a"], c["d"]
    y = (df["decision"] == "approved").astype(float)
    yh = (df["predicted"] == "approved").astype(float)
    b = yh - y + 1
    return {
        "DPPL": a["pred_pos"] / a["n"] - dd["pred_pos"] / dd["n"],
        "DI": (dd["pred_pos"] / dd["n"]) / (a["pred_pos"] / a["n"]),
        "DCAcc": a["pos"] / a["pred_pos"] - dd["pos"] / dd["pred_pos"],
        "DAR": a["tp"] / (a["tp"] + a["fp"]) - dd["tp"] / (dd["tp"] + dd["fp"]),
        "DRR": dd["tn"] / (dd["tn"] + dd["fn"]) - a["tn"] / (a["tn"] + a["fn"]),
        "AD": (a["tp"] + a["tn"]) / a["n"] - (dd["tp"] + dd["tn"]) / dd["n"],
        "RD": a["tp"] / (a["tp"] + a["fn"]) - dd["tp"] / (dd["tp"] + dd["fn"]),
        "SD": dd["tn"] / (dd["tn"] + dd["fp"]) - a["tn"] / (a["tn"] + a["fp"]),
        "DCR": dd["neg"] / dd["pred_neg"] - a["neg"] / a["pred_neg"],
        "TE": dd["fn"] / dd["fp"] - a["fn"] / a["fp"],
        "GE": float(((b / b.mean()) ** 2 - 1).sum() / (2 * len(b))),
    }


def _hand_cdd(df: pd.DataFrame, d: pd.Series, outcome_col: str, group: str) -> float:
    total = 0.0
    for _, rows in df.groupby(group):
        ok = rows[outcome_col] == "approved"
        dr = d.loc[rows.index]
        n1, n0 = ok.sum(), (~ok).sum()
        acc = (dr & ok).sum() / n1 if n1 else 0.0
        rej = (dr & ~ok).sum() / n0 if n0 else 0.0
        total += len(rows) * (rej - acc)
    return total / len(df)


def _hand_ft(df: pd.DataFrame, d: pd.Series, k: int = 5) -> float:
    """Brute-force k-NN over facet a (Euclidean, unscaled), majority of the model's labels."""
    x = df[FEATURES].to_numpy(float)
    yh = (df["predicted"] == "approved").to_numpy()
    xa, ya, xd, yd = x[~d.to_numpy()], yh[~d.to_numpy()], x[d.to_numpy()], yh[d.to_numpy()]
    f_plus = f_minus = 0
    for row, own in zip(xd, yd, strict=True):
        nearest = np.argsort(((xa - row) ** 2).sum(axis=1))[:k]
        as_if_a = ya[nearest].sum() * 2 > k
        f_plus += int(not own and as_if_a)
        f_minus += int(own and not as_if_a)
    return (f_plus - f_minus) / len(xd)


def _values(report: BiasReport, facet: str, value: str) -> dict[str, float | None]:
    return {m.code: m.value for m in report.result(facet, value).metrics}


def _post(df: pd.DataFrame, **kwargs: object) -> BiasReport:
    base: dict[str, object] = {
        "label": "decision",
        "positive_label": "approved",
        "predicted": "predicted",
        "features": FEATURES,
    }
    base.update(kwargs)
    return posttraining_bias(df, **base)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Hand computations
# --------------------------------------------------------------------------------------


def test_pretraining_metrics_match_b1_formulas(apps: pd.DataFrame) -> None:
    report = pretraining_bias(
        apps, label="decision", positive_label="approved", facet="sex", group="region"
    )
    assert report.stage == "pre_training"
    assert [(f.facet, f.facet_value) for f in report.facets] == [("sex", "F"), ("sex", "M")]
    for value in ("F", "M"):
        d = apps["sex"] == value
        got = _values(report, "sex", value)
        assert list(got) == list(PRETRAINING_CODES)
        for code, expected in _hand_pre(apps, d).items():
            assert got[code] == pytest.approx(expected, abs=TOL), code
        assert got["CDDL"] == pytest.approx(_hand_cdd(apps, d, "decision", "region"), abs=TOL)
    # independent references for the divergences
    r = report.result("sex", "F")
    q = apps.groupby(apps["sex"] == "F")["decision"].apply(lambda s: (s == "approved").mean())
    pa, pd_ = np.array([1 - q[False], q[False]]), np.array([1 - q[True], q[True]])
    assert r.metric("KL").value == pytest.approx(entropy(pa, pd_), abs=TOL)
    assert r.metric("JS").value == pytest.approx(jensenshannon(pa, pd_) ** 2, abs=1e-12)
    # the data were generated with women approved less often: facet d = F is disadvantaged
    assert r.metric("DPL").value > 0.05
    assert r.n_d == int((apps["sex"] == "F").sum())
    assert r.n_a == len(apps) - r.n_d


def test_posttraining_metrics_match_b1_formulas(apps: pd.DataFrame) -> None:
    report = _post(apps, facet="sex", group="region")
    d = apps["sex"] == "F"
    got = _values(report, "sex", "F")
    assert list(got) == list(POSTTRAINING_CODES)
    for code, expected in _hand_post(apps, d).items():
        assert got[code] == pytest.approx(expected, abs=TOL), code
    assert got["CDDPL"] == pytest.approx(_hand_cdd(apps, d, "predicted", "region"), abs=TOL)
    assert got["FT"] == pytest.approx(_hand_ft(apps, d), abs=TOL)
    # the known disparity: the model approves women less often than men
    assert got["DPPL"] > 0.1
    assert got["DI"] < 0.8
    assert got["FT"] > 0
    assert report.prediction_source == "column"


def test_probability_and_model_sources_agree_with_label_column(apps: pd.DataFrame) -> None:
    by_column = _post(apps, facet="sex")
    by_score = _post(apps, facet="sex", predicted=None, predicted_probability="score")
    by_model = _post(
        apps,
        facet="sex",
        predicted=None,
        model=lambda x: np.where(apps.loc[x.index, "score"] > 0.5, "approved", "rejected"),
    )
    for other in (by_score, by_model):
        assert _values(other, "sex", "F") == _values(by_column, "sex", "F")
    assert by_score.probability_threshold == 0.5
    assert by_model.predicted == "model"


# --------------------------------------------------------------------------------------
# Fairlearn agreement
# --------------------------------------------------------------------------------------


def _fairlearn_inputs(df: pd.DataFrame, d: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = (df["decision"] == "approved").to_numpy(int)
    yh = (df["predicted"] == "approved").to_numpy(int)
    groups = np.where(d, "d", "a")
    return y, yh, groups


def _by_group(
    metric: Callable[..., float], y: np.ndarray, yh: np.ndarray, groups: np.ndarray
) -> pd.Series:
    return MetricFrame(metrics=metric, y_true=y, y_pred=yh, sensitive_features=groups).by_group


def _npv(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    neg = y_pred == 0
    return float((y_true[neg] == 0).mean())


@pytest.mark.parametrize(("facet", "value"), [("sex", "F"), ("sex", "M"), ("region", "north")])
def test_posttraining_agrees_with_fairlearn(apps: pd.DataFrame, facet: str, value: str) -> None:
    report = _post(apps, facet=facet)
    got = _values(report, facet, value)
    y, yh, g = _fairlearn_inputs(apps, apps[facet] == value)

    # DPPL = q'_a - q'_d: the signed selection-rate gap; |DPPL| = demographic parity difference
    sel = _by_group(selection_rate, y, yh, g)
    assert got["DPPL"] == pytest.approx(sel["a"] - sel["d"], abs=TOL)
    assert abs(got["DPPL"]) == pytest.approx(
        demographic_parity_difference(y, yh, sensitive_features=g), abs=TOL
    )
    # DI = q'_d / q'_a; Fairlearn's ratio is min/max, so min(DI, 1/DI)
    assert min(got["DI"], 1 / got["DI"]) == pytest.approx(
        demographic_parity_ratio(y, yh, sensitive_features=g), abs=TOL
    )
    # RD = recall_a - recall_d; |RD| = equal opportunity difference
    rec = _by_group(recall_score, y, yh, g)
    assert got["RD"] == pytest.approx(rec["a"] - rec["d"], abs=TOL)
    assert abs(got["RD"]) == pytest.approx(
        equal_opportunity_difference(y, yh, sensitive_features=g), abs=TOL
    )
    # AD = acc_a - acc_d; |AD| = MetricFrame(accuracy).difference()
    acc = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=yh, sensitive_features=g)
    assert got["AD"] == pytest.approx(acc.by_group["a"] - acc.by_group["d"], abs=TOL)
    assert abs(got["AD"]) == pytest.approx(acc.difference(), abs=TOL)
    # DAR = precision_a - precision_d
    prec = _by_group(precision_score, y, yh, g)
    assert got["DAR"] == pytest.approx(prec["a"] - prec["d"], abs=TOL)
    # SD = TNR_d - TNR_a; |SD| = true_negative_rate_difference
    tnr = _by_group(true_negative_rate, y, yh, g)
    assert got["SD"] == pytest.approx(tnr["d"] - tnr["a"], abs=TOL)
    assert abs(got["SD"]) == pytest.approx(
        true_negative_rate_difference(y, yh, sensitive_features=g), abs=TOL
    )
    # equalized odds = max(|TPR gap|, |FPR gap|) = max(|RD|, |SD|)
    assert max(abs(got["RD"]), abs(got["SD"])) == pytest.approx(
        equalized_odds_difference(y, yh, sensitive_features=g), abs=TOL
    )
    # DRR = NPV_d - NPV_a, disaggregated by MetricFrame
    npv = _by_group(_npv, y, yh, g)
    assert got["DRR"] == pytest.approx(npv["d"] - npv["a"], abs=TOL)


def test_pretraining_dpl_agrees_with_fairlearn(apps: pd.DataFrame) -> None:
    report = pretraining_bias(apps, label="decision", positive_label="approved", facet="region")
    for value in ("east", "north", "south", "west"):
        y, _, g = _fairlearn_inputs(apps, apps["region"] == value)
        got = report.result("region", value).metric("DPL").value
        sel = _by_group(selection_rate, y, y, g)  # the labels' own positive proportion
        assert got == pytest.approx(sel["a"] - sel["d"], abs=TOL)
        assert abs(got) == pytest.approx(
            demographic_parity_difference(y, y, sensitive_features=g), abs=TOL
        )


# --------------------------------------------------------------------------------------
# Facet forms
# --------------------------------------------------------------------------------------


def test_continuous_facet_with_threshold(apps: pd.DataFrame) -> None:
    report = _post(apps, facet="age", threshold=60)
    (result,) = report.facets
    assert result.facet_kind == "continuous"
    assert result.facet_value == f"(60, {apps['age'].max()}]"  # Clarify's interval label
    d = apps["age"] > 60
    assert result.n_d == int(d.sum())
    got = _values(report, "age", result.facet_value)
    for code, expected in _hand_post(apps, d).items():
        assert got[code] == pytest.approx(expected, abs=TOL), code
    pre = pretraining_bias(
        apps, label="decision", positive_label=["approved"], facet="income", threshold=30_000.5
    )
    assert pre.facets[0].metric("DPL").value == pytest.approx(
        _hand_pre(apps, apps["income"] > 30_000.5)["DPL"], abs=TOL
    )


def test_several_facets_at_once(apps: pd.DataFrame) -> None:
    report = _post(
        apps,
        facet=["sex", "region", "age"],
        facet_values={"sex": ["F"], "region": [("north", "east")]},
        threshold={"age": 60},
    )
    assert [(f.facet, f.facet_value) for f in report.facets] == [
        ("sex", "F"),
        ("region", "north,east"),
        ("age", f"(60, {apps['age'].max()}]"),
    ]
    d = apps["region"].isin(["north", "east"])
    got = _values(report, "region", "north,east")
    for code, expected in _hand_post(apps, d).items():
        assert got[code] == pytest.approx(expected, abs=TOL), code
    every_region = pretraining_bias(
        apps, label="decision", positive_label="approved", facet=["sex", "region"]
    )
    assert len(every_region.facets) == 2 + 4


def test_missing_facet_rows_are_left_out_with_a_note(apps: pd.DataFrame) -> None:
    df = apps.copy()
    df.loc[df.index[:10], "sex"] = None
    report = pretraining_bias(df, label="decision", positive_label="approved", facet="sex")
    assert report.notes == ["Facet 'sex': 10 rows with a missing value were left out."]
    r = report.result("sex", "F")
    assert r.n_a + r.n_d == len(df) - 10
    assert r.metric("DPL").value == pytest.approx(
        _hand_pre(df.iloc[10:], df["sex"].iloc[10:] == "F")["DPL"], abs=TOL
    )


# --------------------------------------------------------------------------------------
# Undefined values and errors
# --------------------------------------------------------------------------------------


def test_zero_denominators_give_null_with_a_note() -> None:
    df = pd.DataFrame(
        {
            "sex": ["F", "F", "F", "M", "M", "M"],
            "ok": [1, 1, 1, 1, 0, 1],
            "pred": [0, 0, 0, 1, 0, 1],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    post = posttraining_bias(
        df, label="ok", positive_label=1, facet="sex", facet_values=["F"], predicted="pred"
    )
    r = post.result("sex", "F")
    assert r.metric("DAR").value is None
    assert r.metric("DAR").note == "DAR is undefined: facet d has no positive predictions."
    assert r.metric("DCAcc").value is None
    assert r.metric("CDDPL").note == "CDDPL needs a group column: pass group='...'."
    assert r.metric("DPPL").value == pytest.approx(2 / 3)
    pre = pretraining_bias(df, label="ok", positive_label=1, facet="sex", facet_values=["F"])
    assert pre.facets[0].metric("KL").value is None  # facet d has no negative labels
    assert "infinite" in (pre.facets[0].metric("KL").note or "")
    for report in (pre, post):
        text = report.model_dump_json()
        assert "Infinity" not in text
        assert "NaN" not in text
        json.loads(text)
    no_prediction = posttraining_bias(
        df.assign(ok=1, pred=0), label="ok", positive_label=1, facet="sex", predicted="pred"
    )  # every prediction a false negative
    assert no_prediction.facets[0].metric("DI").value is None
    assert no_prediction.facets[0].metric("GE").value is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"facet": "sexx"}, "Column 'sexx' (facet) is not in the data frame."),
        ({"facet": "sex", "group": "regoin"}, "Column 'regoin' (group) is not in the data frame."),
        (
            {"facet": "sex", "facet_values": ["X"]},
            "Facet value 'X' of column 'sex' has no rows.",
        ),
        (
            {"facet": "sex", "positive_label": "yes"},
            "Label column 'decision' has no rows with the positive value 'yes'.",
        ),
        (
            {"facet": ["sex", "region"], "facet_values": ["F"]},
            "With several facets, facet_values must map each facet to its values.",
        ),
        (
            {"facet": "sex", "threshold": 3.0},
            "Facet 'sex' is not numeric",
        ),
        (
            {"facet": "age", "threshold": 500},
            "No rows of facet 'age' are above the threshold 500",
        ),
        ({"facet": "income"}, "Facet 'income' has 3000 distinct values; that looks continuous."),
        ({"facet": "sex", "metrics": ["DPX"]}, "Unknown bias metric 'DPX' for this stage."),
    ],
)
def test_pretraining_errors(apps: pd.DataFrame, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"label": "decision", "positive_label": "approved"}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        pretraining_bias(apps, **args)  # type: ignore[arg-type]


def test_errors_carry_hints(apps: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError) as err:
        pretraining_bias(apps, label="decision", positive_label="approved", facet="sexx")
    assert err.value.hint == "Did you mean 'sex'?"
    with pytest.raises(InvalidInputError) as err:
        pretraining_bias(apps, label="decision", positive_label="aproved", facet="sex")
    assert err.value.hint is not None
    assert "approved" in err.value.hint


def test_one_facet_value_only_leaves_facet_a_empty(apps: pd.DataFrame) -> None:
    women = apps[apps["sex"] == "F"]
    with pytest.raises(InvalidInputError, match=re.escape("facet a (the rest) is empty")):
        pretraining_bias(women, label="decision", positive_label="approved", facet="sex")


def test_posttraining_errors(apps: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="exactly one source of predictions; got 2"):
        _post(apps, facet="sex", predicted_probability="score")
    with pytest.raises(InvalidInputError, match="exactly one source of predictions; got 0"):
        _post(apps, facet="sex", predicted=None)
    with pytest.raises(InvalidInputError, match=re.escape("returned 2 predictions for 3000 rows")):
        _post(apps, facet="sex", predicted=None, model=lambda x: ["approved", "rejected"])
    with pytest.raises(InvalidInputError, match=re.escape("feature 'region' is not numeric")):
        _post(apps, facet="sex", features=["income", "region"])
    with pytest.raises(InvalidInputError, match=re.escape("Label column 'decision' has 1 miss")):
        _post(apps.assign(decision=apps["decision"].where(apps.index > 0)), facet="sex")


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_html_report_is_self_contained(apps: pd.DataFrame) -> None:
    df = apps.assign(region=apps["region"].replace({"north": "<b>north</b>"}))
    report = _post(df, facet=["sex", "region"], group="region")
    html = render_bias_html(report, title="Benefit <model> bias")
    parser = _Tags()
    parser.feed(html)
    parser.close()
    assert parser.tags.count("svg") == len(POSTTRAINING_CODES)  # one chart per metric
    assert parser.tags.count("script") == 0
    assert "http://" not in html
    assert "https://" not in html
    assert "<b>north</b>" not in html
    assert "&lt;b&gt;north&lt;/b&gt;" in html
    assert "Benefit &lt;model&gt; bias" in html
    pre = pretraining_bias(apps, label="decision", positive_label="approved", facet="sex")
    assert render_bias_html(pre).count("<svg") == len(PRETRAINING_CODES) - 0
