"""``cm.train.auto``: AutoML over the built-in algorithms, every candidate a run.

Each algorithm that does the task is tuned with :func:`civicml.training.tune.run_study` (TPE,
its default parameters first) inside its share of the time budget; every candidate is scored
by k-fold cross-validation (:func:`civicml.training.auto.cross_validate`) on its own child run.
The winner (:func:`civicml.training.auto.choose`) is fitted once more as ``cm.train.tabular``
fits, on a child run of its own, so the result registers like any trained model. The parent run
holds the leaderboard (``automl/leaderboard.json``) and the candidate report
(``automl/report.html``). docs/automl.md.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna import TrialPruned

from civicml.core.errors import CivicMLError, InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.sdk.client import ModelsHandle, ProjectHandle, RunHandle
from civicml.sdk.datasets import DatasetsHandle
from civicml.sdk.train import TrainedModel, tabular
from civicml.tracking.schemas import RunStatus
from civicml.training.auto import (
    INTERPRETABILITY,
    SPACES,
    budget_shares,
    candidate_order,
    choose,
    cross_validate,
    describe_space,
    fold_count,
    render_report,
)
from civicml.training.tabular import _resolve_task
from civicml.training.tune import check_metric, default_direction, default_metric, run_study

__all__ = ["LEADERBOARD_PATH", "REPORT_PATH", "AutoMLResult", "auto"]

LEADERBOARD_PATH = "automl/leaderboard.json"
REPORT_PATH = "automl/report.html"


@dataclass(frozen=True, slots=True)
class AutoMLResult(TrainedModel):
    """The chosen model, trained as ``cm.train.tabular`` trains (register it the same way),
    with the AutoML run's leaderboard and the reason for the choice."""

    automl_id: str = ""
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    explanation: str = ""
    winner: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    model_version: Any = None  # the ModelVersion registered with register=..., else None


def auto(
    dataset: DatasetVersion,
    *,
    target: str,
    time_budget: float = 60.0,
    project: ProjectHandle | None = None,
    run: RunHandle | None = None,
    experiment: str = "automl",
    algorithms: Sequence[str] | None = None,
    metric: str | None = None,
    folds: int = 5,
    task: Literal["auto", "classification", "regression"] = "auto",
    features: list[str] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    register: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> AutoMLResult:
    """Try every built-in algorithm with tuning and cross-validation; return the best model.

    Args:
        dataset: The dataset version to learn from.
        target: The column to predict.
        time_budget: Seconds for the whole search, the final fit included: 15 % is kept for
            the final fit, the rest shared among the algorithms, cheapest first, each getting
            an equal share of what is left when its turn comes.
        project: The project whose ``experiment`` gets the runs (or give ``run``).
        run: An open run to use as the parent (it is not ended here).
        experiment: Experiment of the runs when ``project`` is given.
        algorithms: Algorithms to try (default: every built-in one that does the task).
        metric: ``val_roc_auc`` (default, classification), ``val_rmse`` (default, regression)
            or another validation metric; scored by cross-validation as ``cv_<metric>``.
        folds: k of k-fold cross-validation (stratified for classification; lowered to the
            smallest class's rows).
        task: ``auto``, ``classification`` or ``regression``.
        features: Input columns (default: every column but the target).
        validation_fraction, seed: Of the final fit, as in ``cm.train.tabular``.
        register: Register the chosen model under this name.
        progress: Called with an event dict as the search goes (``algorithm``, ``candidate``,
            ``final``); the CLI draws its progress bar from it.

    Returns:
        An :class:`AutoMLResult`: a ``TrainedModel`` (``proj.models.register(name, result)``
        works) with ``leaderboard``, ``explanation``, ``winner`` and ``automl_id``.

    Raises:
        InvalidInputError: A bad budget, metric, algorithm or fold count, or no candidate
            finished in time.

    Example:
        >>> best = cm.train.auto(raw, target="eligible", time_budget=30,  # doctest: +SKIP
        ...                      project=proj)
        >>> print(best.explanation)  # doctest: +SKIP
    """
    started = time.monotonic()
    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"cm.train.auto needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass proj.datasets.ingest(...) or proj.datasets.version(name).",
        )
    if (project is None) == (run is None):
        raise InvalidInputError(
            "cm.train.auto needs exactly one of project= (a new parent run) or run= (yours).",
            hint='Pass project=ml.project("benefits").',
        )
    backend = run._backend if run is not None else project._backend  # type: ignore[union-attr]
    DatasetsHandle(backend, dataset.project).check_usable(dataset)  # quarantine, policy
    frame = DatasetsHandle(backend, dataset.project).to_pandas(dataset)
    if target not in frame.columns:
        raise InvalidInputError(
            f"Target column {target!r} is not in dataset {dataset.name} v{dataset.version}.",
            hint="Columns: " + ", ".join(map(str, frame.columns)) + ".",
        )
    resolved = _resolve_task(frame[target], target, task)
    key = check_metric(metric or default_metric(frame, target, resolved))
    direction = default_direction(key)
    cv_metric = f"cv_{key}"
    names = candidate_order(resolved, algorithms)
    search_s, _reserve = budget_shares(time_budget, names)
    k = fold_count(frame.dropna(subset=[target]), target, resolved, folds)
    notify = progress or (lambda _event: None)
    parent = run or project.start_run(experiment=experiment)  # type: ignore[union-attr]
    info = parent.info
    parent.log_input(dataset)
    parent.log_params(
        {
            "automl.target": target,
            "automl.task": resolved,
            "automl.metric": cv_metric,
            "automl.direction": direction,
            "automl.folds": k,
            "automl.time_budget_s": time_budget,
            "automl.algorithms": ",".join(names),
            "dataset": f"{dataset.name}@v{dataset.version}",
            "target": target,
        }
    )
    parent.set_tags({"automl.id": parent.id, "automl.role": "parent"})
    try:
        rows, notes = _search(
            backend,
            info,
            parent.id,
            frame,
            target=target,
            task=resolved,
            names=names,
            key=key,
            cv_metric=cv_metric,
            direction=direction,
            folds=k,
            seed=seed,
            features=features,
            deadline=started + search_s,
            notify=notify,
        )
        board = _leaderboard(rows, direction)
        choice = choose(board, metric=cv_metric, direction=direction)
        winner = choice.winner
        notify(
            {"event": "final", "candidate": winner["candidate"], "algorithm": winner["algorithm"]}
        )
        final = RunHandle(
            backend,
            backend.create_run(
                info.project,
                info.experiment,
                f"{info.name}-model",
                None,
                {
                    "automl.id": parent.id,
                    "automl.role": "model",
                    "automl.candidate": winner["candidate"],
                    "automl.candidate_run_id": winner["run_id"] or "",
                    "parent_run_id": parent.id,
                },
            ),
        )
        with final:
            trained = tabular(
                dataset,
                target=target,
                run=final,
                algorithm=winner["algorithm"],
                task=resolved,
                params=winner["params"],
                features=features,
                validation_fraction=validation_fraction,
                seed=seed,
            )
            final.log_metrics(
                {f"{cv_metric}_mean": winner["cv_mean"], f"{cv_metric}_std": winner["cv_std"]}
            )
    except BaseException:
        if run is None:
            parent.end(RunStatus.FAILED)
        raise
    elapsed = round(time.monotonic() - started, 3)
    document = {
        "automl_id": parent.id,
        "dataset": f"{dataset.name}@v{dataset.version}",
        "target": target,
        "task": resolved,
        "metric": cv_metric,
        "direction": direction,
        "folds": k,
        "time_budget_s": time_budget,
        "elapsed_s": elapsed,
        "explanation": choice.explanation,
        "simpler_within_std": choice.simpler_within_std,
        "winner": winner,
        "best": choice.best,
        "model_run_id": final.id,
        "algorithms": [
            {
                "algorithm": name,
                "space": describe_space(SPACES[name][0]),
                "defaults": SPACES[name][1],
                "candidates": sum(r["algorithm"] == name for r in board),
                "best": max(
                    (r["cv_mean"] for r in board if r["algorithm"] == name and r["rank"]),
                    key=lambda v: v if direction == "maximize" else -v,
                    default=None,
                ),
                "note": notes.get(name),
            }
            for name in names
        ],
        "rows": board,
    }
    parent.log_text(json.dumps(document, indent=2, default=str), LEADERBOARD_PATH)
    parent.log_text(render_report(document), REPORT_PATH)
    parent.log_metrics(
        {f"best_{cv_metric}_mean": winner["cv_mean"], "automl.candidates": len(board)}
    )
    parent.set_tags(
        {
            "automl.winner_candidate": winner["candidate"],
            "automl.winner_algorithm": winner["algorithm"],
            "automl.winner_run_id": winner["run_id"] or "",
            "automl.model_run_id": final.id,
        }
    )
    version = None
    if register:
        version = ModelsHandle(backend, info.project).register(register, trained)
    if run is None:
        parent.end(RunStatus.FINISHED)
    return AutoMLResult(
        model=trained.model,
        run_id=trained.run_id,
        dataset=dataset,
        artifact_path=trained.artifact_path,
        metrics=trained.metrics,
        automl_id=parent.id,
        leaderboard=board,
        explanation=choice.explanation,
        winner=winner,
        elapsed_s=elapsed,
        model_version=version,
    )


def _search(
    backend: Any,
    info: Any,
    parent_id: str,
    frame: Any,
    *,
    names: list[str],
    deadline: float,
    notify: Callable[[dict[str, Any]], None],
    **kw: Any,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Tune each algorithm in its share of the time left; every candidate a child run."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress events say it instead
    try:
        return _search_all(
            backend, info, parent_id, frame, names=names, deadline=deadline, notify=notify, **kw
        )
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search_all(
    backend: Any,
    info: Any,
    parent_id: str,
    frame: Any,
    *,
    target: str,
    task: str,
    names: list[str],
    key: str,
    cv_metric: str,
    direction: str,
    folds: int,
    seed: int,
    features: list[str] | None,
    deadline: float,
    notify: Callable[[dict[str, Any]], None],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    numbers = itertools.count(1)
    for i, name in enumerate(names):
        now = time.monotonic()
        share = (deadline - now) / (len(names) - i)
        if share <= 0:
            notes[name] = "not tried: the time budget was spent"
            continue
        until = now + share
        space, defaults = SPACES[name]
        done = {"complete": 0}
        notify({"event": "algorithm", "algorithm": name, "share_s": round(share, 3)})

        def objective(ctx: Any, name: str = name, until: float = until, done: dict = done) -> float:  # type: ignore[type-arg]
            number = next(numbers)
            record = backend.create_run(
                info.project,
                info.experiment,
                f"{info.name}-{number}-{name}",
                None,
                {
                    "automl.id": parent_id,
                    "automl.role": "candidate",
                    "automl.candidate": number,
                    "automl.algorithm": name,
                    "parent_run_id": parent_id,
                },
            )
            child = RunHandle(backend, record)
            ctx.run_id = child.id
            params = dict(ctx.params)

            def should_stop() -> bool:
                t = time.monotonic()
                return t > deadline or (t > until and done["complete"] > 0)

            try:
                child.log_params(
                    {"algorithm": name, **{f"model.{k}": v for k, v in sorted(params.items())}}
                )
                score = cross_validate(
                    frame,
                    target,
                    task=task,
                    algorithm=name,
                    params=params,
                    metric=key,
                    folds=folds,
                    seed=seed,
                    features=features,
                    should_stop=should_stop,
                )
            except BaseException:
                child.set_tag("automl.state", "failed")
                child.end(RunStatus.FAILED)
                raise
            row: dict[str, Any] = {
                "candidate": number,
                "algorithm": name,
                "state": "complete" if score else "stopped",
                "cv_mean": score.mean if score else None,
                "cv_std": score.std if score else None,
                "folds": score.folds if score else [],
                "fit_time_s": round(score.fit_time_s, 4) if score else None,
                "model_size_bytes": score.model_size_bytes if score else None,
                "interpretability": INTERPRETABILITY[name][1],
                "params": params,
                "run_id": child.id,
            }
            rows.append(row)
            if score is None:
                child.set_tag("automl.state", "stopped")
                child.end(RunStatus.KILLED)
                notify({"event": "candidate", **row})
                raise TrialPruned("Stopped between folds: its share of the time budget ran out.")
            child.log_metrics(
                {
                    f"{cv_metric}_mean": score.mean,
                    f"{cv_metric}_std": score.std,
                    "fit_time_s": score.fit_time_s,
                    "model_size_bytes": float(score.model_size_bytes),
                }
            )
            child.set_tag("automl.state", "complete")
            child.end(RunStatus.FINISHED)
            done["complete"] += 1
            notify({"event": "candidate", **row})
            return score.mean

        try:
            run_study(
                objective,
                space=space,
                tuning_id=f"{parent_id}-{name}",
                metric=cv_metric,
                direction=direction,  # type: ignore[arg-type]
                strategy="tpe",
                max_trials=10_000,
                time_budget_s=share,
                warm_start=[defaults],
                seed=seed,
            )
        except CivicMLError as err:
            notes[name] = f"no candidate finished: {err}"
    return rows, notes


def _leaderboard(rows: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    sign = -1.0 if direction == "maximize" else 1.0
    done = sorted(
        (r for r in rows if r["cv_mean"] is not None),
        key=lambda r: (sign * r["cv_mean"], r["candidate"]),
    )
    rest = sorted((r for r in rows if r["cv_mean"] is None), key=lambda r: r["candidate"])
    return [
        {"rank": rank if row in done else None, **row}
        for rank, row in enumerate([*done, *rest], start=1)
    ]
