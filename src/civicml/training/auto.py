"""AutoML: every built-in algorithm, tuned and scored by k-fold cross-validation, and a choice
that says why (as SageMaker Autopilot's candidate report does).

The pieces, each a pure function the SDK's ``cm.train.auto`` wires to runs:

- :data:`SPACES` — the search space and the first (default) parameters of each algorithm;
- :func:`budget_shares` — how a time budget is split: a reserve for the final fit, the rest
  among the algorithms cheapest first, each getting an equal share of what is left when it
  starts (so time a fast algorithm does not use goes to the slower ones);
- :func:`cross_validate` — one candidate's k-fold score (mean, standard deviation, fit time,
  model size), stopping between folds when its deadline has passed;
- :func:`choose` — the winner: the best mean, unless a simpler candidate (more interpretable,
  then smaller) is within one standard deviation of it — then that one, and the explanation
  says so;
- :func:`render_report` — the candidate report: one self-contained HTML page with the
  leaderboard, an inline SVG chart of every candidate's score ± std, and the explanation.
"""

from __future__ import annotations

import math
import pickle
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.model_selection import KFold, StratifiedKFold  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.core.html_page import report_template
from civicml.training._metrics import classification_metrics, regression_metrics
from civicml.training._preprocess import build_preprocessor
from civicml.training._signature import conform, infer_signature
from civicml.training.tabular import ALGORITHMS, _estimator, _features, _labels, _plain
from civicml.training.tune import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    categorical,
    float_range,
    int_range,
)

__all__ = [
    "INTERPRETABILITY",
    "SPACES",
    "CVScore",
    "Choice",
    "budget_shares",
    "candidate_order",
    "choose",
    "cross_validate",
    "render_report",
]

#: Search space and first parameters per algorithm (the defaults are tried first).
SPACES: dict[str, tuple[dict[str, Param], dict[str, Any]]] = {
    "logistic": ({"C": float_range(1e-3, 100.0, log=True)}, {"C": 1.0}),
    "linear": ({"alpha": float_range(1e-3, 100.0, log=True)}, {"alpha": 1.0}),
    "random_forest": (
        {
            "n_estimators": int_range(30, 200),
            "min_samples_leaf": int_range(1, 10),
            "max_features": categorical(["sqrt", 0.5, 1.0]),
        },
        {"n_estimators": 100, "min_samples_leaf": 1, "max_features": "sqrt"},
    ),
    "lightgbm": (
        {
            "n_estimators": int_range(50, 300),
            "learning_rate": float_range(0.01, 0.3, log=True),
            "num_leaves": int_range(7, 63),
            "min_child_samples": int_range(5, 50),
        },
        {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20},
    ),
}
#: How readable each algorithm's model is (lower: easier to explain) and in what words.
INTERPRETABILITY: dict[str, tuple[int, str]] = {
    "logistic": (0, "high: one coefficient per feature"),
    "linear": (0, "high: one coefficient per feature"),
    "lightgbm": (1, "medium: boosted trees, explained with SHAP"),
    "random_forest": (1, "medium: a forest of deep trees, explained with SHAP"),
}
#: Relative cost per algorithm: the order they are tried in (cheapest first).
_COST = {"logistic": 1, "linear": 1, "lightgbm": 2, "random_forest": 3}
#: Share of the time budget kept for fitting the winner at the end.
FINAL_FIT_SHARE = 0.15


@dataclass(frozen=True, slots=True)
class CVScore:
    """One candidate's cross-validated score."""

    mean: float
    std: float
    folds: list[float]
    fit_time_s: float  # mean seconds per fold's fit
    model_size_bytes: int  # the last fold's fitted pipeline, serialised


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen candidate (a leaderboard row) and why."""

    winner: dict[str, Any]
    best: dict[str, Any]  # the candidate with the best mean (may be the winner)
    explanation: str
    simpler_within_std: bool


def candidate_order(task: str, algorithms: Sequence[str] | None = None) -> list[str]:
    """The algorithms for ``task`` (or those given), cheapest first.

    Raises:
        InvalidInputError: An unknown algorithm, or one that does not do ``task``.
    """
    names = (
        list(algorithms) if algorithms else [n for n in ALGORITHMS if task in ALGORITHMS[n].tasks]
    )
    for name in names:
        if name not in ALGORITHMS or name not in SPACES:
            raise InvalidInputError(
                f"Unknown algorithm {name!r} for AutoML.",
                hint="Choose among: " + ", ".join(SPACES) + ".",
            )
        if task not in ALGORITHMS[name].tasks:
            raise InvalidInputError(
                f"Algorithm {name!r} does not do {task}.",
                hint="Leave algorithms= out to try every algorithm that does.",
            )
    return sorted(dict.fromkeys(names), key=lambda n: (_COST.get(n, 9), n))


def budget_shares(time_budget_s: float, algorithms: Sequence[str]) -> tuple[float, float]:
    """``(search seconds, final-fit reserve)`` of a budget; each algorithm then gets
    ``(search deadline - now) / algorithms left`` when its turn comes."""
    if not math.isfinite(time_budget_s) or time_budget_s <= 0:
        raise InvalidInputError(
            f"time_budget must be a positive number of seconds, not {time_budget_s!r}.",
            hint="Give e.g. time_budget=60.",
        )
    if not algorithms:
        raise InvalidInputError("No algorithm to try.", hint="Leave algorithms= out.")
    reserve = time_budget_s * FINAL_FIT_SHARE
    return time_budget_s - reserve, reserve


def cross_validate(
    df: pd.DataFrame,
    target: str,
    *,
    task: str,
    algorithm: str,
    params: Mapping[str, Any],
    metric: str,
    folds: int,
    seed: int,
    features: list[str] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CVScore | None:
    """k-fold cross-validation of one candidate (stratified for classification).

    The same preprocessing and estimator as :func:`~civicml.training.fit_tabular`; ``metric``
    is a key of its validation metrics (``roc_auc``, ``rmse``, ...). ``should_stop()`` is
    asked before each fold: when it says so, ``None`` is returned (the candidate ran out of
    time).
    """
    spec = ALGORITHMS[algorithm]
    columns = _features(df, target, features)
    signature = infer_signature(df, columns)
    x = conform(df[columns], signature)
    y = _labels(df[target], task)  # type: ignore[arg-type]
    effective = {**spec.defaults(seed), **params}
    splitter = (
        StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        if task == "classification"
        else KFold(n_splits=folds, shuffle=True, random_state=seed)
    )
    scores: list[float] = []
    fit_times: list[float] = []
    pipeline: Pipeline | None = None
    for train_idx, valid_idx in splitter.split(x, y):
        if should_stop():
            return None
        pipeline = Pipeline(
            [
                ("preprocess", build_preprocessor(signature, linear=spec.linear)),
                ("model", _estimator(spec, algorithm, task, effective)),  # type: ignore[arg-type]
            ]
        )
        started = time.perf_counter()
        pipeline.fit(x.iloc[train_idx], y[train_idx])
        fit_times.append(time.perf_counter() - started)
        x_valid, y_valid = x.iloc[valid_idx], y[valid_idx]
        if task == "classification":
            classes = [_plain(c) for c in pipeline.classes_]
            found, _ = classification_metrics(
                y_valid, pipeline.predict(x_valid), pipeline.predict_proba(x_valid), classes
            )
        else:
            found = regression_metrics(y_valid, pipeline.predict(x_valid))
        if metric not in found:
            raise InvalidInputError(
                f"Metric {metric!r} is undefined on a fold of {algorithm} (it has "
                + ", ".join(sorted(found))
                + ").",
                hint="Pick another metric, or give more rows of each class.",
            )
        scores.append(float(found[metric]))
    return CVScore(
        mean=float(np.mean(scores)),
        std=float(statistics.pstdev(scores)),
        folds=scores,
        fit_time_s=float(np.mean(fit_times)),
        model_size_bytes=len(pickle.dumps(pipeline)),  # measured only: never loaded back
    )


def fold_count(df: pd.DataFrame, target: str, task: str, folds: int) -> int:
    """``folds``, lowered to the smallest class's rows (at least 2 folds).

    Raises:
        InvalidInputError: ``folds`` is below 2, or a class has fewer than 2 rows.
    """
    if folds < 2:
        raise InvalidInputError(
            f"folds must be at least 2, not {folds}.", hint="5-fold is the usual choice."
        )
    if task != "classification":
        return min(folds, len(df))
    smallest = int(df[target].value_counts().min())
    if smallest < 2:
        raise InvalidInputError(
            f"A class of {target!r} has a single row; cross-validation needs two per class.",
            hint="Add examples of that class or drop its row.",
        )
    return min(folds, smallest)


def choose(rows: Sequence[Mapping[str, Any]], *, metric: str, direction: str) -> Choice:
    """Pick the winner among complete leaderboard rows (``algorithm``, ``cv_mean``,
    ``cv_std``, ``fit_time_s``, ``model_size_bytes``).

    The best mean wins unless a simpler candidate — more interpretable, then smaller — scores
    within one standard deviation of the best's mean; then the simplest such candidate wins.

    Raises:
        InvalidInputError: No complete candidate.
    """
    done = [dict(r) for r in rows if r.get("cv_mean") is not None]
    if not done:
        raise InvalidInputError(
            "No AutoML candidate finished within the time budget.",
            hint="Give a larger time_budget, or fewer rows or algorithms.",
        )
    sign = -1.0 if direction == "maximize" else 1.0
    best = min(done, key=lambda r: (sign * r["cv_mean"], _simplicity(r)))
    near = [r for r in done if abs(r["cv_mean"] - best["cv_mean"]) <= best["cv_std"]]
    winner = min(near, key=lambda r: (_simplicity(r), sign * r["cv_mean"]))
    label = metric.removeprefix("cv_")
    best_text = (
        f"{best['algorithm']} (candidate {best['candidate']}) has the best cross-validated "
        f"{label}: {best['cv_mean']:.4f} ± {best['cv_std']:.4f}"
    )
    simpler = winner is not best and _simplicity(winner) < _simplicity(best)
    if simpler:
        explanation = (
            f"{best_text}. {winner['algorithm']} (candidate {winner['candidate']}) scores "
            f"{winner['cv_mean']:.4f} ± {winner['cv_std']:.4f}, within one standard deviation "
            f"of it, and is simpler (interpretability {_words(winner)}; "
            f"{_size(winner['model_size_bytes'])} against {_size(best['model_size_bytes'])}; "
            f"fit {winner['fit_time_s']:.3g} s against {best['fit_time_s']:.3g} s per fold), "
            "so it is chosen: a simpler model within the noise of the best is preferred."
        )
    else:
        others = [r for r in near if r is not best]
        explanation = (
            f"{best_text}; it is chosen"
            + (
                f" — {len(others)} other candidate(s) within one standard deviation are no simpler."
                if others
                else " — no other candidate comes within one standard deviation of it."
            )
            + f" Interpretability {_words(best)}; model {_size(best['model_size_bytes'])}; "
            f"fit {best['fit_time_s']:.3g} s per fold."
        )
        winner = best
    return Choice(winner=winner, best=best, explanation=explanation, simpler_within_std=simpler)


def _simplicity(row: Mapping[str, Any]) -> tuple[int, int]:
    return INTERPRETABILITY.get(row["algorithm"], (9, ""))[0], int(row["model_size_bytes"])


def _words(row: Mapping[str, Any]) -> str:
    return INTERPRETABILITY.get(row["algorithm"], (9, "unknown"))[1]


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"  # pragma: no cover


def describe_space(space: Mapping[str, Param]) -> dict[str, str]:
    """Each parameter's range in words: ``int 30..200``, ``float 0.001..100 (log)``."""
    out = {}
    for name, spec in space.items():
        if isinstance(spec, IntParam):
            out[name] = f"int {spec.low}..{spec.high}" + (" (log)" if spec.log else "")
        elif isinstance(spec, FloatParam):
            out[name] = f"float {spec.low:g}..{spec.high:g}" + (" (log)" if spec.log else "")
        elif isinstance(spec, CategoricalParam):
            out[name] = "one of " + ", ".join(map(str, spec.choices))
    return out


_CHART_W, _ROW_H, _LABEL_W, _PAD = 640, 18, 220, 8

_TEMPLATE = report_template(
    """{% extends "page.html" %}
{% block style %}
svg { display: block; max-width: 100%; height: auto; }
.bar { fill: #9db8e0; } .bar.win { fill: #2f7d32; } .err { stroke: #333; stroke-width: 1.5; }
.lbl { font-size: 11px; fill: #111; } .axis { stroke: #999; stroke-width: 1; }
tr.win td { background: #e6f4e6; font-weight: 600; }
.why { border-left: 4px solid #2f7d32; padding: .5rem .75rem; background: #f6fbf6; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
{% endblock %}
{% block body %}<main>
<h1>{{ title }}</h1>
<dl>
<dt>dataset</dt><dd>{{ board.dataset }}</dd>
<dt>target</dt><dd>{{ board.target }} ({{ board.task }})</dd>
<dt>metric</dt><dd>{{ board.metric }} ({{ board.direction }}), {{ board.folds }}-fold
cross-validation</dd>
<dt>time budget</dt><dd>{{ board.time_budget_s }} s (used {{ board.elapsed_s }} s)</dd>
<dt>candidates</dt><dd>{{ board.rows|length }}</dd>
</dl>
<h2>Choice</h2>
<p class="why">{{ board.explanation }}</p>
<h2>Scores</h2>
<figure><figcaption>Cross-validated {{ board.metric }}, mean ± one standard deviation; the
chosen candidate in green.</figcaption>
<svg viewBox="0 0 {{ chart.width }} {{ chart.height }}" role="img"
 aria-label="Candidate scores">
<line class="axis" x1="{{ chart.x0 }}" y1="0" x2="{{ chart.x0 }}" y2="{{ chart.height }}"/>
{% for bar in chart.bars %}
<text class="lbl" x="4" y="{{ bar.y + 12 }}">{{ bar.label }}</text>
<rect class="bar{% if bar.win %} win{% endif %}" x="{{ chart.x0 }}" y="{{ bar.y + 2 }}"
 width="{{ bar.w }}" height="{{ bar.h }}"/>
<line class="err" x1="{{ bar.lo }}" y1="{{ bar.y + 9 }}" x2="{{ bar.hi }}" y2="{{ bar.y + 9 }}"/>
<text class="lbl" x="{{ bar.tx }}" y="{{ bar.y + 12 }}">{{ bar.text }}</text>
{% endfor %}
</svg></figure>
<h2>Leaderboard</h2>
<div class="scroll"><table>
<tr><th>rank</th><th>candidate</th><th>algorithm</th><th>{{ board.metric }} mean</th>
<th>std</th><th>fit s / fold</th><th>model size</th><th>interpretability</th>
<th>parameters</th><th>run</th></tr>
{% for row in board.rows %}
<tr{% if row.candidate == board.winner.candidate %} class="win"{% endif %}>
<td class="n">{{ row.rank if row.rank is not none else "" }}</td>
<td class="n">{{ row.candidate }}</td><td>{{ row.algorithm }}</td>
<td class="n">{{ "%.4f"|format(row.cv_mean) if row.cv_mean is not none else row.state }}</td>
<td class="n">{{ "%.4f"|format(row.cv_std) if row.cv_std is not none else "" }}</td>
<td class="n">{{ "%.3g"|format(row.fit_time_s) if row.fit_time_s is not none else "" }}</td>
<td class="n">{{ size(row.model_size_bytes) if row.model_size_bytes is not none else "" }}</td>
<td>{{ row.interpretability }}</td>
<td>{% for k, v in row.params.items() %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}
{% endfor %}</td><td>{{ row.run_id or "" }}</td></tr>
{% endfor %}
</table></div>
<h2>Candidate definitions</h2>
<p>Each candidate is the algorithm's preprocessing (imputation, one-hot or ordinal encoding,
scaling for linear models) and estimator, with parameters searched (Optuna TPE, defaults first)
in these ranges:</p>
<div class="scroll"><table>
<tr><th>algorithm</th><th>search space</th><th>candidates</th><th>best mean</th><th>note</th></tr>
{% for a in board.algorithms %}
<tr><td>{{ a.algorithm }}</td>
<td>{% for k, v in a.space.items() %}{{ k }}: {{ v }}{% if not loop.last %}; {% endif %}
{% endfor %}</td><td class="n">{{ a.candidates }}</td>
<td class="n">{{ "%.4f"|format(a.best) if a.best is not none else "" }}</td>
<td>{{ a.note or "" }}</td></tr>
{% endfor %}
</table></div>
</main>{% endblock %}"""
)


def render_report(board: Mapping[str, Any]) -> str:
    """The candidate report page for a leaderboard document (what ``automl/leaderboard.json``
    holds)."""
    return _TEMPLATE.render(
        title=f"AutoML candidates: {board['target']} on {board['dataset']}",
        board=board,
        chart=_chart(board),
        size=_size,
    )


def _chart(board: Mapping[str, Any]) -> dict[str, Any]:
    rows = [r for r in board["rows"] if r.get("cv_mean") is not None][:30]
    lows = [r["cv_mean"] - r["cv_std"] for r in rows] or [0.0]
    highs = [r["cv_mean"] + r["cv_std"] for r in rows] or [1.0]
    lo = min(0.0, *lows)
    hi = max(highs) if max(highs) > lo else lo + 1.0
    x0, span = _LABEL_W, _CHART_W - _LABEL_W - 70

    def x(value: float) -> float:
        return round(float(x0 + span * (value - lo) / (hi - lo)), 1)

    bars = []
    for i, row in enumerate(rows):
        y = _PAD + i * _ROW_H
        mean, std = row["cv_mean"], row["cv_std"]
        bars.append(
            {
                "y": y,
                "h": _ROW_H - 4,
                "w": max(0.5, x(mean) - x0),
                "lo": x(mean - std),
                "hi": x(mean + std),
                "tx": x(mean + std) + 4,
                "label": f"#{row['candidate']} {row['algorithm']}",
                "text": f"{mean:.4f} ± {std:.4f}",
                "win": row["candidate"] == board["winner"]["candidate"],
            }
        )
    return {"width": _CHART_W, "height": 2 * _PAD + len(rows) * _ROW_H, "x0": x0, "bars": bars}
