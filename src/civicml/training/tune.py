"""Hyperparameter tuning of the built-in algorithms with Optuna.

A search space maps estimator parameters to ranges (:func:`int_range`, :func:`float_range`,
:func:`categorical`). :func:`run_study` drives an in-memory Optuna study — samplers ``random``,
``grid``, ``tpe``; ``hyperband`` is TPE sampling with Hyperband pruning — over an objective the
caller gives (the SDK's ``cm.train.tune`` makes each trial a run), and returns a
:class:`TuningResult` with the leaderboard.

Early stopping needs intermediate values. :func:`lightgbm_curve` fits LightGBM exactly as
:func:`~civicml.training.fit_tabular` does (same split, preprocessing and parameters) and reports
the validation metric every few boosting rounds through a LightGBM callback, so a pruner can stop
a bad trial part-way. The other algorithms have no intermediate values: median stopping and
Hyperband do not apply to them and every trial runs to the end.

Trials differ only in the estimator's parameters: :func:`prepared_for` gives them the data side
of the fit (split, signature, fitted preprocessing and its output, :func:`prepare_tabular`)
computed once per tuning job — by the first trial in this process, or on each Ray worker — so a
trial fits the estimator and nothing else.

Optuna's storage stays in memory: no study database is written. This package is a pure library;
runs and the registry are wired in :mod:`civicml.sdk.train`.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd  # type: ignore[import-untyped]

from civicml.core.compute import Executor
from civicml.core.errors import InvalidInputError, closest
from civicml.training._metrics import classification_metrics, regression_metrics
from civicml.training.tabular import (
    ALGORITHMS,
    PreparedTabular,
    _check_prepared,
    _estimator,
    _features,
    _resolve_task,
    prepare_tabular,
)

__all__ = [
    "STRATEGIES",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "TrialRecord",
    "TuningResult",
    "categorical",
    "default_direction",
    "default_metric",
    "float_range",
    "int_range",
    "lightgbm_curve",
    "prepared_for",
    "run_study",
    "space_from_json",
]

Strategy = Literal["random", "grid", "tpe", "hyperband"]
Direction = Literal["maximize", "minimize"]
STRATEGIES: tuple[str, ...] = ("random", "grid", "tpe", "hyperband")
#: Metrics where lower is better; every other validation metric is maximised by default.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
KNOWN_METRICS = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}) | {
    "rmse",
    "mae",
    "r2",
}
#: Trials that complete before the median rule may stop another one (SageMaker and Katib wait too).
MEDIAN_STARTUP_TRIALS = 3


@dataclass(frozen=True, slots=True)
class IntParam:
    """An integer range ``[low, high]`` (inclusive), stepped or log-scaled."""

    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True, slots=True)
class FloatParam:
    """A float range ``[low, high]``, optionally stepped or log-scaled."""

    low: float
    high: float
    step: float | None = None
    log: bool = False


@dataclass(frozen=True, slots=True)
class CategoricalParam:
    """A choice among values (numbers, strings, booleans or ``None``)."""

    choices: tuple[Any, ...]


Param = IntParam | FloatParam | CategoricalParam


def int_range(low: int, high: int, *, step: int = 1, log: bool = False) -> IntParam:
    """An integer parameter between ``low`` and ``high`` inclusive (``log=True``: log scale)."""
    if low > high or step < 1 or (log and (low < 1 or step != 1)):
        raise InvalidInputError(
            f"Invalid integer range low={low}, high={high}, step={step}, log={log}.",
            hint="Need low <= high and step >= 1; a log range needs low >= 1 and step 1.",
        )
    return IntParam(int(low), int(high), int(step), log)


def float_range(
    low: float, high: float, *, step: float | None = None, log: bool = False
) -> FloatParam:
    """A float parameter between ``low`` and ``high`` (``log=True``: sampled on a log scale)."""
    if (
        not low <= high
        or (log and (low <= 0 or step is not None))
        or (step is not None and step <= 0)
    ):
        raise InvalidInputError(
            f"Invalid float range low={low}, high={high}, step={step}, log={log}.",
            hint="Need low <= high; a log range needs low > 0 and no step.",
        )
    return FloatParam(float(low), float(high), step, log)


def categorical(choices: Sequence[Any]) -> CategoricalParam:
    """A parameter chosen among ``choices``."""
    values = tuple(choices)
    if not values or any(not isinstance(v, str | int | float | bool | type(None)) for v in values):
        raise InvalidInputError(
            f"A categorical parameter needs a non-empty list of plain values, not {choices!r}.",
            hint='For example categorical(["gini", "entropy"]) or categorical([0.1, 1.0, 10.0]).',
        )
    return CategoricalParam(values)


def space_from_json(doc: Mapping[str, Any]) -> dict[str, Param]:
    """A search space written as JSON data, as a pipeline step takes it: a list is a choice
    (:func:`categorical`), ``"int:LOW:HIGH"`` an integer range, ``"float:LOW:HIGH"`` or
    ``"float:LOW:HIGH:log"`` a float range (the spellings of ``civicml tune run --space``).

    >>> space_from_json({"num_leaves": "int:8:64", "min_child_samples": [5, 10]})["num_leaves"]
    IntParam(low=8, high=64, step=1, log=False)

    Raises:
        InvalidInputError: An entry is none of those forms.
    """
    if not isinstance(doc, Mapping) or not doc:
        raise InvalidInputError(
            f"A search space must be a non-empty mapping of parameter names, not {doc!r}.",
            hint='For example {"num_leaves": "int:8:64", "learning_rate": "float:0.01:0.3:log"}.',
        )
    space: dict[str, Param] = {}
    for name, spec in doc.items():
        if isinstance(spec, list | tuple):
            space[name] = categorical(spec)
            continue
        kind, _, rest = str(spec).partition(":")
        parts = rest.split(":")
        try:
            if isinstance(spec, str) and kind == "int" and len(parts) == 2:
                space[name] = int_range(int(parts[0]), int(parts[1]))
                continue
            if (
                isinstance(spec, str)
                and kind == "float"
                and len(parts) in (2, 3)
                and parts[2:] in ([], ["log"])
            ):
                space[name] = float_range(
                    float(parts[0]), float(parts[1]), log=parts[2:] == ["log"]
                )
                continue
        except ValueError:
            pass
        raise InvalidInputError(
            f"Search-space entry {name!r}: {spec!r} is not a list of choices or a range.",
            hint='Write a list of values, "int:8:64", "float:0.01:0.3" or "float:0.01:0.3:log".',
        )
    return space


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One trial: its parameters, final value (``None`` unless complete) and run."""

    number: int
    params: dict[str, Any]
    state: str  # complete, pruned, failed
    value: float | None
    run_id: str | None
    duration_s: float
    last_step: int | None = None  # the last intermediate step reported (boosting round)
    info: dict[str, Any] = field(
        default_factory=dict
    )  # what the objective left (TrialContext.info)


@dataclass(frozen=True, slots=True)
class TuningResult:
    """What a tuning found: the best trial and every trial, ranked in :attr:`leaderboard`."""

    tuning_id: str
    metric: str
    direction: str
    strategy: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    best_run_id: str | None
    trials: list[TrialRecord]
    stopped: str  # max_trials, grid_exhausted or time_budget
    model_version: Any = None  # the ModelVersion registered with register=..., else None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def leaderboard(self) -> list[dict[str, Any]]:
        """Completed trials best first, then pruned and failed ones, as table rows."""
        return leaderboard(self.trials, self.direction)


def leaderboard(trials: Sequence[TrialRecord], direction: str) -> list[dict[str, Any]]:
    """Rows ``rank, trial, state, value, run_id, duration_s, <params>``, best first."""
    sign = -1.0 if direction == "maximize" else 1.0
    done = sorted(
        (t for t in trials if t.state == "complete" and t.value is not None),
        key=lambda t: (sign * float(t.value or 0.0), t.number),
    )
    rest = sorted((t for t in trials if t not in done), key=lambda t: t.number)
    rows = []
    for rank, trial in enumerate([*done, *rest], start=1):
        rows.append(
            {
                "rank": rank if trial in done else None,
                "trial": trial.number,
                "state": trial.state,
                "value": trial.value,
                "run_id": trial.run_id,
                "duration_s": round(trial.duration_s, 4),
                "last_step": trial.last_step,
                **trial.params,
            }
        )
    return rows


def default_direction(metric: str) -> Direction:
    """``minimize`` for ``val_log_loss``, ``val_rmse`` and ``val_mae``; ``maximize`` otherwise."""
    return "minimize" if metric.removeprefix("val_") in LOWER_IS_BETTER else "maximize"


def default_metric(
    df: pd.DataFrame, target: str, task: Literal["auto", "classification", "regression"]
) -> str:
    """``val_roc_auc`` for a classification target, ``val_rmse`` for a regression one."""
    if target not in df.columns:
        return "val_roc_auc"  # fit_tabular reports the missing column with its hint
    resolved = _resolve_task(df[target], target, task)
    return "val_roc_auc" if resolved == "classification" else "val_rmse"


def check_metric(metric: str) -> str:
    """The metric's key in :attr:`TabularModel.metrics` (``val_roc_auc`` → ``roc_auc``)."""
    key = metric.removeprefix("val_")
    if key not in KNOWN_METRICS:
        known = sorted(f"val_{m}" for m in KNOWN_METRICS)
        raise InvalidInputError(
            f"Unknown tuning metric {metric!r}.",
            hint=closest(metric, known) or "Choose one of: " + ", ".join(known) + ".",
        )
    return key


class TrialContext:
    """What an objective gets for one trial: its number, sampled params and a ``report`` hook."""

    def __init__(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        self._trial = trial
        self.number: int = trial.number
        self.params = params
        self.last_step: int | None = None
        self.run_id: str | None = None  # set by the objective once it has started the trial's run
        #: JSON data the objective leaves for the caller (the trial model's signature, metrics).
        self.info: dict[str, Any] = {}
        #: Intermediate values reported so far, by step.
        self.reports: dict[int, float] = {}

    def improves(self, value: float) -> bool:
        """Whether ``value`` is at least as good as every trial finished so far (as this trial's
        study knows them: on a Ray worker, those finished when it started)."""
        study = self._trial.study
        try:
            best = study.best_value
        except ValueError:  # nothing finished yet
            return True
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return value >= best
        return value <= best

    def report(self, step: int, value: float) -> None:
        """Report an intermediate value; raises ``optuna.TrialPruned`` when the pruner says stop."""
        self._trial.report(value, step)
        self.reports[step] = value
        self.last_step = step
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Pruned at step {step} with value {value:.6g}.")


Objective = Callable[[TrialContext], float]


def run_study(
    objective: Objective,
    *,
    space: Mapping[str, Param],
    tuning_id: str,
    metric: str,
    direction: Direction,
    strategy: str = "tpe",
    max_trials: int = 20,
    max_parallel: int = 1,
    time_budget_s: float | None = None,
    early_stopping: Literal["median"] | None = None,
    warm_start: Sequence[Mapping[str, Any]] = (),
    seed: int = 0,
    executor: Executor | None = None,
) -> TuningResult:
    """Run an in-memory Optuna study over ``space`` and return every trial.

    ``objective(ctx)`` trains with ``ctx.params``, sets ``ctx.run_id`` and returns the value; it
    may call ``ctx.report(step, value)`` (raising ``optuna.TrialPruned`` to stop the trial). Trials
    run in ``max_parallel`` threads, or — with a remote ``executor`` (Ray) — as at most
    ``max_parallel`` tasks on the cluster (:func:`_run_remote`; the objective is then shipped,
    so it must pickle). ``warm_start`` parameter sets are evaluated first.

    Raises:
        InvalidInputError: Unknown strategy, a grid over a continuous range, bad limits, or no
            trial completed.
    """
    _check_limits(space, strategy, max_trials, max_parallel, time_budget_s, early_stopping)
    if strategy == "grid" and warm_start:
        raise InvalidInputError(
            "warm_start does not combine with strategy='grid': a grid has no best-first order.",
            hint="Use strategy='tpe' or 'random' to continue from an earlier tuning.",
        )
    sampler: optuna.samplers.BaseSampler
    n_trials = max_trials
    if strategy == "grid":
        grid = _grid(space)
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
        n_trials = min(max_trials, math.prod(len(v) for v in grid.values()))
    elif strategy == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    rule = _PruningRule(strategy, early_stopping, direction, tuning_id)
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=sampler,
        pruner=rule.pruner(),
        direction=direction,
        study_name=tuning_id,
    )
    for params in warm_start:
        study.enqueue_trial({k: v for k, v in params.items() if k in space}, skip_if_exists=True)
    run_ids: dict[int, str | None] = {}
    durations: dict[int, float] = {}
    steps: dict[int, int | None] = {}
    infos: dict[int, dict[str, Any]] = {}

    def optuna_objective(trial: optuna.Trial) -> float:
        ctx = TrialContext(trial, _suggest(trial, space))
        started = time.perf_counter()
        try:
            return objective(ctx)
        finally:
            run_ids[trial.number] = ctx.run_id
            durations[trial.number] = time.perf_counter() - started
            steps[trial.number] = ctx.last_step
            infos[trial.number] = ctx.info

    started = time.monotonic()
    if executor is not None and executor.remote:
        for outcome in _run_remote(
            study, objective, executor, rule, space, n_trials, max_parallel, time_budget_s
        ):
            run_ids[outcome.number] = outcome.run_id
            durations[outcome.number] = outcome.duration_s
            steps[outcome.number] = outcome.last_step
            infos[outcome.number] = outcome.info
    else:
        study.optimize(
            optuna_objective, n_trials=n_trials, timeout=time_budget_s, n_jobs=max_parallel
        )
    elapsed = time.monotonic() - started
    records = [
        TrialRecord(
            number=t.number,
            params=dict(t.params),
            state=t.state.name.lower().replace("fail", "failed"),
            value=float(t.value) if t.value is not None else None,
            run_id=run_ids.get(t.number),
            duration_s=durations.get(t.number, 0.0),
            last_step=steps.get(t.number),
            info=infos.get(t.number) or {},
        )
        for t in study.trials
        if t.state.is_finished()
    ]
    complete = [r for r in records if r.state == "complete"]
    if not complete:
        raise InvalidInputError(
            f"No trial of tuning {tuning_id} completed ({len(records)} started).",
            hint="Give more trials or time (max_trials, time_budget_s), or disable early_stopping.",
        )
    best = study.best_trial
    if strategy == "grid" and len(records) >= n_trials and n_trials < max_trials:
        stopped = "grid_exhausted"
    elif len(records) < n_trials and time_budget_s is not None and elapsed >= time_budget_s:
        stopped = "time_budget"
    else:
        stopped = "max_trials"
    return TuningResult(
        tuning_id=tuning_id,
        metric=metric,
        direction=direction,
        strategy=strategy,
        best_params=dict(best.params),
        best_value=float(best.value) if best.value is not None else math.nan,
        best_trial=best.number,
        best_run_id=run_ids.get(best.number),
        trials=records,
        stopped=stopped,
    )


@dataclass(frozen=True, slots=True)
class _PruningRule:
    """Which pruner a study uses — built in the coordinator and, for remote trials, again in
    each worker (pruners are cheap, stateless objects over the study's trials)."""

    strategy: str
    early_stopping: str | None
    direction: Direction
    study_name: str

    def pruner(self) -> optuna.pruners.BasePruner:
        if self.strategy == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
        if self.early_stopping == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
        return optuna.pruners.NopPruner()


@dataclass(frozen=True, slots=True)
class _RemoteOutcome:
    """What a remote trial hands back: plain data, told to the coordinator's study."""

    number: int
    state: str  # complete, pruned
    value: float | None
    reports: dict[int, float]
    run_id: str | None
    duration_s: float
    last_step: int | None
    info: dict[str, Any]


def _remote_trial(
    objective: Objective,
    rule: _PruningRule,
    snapshot: list[optuna.trial.FrozenTrial],
    space: Mapping[str, Param],
    params: dict[str, Any],
    number: int,
) -> _RemoteOutcome:
    """One trial on a worker, pruned there against a snapshot of the study.

    The worker rebuilds the study as the coordinator saw it when the trial started: the
    finished trials (complete and pruned, with their intermediate values) at their own numbers,
    the ones still running as failed placeholders, which no pruner counts. Its own trial takes
    the same number (Hyperband's bracket depends on it) and the same parameters, so
    ``ctx.report`` asks the same pruner about the same history as in-process trials do, except
    for trials that finish while this one runs (it does not see those; a thread would).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    local = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=optuna.samplers.RandomSampler(seed=number),
        pruner=rule.pruner(),
        direction=rule.direction,
        study_name=rule.study_name,
    )
    by_number = {t.number: t for t in snapshot}
    for i in range(number):
        local.add_trial(
            by_number[i]
            if i in by_number
            else optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
        )
    local.enqueue_trial(params)
    trial = local.ask()
    ctx = TrialContext(trial, _suggest(trial, space))
    started = time.perf_counter()
    state, value = "complete", None
    try:
        value = float(objective(ctx))
    except optuna.TrialPruned:
        state = "pruned"
    return _RemoteOutcome(
        number=number,
        state=state,
        value=value,
        reports=dict(ctx.reports),
        run_id=ctx.run_id,
        duration_s=time.perf_counter() - started,
        last_step=ctx.last_step,
        info=ctx.info,
    )


def _run_remote(
    study: optuna.Study,
    objective: Objective,
    executor: Executor,
    rule: _PruningRule,
    space: Mapping[str, Param],
    n_trials: int,
    max_parallel: int,
    time_budget_s: float | None,
) -> list[_RemoteOutcome]:
    """Ask/tell in the coordinator, trials on the executor: at most ``max_parallel`` in flight,
    no new one after ``time_budget_s``. A trial's intermediate values are reported to the
    coordinator's trial before it is told, so later trials' pruning and the samplers see them.
    An objective that raises (not pruned) stops the study as in-process trials do: the trials
    in flight finish and are told, then the error is raised."""
    # The grid sampler calls study.stop() from tell() once the grid is exhausted; Optuna allows
    # that only inside its optimize loop, and this loop is one (it stops at n_trials anyway).
    study._thread_local.in_optimize_loop = True
    try:
        return _ask_and_tell(
            study, objective, executor, rule, space, n_trials, max_parallel, time_budget_s
        )
    finally:
        study._thread_local.in_optimize_loop = False


def _ask_and_tell(
    study: optuna.Study,
    objective: Objective,
    executor: Executor,
    rule: _PruningRule,
    space: Mapping[str, Param],
    n_trials: int,
    max_parallel: int,
    time_budget_s: float | None,
) -> list[_RemoteOutcome]:
    started = time.monotonic()
    in_flight: dict[Any, optuna.Trial] = {}
    outcomes: list[_RemoteOutcome] = []
    asked = 0
    error: BaseException | None = None
    while True:
        out_of_time = time_budget_s is not None and time.monotonic() - started >= time_budget_s
        while (
            error is None and not out_of_time and asked < n_trials and len(in_flight) < max_parallel
        ):
            trial = study.ask()
            params = _suggest(trial, space)
            snapshot = [
                t
                for t in study.get_trials(deepcopy=True)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            ]
            future = executor.submit(
                _remote_trial, objective, rule, snapshot, space, params, trial.number
            )
            in_flight[future] = trial
            asked += 1
        if not in_flight:
            break
        done = executor.wait_any(list(in_flight))
        for future in done:
            trial = in_flight.pop(future)
            try:
                outcome: _RemoteOutcome = future.result()
            except BaseException as err:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                error = error or err
                continue
            for step, value in sorted(outcome.reports.items()):
                trial.report(value, step)
            if outcome.state == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, outcome.value)
            outcomes.append(outcome)
    if error is not None:
        raise error
    return outcomes


def lightgbm_curve(
    df: pd.DataFrame,
    target: str,
    *,
    metric: str,
    report: Callable[[int, float], None],
    task: Literal["auto", "classification", "regression"] = "auto",
    params: dict[str, Any] | None = None,
    features: list[str] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    every: int | None = None,
    prepared: PreparedTabular | None = None,
) -> float:
    """Fit LightGBM as :func:`fit_tabular` does, reporting the validation ``metric`` as it boosts.

    ``report(round, value)`` is called every ``every`` boosting rounds (default: a tenth of
    ``n_estimators``) and after the last; it may raise to stop training (a pruned trial).
    ``prepared`` is the data side of the fit made once (:func:`prepared_for`), as
    ``fit_tabular(..., prepared=...)`` takes it.

    Returns:
        The metric after the last round.
    """
    key = check_metric(metric)
    spec = ALGORITHMS["lightgbm"]
    columns = _features(df, target, features)
    if prepared is None:
        prepared = prepare_tabular(
            df,
            target,
            algorithm="lightgbm",
            task=task,
            validation_fraction=validation_fraction,
            seed=seed,
            features=features,
        )
    else:
        _check_prepared(prepared, df, target, "lightgbm", spec, task, validation_fraction, seed)
        if tuple(columns) != prepared.features:
            raise InvalidInputError("prepared= was made for other feature columns.")
    resolved = prepared.task
    effective = {**spec.defaults(seed), **(params or {})}
    estimator = _estimator(spec, "lightgbm", resolved, effective)
    x_train, x_valid = prepared.x_train, prepared.x_valid
    y_train, y_valid = prepared.y_train, prepared.y_valid
    classes = np.unique(y_train).tolist() if resolved == "classification" else []
    rounds = int(effective["n_estimators"])
    interval = every or max(1, rounds // 10)
    last = {"value": math.nan}

    def score(iteration: int, booster: Any) -> float:
        raw = np.asarray(booster.predict(x_valid, num_iteration=iteration))
        if resolved == "regression":
            return float(regression_metrics(y_valid, raw)[key])
        proba = np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
        predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        if pd.api.types.is_bool_dtype(y_valid.dtype) or y_valid.dtype.kind in "iuf":
            predicted = predicted.astype(y_valid.dtype)
        metrics, _ = classification_metrics(y_valid, predicted, proba, classes)
        return float(metrics.get(key, math.nan))

    def callback(env: Any) -> None:
        iteration = env.iteration + 1
        if iteration % interval and iteration != env.end_iteration:
            return
        last["value"] = score(iteration, env.model)
        report(iteration, last["value"])

    estimator.fit(x_train, y_train, callbacks=[callback])
    return last["value"]


_PREPARED: dict[tuple[Any, ...], tuple[weakref.ref[Any], PreparedTabular]] = {}
_PREPARED_LOCK = threading.Lock()


def prepared_for(
    frame: pd.DataFrame,
    target: str,
    *,
    algorithm: str,
    task: Literal["auto", "classification", "regression"] = "auto",
    features: list[str] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> PreparedTabular:
    """:func:`~civicml.training.tabular.prepare_tabular` of ``frame``, made once for this frame
    object and these arguments and shared by every later call: the trials of one tuning job
    (threads here, or the trials a Ray worker runs on the frame it keeps) reuse it.

    The frame is held weakly: the entry goes when the frame does. The frame must not be
    modified while it is in use (tuning reads it only; fitting copies what it needs).
    """
    key = (
        id(frame),
        target,
        algorithm,
        task,
        None if features is None else tuple(features),
        validation_fraction,
        seed,
    )
    with _PREPARED_LOCK:
        found = _PREPARED.get(key)
        if found is not None and found[0]() is frame:
            return found[1]
        prepared = prepare_tabular(
            frame,
            target,
            algorithm=algorithm,
            task=task,
            validation_fraction=validation_fraction,
            seed=seed,
            features=features,
        )
        _PREPARED[key] = (weakref.ref(frame, lambda _ref: _PREPARED.pop(key, None)), prepared)
        return prepared


def _suggest(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, IntParam):
            params[name] = trial.suggest_int(
                name, spec.low, spec.high, step=spec.step, log=spec.log
            )
        elif isinstance(spec, FloatParam):
            params[name] = trial.suggest_float(
                name, spec.low, spec.high, step=spec.step, log=spec.log
            )
        else:
            params[name] = trial.suggest_categorical(name, list(spec.choices))
    return params


def _grid(space: Mapping[str, Param]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if isinstance(spec, CategoricalParam):
            grid[name] = list(spec.choices)
        elif isinstance(spec, IntParam) and not spec.log:
            grid[name] = list(range(spec.low, spec.high + 1, spec.step))
        elif isinstance(spec, FloatParam) and spec.step is not None and not spec.log:
            count = round((spec.high - spec.low) / spec.step) + 1
            grid[name] = [round(spec.low + i * spec.step, 12) for i in range(count)]
        else:
            raise InvalidInputError(
                f"Parameter {name!r} is a continuous or log range; a grid needs finite values.",
                hint="Use categorical([...]), an integer range, or float_range(..., step=...).",
            )
    return grid


def _check_limits(
    space: Mapping[str, Param],
    strategy: str,
    max_trials: int,
    max_parallel: int,
    time_budget_s: float | None,
    early_stopping: str | None,
) -> None:
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"Unknown tuning strategy {strategy!r}.",
            hint=closest(strategy, STRATEGIES) or "Choose one of: " + ", ".join(STRATEGIES) + ".",
        )
    if not space:
        raise InvalidInputError(
            "The search space is empty.",
            hint='Give space={"num_leaves": cm.train.tune.int(8, 64)}.',
        )
    wrong = [
        k for k, v in space.items() if not isinstance(v, IntParam | FloatParam | CategoricalParam)
    ]
    if wrong:
        raise InvalidInputError(
            f"Search space entry {wrong[0]!r} is not a range or a list of choices.",
            hint="Use cm.train.tune.int(...), cm.train.tune.float(...) or "
            "cm.train.tune.categorical([...]).",
        )
    if max_trials < 1 or max_parallel < 1:
        raise InvalidInputError(
            f"max_trials ({max_trials}) and max_parallel ({max_parallel}) must be at least 1."
        )
    if time_budget_s is not None and time_budget_s <= 0:
        raise InvalidInputError(f"time_budget_s must be positive, not {time_budget_s}.")
    if early_stopping not in (None, "median"):
        raise InvalidInputError(
            f"Unknown early_stopping {early_stopping!r}.",
            hint="Use 'median' or None; strategy='hyperband' brings its own early stopping.",
        )
    if strategy == "hyperband" and early_stopping is not None:
        raise InvalidInputError(
            "strategy='hyperband' stops trials early by itself; early_stopping must be None.",
            hint="Drop early_stopping, or use strategy='tpe' with early_stopping='median'.",
        )
