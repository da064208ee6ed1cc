"""Pre- and post-training bias metrics, defined as SageMaker Clarify defines them.

Pure computation on a pandas DataFrame — no database, no clock. Definitions, names and sign
conventions follow Clarify's documentation (``clarify-measure-data-bias.html``,
``clarify-measure-post-training-bias.html``; summarised in ``../shared/reference/anchors.md``
B1) and its open-source implementation ``smclarify`` (``bias/metrics/pretraining.py``,
``posttraining.py``, ``common.py``, ``report.py``):

* **Facet d** is the facet value analysed — one value, several values together, or for a
  continuous facet the rows *above* the threshold (Clarify's interval ``(threshold, max]``);
  **facet a** is every other row. Without ``facet_values`` every distinct value is analysed in
  turn against the rest, as Clarify does.
* The label is binarised: ``positive_label`` (one value or several) is the favourable outcome.
  KL, JS, LP, TVD and KS compare the distributions of this binary label in facets a and d.
* A positive difference points at facet d being worse off (``DPL = q_a - q_d``), except where
  Clarify's formula says otherwise (DI: 1 is parity; DRR, SD, DCR are ``d - a``). Each metric
  carries its formula and how to read it (:mod:`civicml.evaluation._bias_catalog`).
* Post-training metrics need predicted labels: a column of them, a probability column (scores
  above ``probability_threshold``, Clarify's default 0.5, are positive), or a ``model`` callable.

Differences from Clarify, on purpose:

* Zero denominators give ``None`` with a ``note`` instead of Clarify's ``divide`` rule (0 for
  0/0, ±infinity otherwise, 0 when both facets are infinite): a report must never hold
  ``Infinity``/``NaN``, and "0 = parity" must not be claimed where a rate does not exist.
  KL is ``None`` when facet d lacks a label value that facet a has (the divergence is infinite).
* KL, JS, LP, TVD and KS sum over both label values as the documented formulas do;
  ``smclarify``'s ``pdfs_aligned_nonzero`` first drops label values missing from either facet.
* FT follows the documentation's sign, ``(F⁺ - F⁻)/n_d`` with F⁺ the facet d members predicted
  negative whose facet a neighbours were predicted positive, so a positive FT means facet d is
  disadvantaged like every other difference; ``smclarify``'s code counts the two flip sets the
  other way round. Its k-NN (unscaled Euclidean, k = 5, or 1 when facet a has ≤ 9 rows) runs on
  the numeric and boolean feature columns; other columns are skipped rather than refused.
* Rows with a missing facet value are left out of that facet's analysis (noted in the report).
* SD (Specificity Difference, added to Clarify later) is reported with the post-training set.
* GE's range is given as ``[0, ∞)``: with alpha = 2 it is half the squared coefficient of
  variation of the benefit, which exceeds the ``[0, 0.5]`` quoted in anchors.md B1 when few rows
  benefit (e.g. 2.5 when one row in six has b = 1 and the rest b = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray
from sklearn.neighbors import KNeighborsClassifier  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError, closest
from civicml.evaluation._bias_catalog import CATALOG
from civicml.evaluation.schemas import (
    POSTTRAINING_CODES,
    PRETRAINING_CODES,
    BiasFacetKind,
    BiasFacetResult,
    BiasMetric,
    BiasMetricCode,
    BiasPredictionSource,
    BiasReport,
    BiasStage,
)

__all__ = ["posttraining_bias", "pretraining_bias"]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Model = Callable[[pd.DataFrame], Any]
_Value = tuple[float | None, str | None]

_MAX_AUTO_VALUES = 50  # more distinct facet values than this needs facet_values or a threshold
_FT_K, _FT_K_SMALL, _FT_SMALL_A = 5, 1, 9  # smclarify constants.py


@dataclass(frozen=True, slots=True)
class _Side:
    """Counts of one facet: rows, observed and predicted positives, confusion matrix."""

    n: int
    tn: int
    fp: int
    fn: int
    tp: int

    @classmethod
    def of(cls, cells: IntArray, mask: BoolArray) -> _Side:
        tn, fp, fn, tp = (int(c) for c in np.bincount(cells[mask], minlength=4))
        return cls(tn + fp + fn + tp, tn, fp, fn, tp)

    @property
    def pos(self) -> int:  # n_x(1)
        return self.tp + self.fn

    @property
    def neg(self) -> int:  # n_x(0)
        return self.tn + self.fp

    @property
    def pred_pos(self) -> int:  # n'_x(1)
        return self.tp + self.fp

    @property
    def pred_neg(self) -> int:  # n'_x(0)
        return self.tn + self.fn


@dataclass(frozen=True, slots=True)
class _FacetValue:
    label: str
    kind: BiasFacetKind
    d: BoolArray  # over the rows where the facet is present


@dataclass(frozen=True, slots=True)
class _Inputs:
    y: BoolArray
    yhat: BoolArray | None
    groups: IntArray | None


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def pretraining_bias(
    df: pd.DataFrame,
    *,
    label: str,
    positive_label: Any,
    facet: str | Sequence[str],
    facet_values: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
    threshold: float | Mapping[str, float] | None = None,
    group: str | None = None,
    metrics: Sequence[str] | None = None,
) -> BiasReport:
    """Clarify's pre-training bias metrics of the observed labels, per facet value.

    Computes CI, DPL, KL, JS, LP, TVD, KS and, when ``group`` is given, CDDL (Clarify's
    definitions, see the module docstring) for facet d = each facet value against facet a = the
    rest of the rows.

    Args:
        df: One row per case, with the label, facet and (optionally) group columns.
        label: Observed label column.
        positive_label: Label value, or list of values, that is the favourable outcome.
        facet: Protected attribute column, or a list of them (each analysed on its own).
        facet_values: Facet values to analyse, each against the rest; a tuple or list entry
            analyses those values together (Clarify's ``facet_values_or_threshold=[v1, v2]``).
            With several facets, a mapping facet → values. ``None``: every distinct value.
        threshold: For a continuous facet, facet d is the rows with a value above it; with
            several facets, a mapping facet → threshold.
        group: Column of strata for CDDL (conditional demographic disparity).
        metrics: Subset of codes to compute; default all.

    Returns:
        A :class:`~civicml.evaluation.schemas.BiasReport` with stage ``pre_training``.

    Raises:
        InvalidInputError: A column is missing, the label has no positive value, a facet value
            has no rows, facet a is empty, or an option is malformed.

    Example:
        >>> frame = pd.DataFrame({"sex": list("FFMM"), "ok": [0, 1, 1, 1]})
        >>> report = pretraining_bias(
        ...     frame, label="ok", positive_label=1, facet="sex", facet_values=["F"]
        ... )
        >>> report.result("sex", "F").metric("DPL").value
        0.5
    """
    return _run(
        df,
        stage="pre_training",
        codes=_select(PRETRAINING_CODES, metrics),
        label=label,
        positive_label=positive_label,
        facet=facet,
        facet_values=facet_values,
        threshold=threshold,
        group=group,
    )


def posttraining_bias(
    df: pd.DataFrame,
    *,
    label: str,
    positive_label: Any,
    facet: str | Sequence[str],
    predicted: str | None = None,
    predicted_probability: str | None = None,
    probability_threshold: float = 0.5,
    model: Model | None = None,
    facet_values: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
    threshold: float | Mapping[str, float] | None = None,
    group: str | None = None,
    features: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> BiasReport:
    """Clarify's post-training bias metrics of a model's predictions, per facet value.

    Computes DPPL, DI, DCAcc, DAR, DRR, AD, RD, SD, DCR, TE, FT, GE and, when ``group`` is
    given, CDDPL (Clarify's definitions, see the module docstring).

    Args:
        df: One row per case with the label, facet, prediction and feature columns.
        label: Observed label column.
        positive_label: Label value, or list of values, that is the favourable outcome; a
            predicted label is positive when it is one of them.
        facet: Protected attribute column, or a list of them.
        predicted: Column of predicted labels.
        predicted_probability: Column of scores; scores above ``probability_threshold`` are
            positive predictions. Used when ``predicted`` is not given.
        probability_threshold: Clarify's ``probability_threshold`` (default 0.5).
        model: Callable that returns one predicted label per row of the frame it gets (the
            ``features`` columns, or every column but the label); used when neither
            ``predicted`` nor ``predicted_probability`` is given.
        facet_values: As in :func:`pretraining_bias`.
        threshold: As in :func:`pretraining_bias`.
        group: Column of strata for CDDPL.
        features: Columns the flip test's k-NN compares (and the model gets); default every
            numeric or boolean column except the label, predictions, group and analysed facet.
        metrics: Subset of codes to compute; default all.

    Returns:
        A :class:`~civicml.evaluation.schemas.BiasReport` with stage ``post_training``.

    Raises:
        InvalidInputError: As :func:`pretraining_bias`; also when not exactly one source of
            predictions is given or the predictions are malformed.

    Example:
        >>> frame = pd.DataFrame(
        ...     {"sex": list("FFMM"), "ok": [1, 1, 1, 0], "pred": [0, 1, 1, 1], "x": [1, 2, 3, 4]}
        ... )
        >>> report = posttraining_bias(
        ...     frame, label="ok", positive_label=1, facet="sex", facet_values=["F"],
        ...     predicted="pred",
        ... )
        >>> report.result("sex", "F").metric("DI").value
        0.5
    """
    sources = [s for s in (predicted, predicted_probability, model) if s is not None]
    if len(sources) != 1:
        raise InvalidInputError(
            f"Post-training bias needs exactly one source of predictions; got {len(sources)}.",
            hint="Pass predicted='column of labels', predicted_probability='column of scores' "
            "or model=callable.",
        )
    return _run(
        df,
        stage="post_training",
        codes=_select(POSTTRAINING_CODES, metrics),
        label=label,
        positive_label=positive_label,
        facet=facet,
        facet_values=facet_values,
        threshold=threshold,
        group=group,
        predicted=predicted,
        predicted_probability=predicted_probability,
        probability_threshold=probability_threshold,
        model=model,
        features=features,
    )


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def _run(
    df: pd.DataFrame,
    *,
    stage: BiasStage,
    codes: list[BiasMetricCode],
    label: str,
    positive_label: Any,
    facet: str | Sequence[str],
    facet_values: Sequence[Any] | Mapping[str, Sequence[Any]] | None,
    threshold: float | Mapping[str, float] | None,
    group: str | None,
    predicted: str | None = None,
    predicted_probability: str | None = None,
    probability_threshold: float | None = None,
    model: Model | None = None,
    features: Sequence[str] | None = None,
) -> BiasReport:
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"Expected a pandas DataFrame, got {type(df).__name__}.")
    if df.empty:
        raise InvalidInputError("The data frame has no rows; bias needs at least one per facet.")
    facets = [facet] if isinstance(facet, str) else list(facet)
    if not facets:
        raise InvalidInputError("No facet given.", hint="Pass facet='sex' or facet=['sex', ...].")
    for col, role in [(label, "label"), *((f, "facet") for f in facets), (group, "group")]:
        _require_column(df, col, role)
    for col, role in ((predicted, "predicted"), (predicted_probability, "predicted_probability")):
        _require_column(df, col, role)
    for col in features or ():
        _require_column(df, col, "feature")

    positives = _as_list(positive_label)
    y = _positive_index(df, label, positives)
    source: BiasPredictionSource | None = None
    yhat: BoolArray | None = None
    if stage == "post_training":
        source, yhat = _predictions(
            df, label, positives, predicted, predicted_probability, probability_threshold,
            model, features,
        )  # fmt: skip
    inputs = _Inputs(y, yhat, _group_codes(df, group) if group is not None else None)
    ge = _ge(y, yhat) if yhat is not None and "GE" in codes else None

    notes: list[str] = []
    results: list[BiasFacetResult] = []
    excluded = {label, predicted, predicted_probability, group} - {None}
    for name in facets:
        present = np.asarray(df[name].notna(), dtype=bool)
        if not present.all():
            notes.append(
                f"Facet {name!r}: {int((~present).sum())} rows with a missing value were left out."
            )
        sub = df.loc[present]
        values = _facet_spec(name, facets, facet_values, threshold)
        ft_x = None
        if "FT" in codes and yhat is not None:
            ft_x = _ft_matrix(sub, features, excluded | {name})
        for fv in _facet_values(sub[name], name, *values):
            results.append(
                _facet_result(name, fv, codes, inputs, present, ft_x, ge, group is not None)
            )
    return BiasReport(
        stage=stage,
        label=label,
        positive_label=[str(v) for v in positives],
        predicted=(predicted or predicted_probability or ("model" if model else None)),
        prediction_source=source,
        probability_threshold=probability_threshold if source == "probability" else None,
        group=group,
        n_rows=len(df),
        facets=results,
        notes=notes,
    )


def _facet_result(
    name: str,
    fv: _FacetValue,
    codes: list[BiasMetricCode],
    inputs: _Inputs,
    present: BoolArray,
    ft_x: FloatArray | str | None,
    ge: _Value | None,
    has_group: bool,
) -> BiasFacetResult:
    y = inputs.y[present]
    yhat = inputs.yhat[present] if inputs.yhat is not None else np.zeros_like(y)
    d = fv.d
    a = ~d
    cells = (2 * y.astype(np.int64) + yhat.astype(np.int64)).astype(np.int64)
    sa, sd = _Side.of(cells, a), _Side.of(cells, d)
    values: dict[str, _Value] = {}
    for code in codes:
        if code in ("CDDL", "CDDPL"):
            if not has_group or inputs.groups is None:
                values[code] = (None, f"{code} needs a group column: pass group='...'.")
            else:
                outcome = y if code == "CDDL" else yhat
                values[code] = _cdd(d, outcome, inputs.groups[present], code)
        elif code == "FT":
            values[code] = _ft(ft_x, yhat, d)
        elif code == "GE":
            values[code] = ge if ge is not None else (None, "GE needs predicted labels.")
        else:
            values[code] = _SIMPLE[code](sa, sd)
    metrics = [_metric(code, *values[code], sa.n, sd.n) for code in codes]
    return BiasFacetResult(
        facet=name, facet_value=fv.label, facet_kind=fv.kind, n_a=sa.n, n_d=sd.n, metrics=metrics
    )


def _metric(
    code: BiasMetricCode, value: float | None, note: str | None, n_a: int, n_d: int
) -> BiasMetric:
    if value is not None and not math.isfinite(value):  # a guard: never Infinity/NaN in JSON
        value, note = None, f"{code} is not finite for these rows."
    info = CATALOG[code]
    return BiasMetric(
        code=code,
        name=info.name,
        value=None if value is None else float(value),
        description=info.description,
        interpretation=info.interpretation,
        range=info.range,
        parity=info.parity,
        n_a=n_a,
        n_d=n_d,
        note=note,
    )


# --------------------------------------------------------------------------------------
# Input checks and preparation
# --------------------------------------------------------------------------------------


def _require_column(df: pd.DataFrame, col: str | None, role: str) -> None:
    if col is None:
        return
    if col not in df.columns:
        names = [str(c) for c in df.columns]
        raise InvalidInputError(
            f"Column {col!r} ({role}) is not in the data frame.",
            hint=closest(str(col), names) or f"Columns: {', '.join(names[:20])}.",
        )


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _select(
    all_codes: tuple[BiasMetricCode, ...], wanted: Sequence[str] | None
) -> list[BiasMetricCode]:
    if wanted is None:
        return list(all_codes)
    unknown = [w for w in wanted if w not in all_codes]
    if unknown:
        raise InvalidInputError(
            f"Unknown bias metric {unknown[0]!r} for this stage.",
            hint=closest(unknown[0], all_codes) or f"Choose from {', '.join(all_codes)}.",
        )
    return [c for c in all_codes if c in wanted]


def _values_hint(series: pd.Series) -> str:
    seen = [str(v) for v in pd.unique(series.dropna())[:10]]
    return f"Values present: {', '.join(seen)}."


def _positive_index(df: pd.DataFrame, label: str, positives: list[Any]) -> BoolArray:
    col = df[label]
    if col.isna().any():
        raise InvalidInputError(
            f"Label column {label!r} has {int(col.isna().sum())} missing values.",
            hint="Drop or fill the rows without a label before measuring bias.",
        )
    y = np.asarray(col.isin(positives), dtype=bool)
    if not y.any():
        raise InvalidInputError(
            f"Label column {label!r} has no rows with the positive value "
            f"{', '.join(repr(v) for v in positives)}.",
            hint=_values_hint(col),
        )
    return y


def _predictions(
    df: pd.DataFrame,
    label: str,
    positives: list[Any],
    predicted: str | None,
    probability: str | None,
    probability_threshold: float | None,
    model: Model | None,
    features: Sequence[str] | None,
) -> tuple[BiasPredictionSource, BoolArray]:
    if predicted is not None:
        col = df[predicted]
        if col.isna().any():
            raise InvalidInputError(f"Predicted column {predicted!r} has missing values.")
        return "column", np.asarray(col.isin(positives), dtype=bool)
    if probability is not None:
        col = df[probability]
        if not pd.api.types.is_numeric_dtype(col.dtype) or col.isna().any():
            raise InvalidInputError(
                f"Probability column {probability!r} must hold numbers with no missing values.",
                hint="Pass predicted='...' for a column of predicted labels instead.",
            )
        return "probability", np.asarray(col.to_numpy(dtype=np.float64) > probability_threshold)
    model_fn = cast(Model, model)
    frame = df[list(features)] if features else df.drop(columns=[label])
    out = np.asarray(model_fn(frame)).reshape(-1)
    if out.shape[0] != len(df):
        raise InvalidInputError(
            f"The model returned {out.shape[0]} predictions for {len(df)} rows.",
            hint="The model callable must return one predicted label per row.",
        )
    return "model", np.asarray(pd.Series(out).isin(positives), dtype=bool)


def _group_codes(df: pd.DataFrame, group: str) -> IntArray:
    col = df[group]
    if col.isna().any():
        raise InvalidInputError(
            f"Group column {group!r} has {int(col.isna().sum())} missing values.",
            hint="Fill them with an explicit stratum such as 'unknown'.",
        )
    codes, _ = pd.factorize(col, sort=False)
    return np.asarray(codes, dtype=np.int64)


def _facet_spec(
    name: str,
    facets: list[str],
    facet_values: Sequence[Any] | Mapping[str, Sequence[Any]] | None,
    threshold: float | Mapping[str, float] | None,
) -> tuple[Sequence[Any] | None, float | None]:
    many = len(facets) > 1
    values: Sequence[Any] | None
    if isinstance(facet_values, Mapping):
        values = facet_values.get(name)
    elif facet_values is not None and many:
        raise InvalidInputError(
            "With several facets, facet_values must map each facet to its values.",
            hint="e.g. facet_values={'sex': ['F'], 'region': ['north']}",
        )
    else:
        values = facet_values
    cut: float | None
    if isinstance(threshold, Mapping):
        cut = threshold.get(name)
    elif threshold is not None and many:
        raise InvalidInputError(
            "With several facets, threshold must map each continuous facet to its threshold.",
            hint="e.g. threshold={'age': 40}",
        )
    else:
        cut = threshold
    if values is not None and cut is not None:
        raise InvalidInputError(
            f"Facet {name!r} got both facet_values and a threshold; pass one.",
            hint="facet_values for a categorical facet, threshold for a continuous one.",
        )
    return values, cut


def _facet_values(
    series: pd.Series, name: str, values: Sequence[Any] | None, cut: float | None
) -> list[_FacetValue]:
    if cut is not None:
        return [_threshold_facet(series, name, cut)]
    if values is None:
        distinct = list(pd.unique(series))
        if len(distinct) > _MAX_AUTO_VALUES:
            raise InvalidInputError(
                f"Facet {name!r} has {len(distinct)} distinct values; that looks continuous.",
                hint=f"Pass threshold=... (facet d = {name} above it) or facet_values=[...].",
            )
        try:
            distinct = sorted(distinct)
        except TypeError:
            distinct = sorted(distinct, key=str)
        specs: list[list[Any]] = [[v] for v in distinct]
    else:
        specs = [_as_list(v) if isinstance(v, list | tuple | set | frozenset) else [v]
                 for v in _as_list(values)]  # fmt: skip
        if not specs:
            raise InvalidInputError(f"facet_values for {name!r} is empty.")
    out = []
    for spec in specs:
        d = np.asarray(series.isin(spec), dtype=bool)
        text = ",".join(str(v) for v in spec)
        if not d.any():
            raise InvalidInputError(
                f"Facet value {text!r} of column {name!r} has no rows.",
                hint=closest(text, [str(v) for v in pd.unique(series)]) or _values_hint(series),
            )
        if d.all():
            raise InvalidInputError(
                f"Every row of column {name!r} is {text!r}: facet a (the rest) is empty.",
                hint="Bias compares facet d with the other rows; the data needs both.",
            )
        out.append(_FacetValue(text, "categorical", d))
    return out


def _threshold_facet(series: pd.Series, name: str, cut: float) -> _FacetValue:
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise InvalidInputError(
            f"Facet {name!r} is not numeric ({series.dtype}); a threshold needs numbers.",
            hint="Pass facet_values=[...] for a categorical facet.",
        )
    x = series.to_numpy(dtype=np.float64)
    d = x > cut
    top = float(np.max(x))
    if not d.any() or d.all():
        side = "above" if not d.any() else "at or below"
        raise InvalidInputError(
            f"No rows of facet {name!r} are {side} the threshold {cut:g} "
            f"(values range from {float(np.min(x)):g} to {top:g}).",
            hint="Choose a threshold inside that range.",
        )
    return _FacetValue(f"({cut:g}, {top:g}]", "continuous", d)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _gap(left: tuple[int, int, str], right: tuple[int, int, str], code: str, what: str) -> _Value:
    """``left_num/left_den - right_num/right_den``; ``None`` naming the empty denominator."""
    lv, rv = _rate(left[0], left[1]), _rate(right[0], right[1])
    if lv is None or rv is None:
        side = left[2] if lv is None else right[2]
        return None, f"{code} is undefined: facet {side} has no {what}."
    return lv - rv, None


def _pdf(side: _Side) -> FloatArray:
    return np.array([side.neg / side.n, side.pos / side.n])


def _kl_terms(p: FloatArray, q: FloatArray) -> float:
    mask = p > 0  # 0 · ln(0/q) = 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _kl(a: _Side, d: _Side) -> _Value:
    pa, pd_ = _pdf(a), _pdf(d)
    if np.any((pa > 0) & (pd_ == 0)):
        missing = "positive" if pd_[1] == 0 else "negative"
        return None, f"KL is infinite: facet d has no {missing} labels while facet a has some."
    return _kl_terms(pa, pd_), None


def _js(a: _Side, d: _Side) -> _Value:
    pa, pd_ = _pdf(a), _pdf(d)
    m = 0.5 * (pa + pd_)
    return 0.5 * (_kl_terms(pa, m) + _kl_terms(pd_, m)), None


def _di(a: _Side, d: _Side) -> _Value:
    qa, qd = a.pred_pos / a.n, d.pred_pos / d.n
    if qa == 0:
        return None, "DI is undefined: facet a has no positive predictions (q'_a = 0)."
    return qd / qa, None


def _te(a: _Side, d: _Side) -> _Value:
    return _gap((d.fn, d.fp, "d"), (a.fn, a.fp, "a"), "TE", "false positives")


_SIMPLE: dict[str, Callable[[_Side, _Side], _Value]] = {
    "CI": lambda a, d: ((a.n - d.n) / (a.n + d.n), None),
    "DPL": lambda a, d: (a.pos / a.n - d.pos / d.n, None),
    "KL": _kl,
    "JS": _js,
    "LP": lambda a, d: (float(np.linalg.norm(_pdf(a) - _pdf(d), 2)), None),
    "TVD": lambda a, d: (0.5 * float(np.abs(_pdf(a) - _pdf(d)).sum()), None),
    "KS": lambda a, d: (float(np.abs(_pdf(a) - _pdf(d)).max()), None),
    "DPPL": lambda a, d: (a.pred_pos / a.n - d.pred_pos / d.n, None),
    "DI": _di,
    "DCAcc": lambda a, d: _gap(
        (a.pos, a.pred_pos, "a"), (d.pos, d.pred_pos, "d"), "DCAcc", "positive predictions"
    ),
    "DAR": lambda a, d: _gap(
        (a.tp, a.pred_pos, "a"), (d.tp, d.pred_pos, "d"), "DAR", "positive predictions"
    ),
    "DRR": lambda a, d: _gap(
        (d.tn, d.pred_neg, "d"), (a.tn, a.pred_neg, "a"), "DRR", "negative predictions"
    ),
    "AD": lambda a, d: ((a.tp + a.tn) / a.n - (d.tp + d.tn) / d.n, None),
    "RD": lambda a, d: _gap((a.tp, a.pos, "a"), (d.tp, d.pos, "d"), "RD", "positive labels"),
    "SD": lambda a, d: _gap((d.tn, d.neg, "d"), (a.tn, a.neg, "a"), "SD", "negative labels"),
    "DCR": lambda a, d: _gap(
        (d.neg, d.pred_neg, "d"), (a.neg, a.pred_neg, "a"), "DCR", "negative predictions"
    ),
    "TE": _te,
}


def _cdd(d: BoolArray, outcome: BoolArray, groups: IntArray, code: str) -> _Value:
    """Clarify's CDD: ``(1/n) Σ_i n_i (n_d(0)_i/n(0)_i - n_d(1)_i/n(1)_i)``.

    As ``smclarify`` ``common.CDD``: a stratum without acceptances (or rejections) contributes
    0 for that share; no acceptances or no rejections at all leaves CDD undefined.
    """
    if not outcome.any() or outcome.all():
        kind = "acceptances" if not outcome.any() else "rejections"
        return None, f"{code} is undefined: there are no {kind} at all."
    size = int(groups.max()) + 1
    n_i = np.bincount(groups, minlength=size).astype(np.float64)
    pos_i = np.bincount(groups[outcome], minlength=size).astype(np.float64)
    neg_i = n_i - pos_i
    d_pos = np.bincount(groups[d & outcome], minlength=size).astype(np.float64)
    d_neg = np.bincount(groups[d & ~outcome], minlength=size).astype(np.float64)
    share_acc = np.divide(d_pos, pos_i, out=np.zeros(size), where=pos_i > 0)
    share_rej = np.divide(d_neg, neg_i, out=np.zeros(size), where=neg_i > 0)
    return float(np.sum(n_i * (share_rej - share_acc)) / np.sum(n_i)), None


def _ft_matrix(
    sub: pd.DataFrame, features: Sequence[str] | None, excluded: set[str | None]
) -> FloatArray | str:
    """The feature matrix of the flip test, or the reason there is none."""
    if features is not None:
        cols = list(features)
        bad = [c for c in cols if not pd.api.types.is_numeric_dtype(sub[c].dtype)]
        if bad:
            raise InvalidInputError(
                f"Flip-test feature {bad[0]!r} is not numeric ({sub[bad[0]].dtype}).",
                hint="FT's k-NN compares numbers: encode the column or leave it out of features.",
            )
    else:
        cols = [
            c
            for c in sub.columns
            if c not in excluded and pd.api.types.is_numeric_dtype(sub[c].dtype)
        ]
    if not cols:
        return "FT needs numeric feature columns for its nearest-neighbour search; none found."
    x = sub[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(x).any():
        return "FT needs complete numeric features; some rows have missing values."
    return cast(FloatArray, x)


def _ft(x: FloatArray | str | None, yhat: BoolArray, d: BoolArray) -> _Value:
    """Clarify's flip test: k-NN fitted on facet a's predictions, applied to facet d."""
    if x is None:
        return None, "FT needs predicted labels."
    if isinstance(x, str):
        return None, x
    a = ~d
    n_a = int(a.sum())
    knn = KNeighborsClassifier(n_neighbors=_FT_K if n_a > _FT_SMALL_A else _FT_K_SMALL)
    knn.fit(x[a], yhat[a])
    as_if_a = np.asarray(knn.predict(x[d]), dtype=bool)
    own = yhat[d]
    f_plus = int(np.count_nonzero(~own & as_if_a))
    f_minus = int(np.count_nonzero(own & ~as_if_a))
    return (f_plus - f_minus) / int(d.sum()), None


def _ge(y: BoolArray, yhat: BoolArray) -> _Value:
    """Generalized entropy index, alpha = 2, of the benefit ``ŷ - y + 1`` (``smclarify`` ``GE``)."""
    b = yhat.astype(np.float64) - y.astype(np.float64) + 1.0
    mean = float(b.mean())
    if mean == 0:
        return None, "GE is undefined: every prediction is a false negative (mean benefit 0)."
    return float(np.sum((b / mean) ** 2 - 1.0) / (2 * b.size)), None
