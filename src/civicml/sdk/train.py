"""``cm.train``: built-in training wired to the platform.

``cm.train.tabular(dataset_version, target=..., algorithm=..., run=run)`` loads the dataset
version, fits a model (:func:`civicml.training.fit_tabular`), and records everything on the run:
params, validation metrics, the confusion matrix, the model files as artifacts under ``model/``,
and lineage ``dataset version → run``. Register the result with
``proj.models.register(name, trained, run=run)``.

``cm.train.script("train.py", {"train": dv}, target=..., run=run)`` runs your own training
script in a subprocess under time and memory limits (:func:`civicml.training.script.run_script`,
docs/script-mode.md) and records its log, exit code and model files on the run.

``cm.train.tune(dataset_version, target=..., space={...}, project=proj)`` searches
hyperparameters with Optuna (:mod:`civicml.training.tune`, docs/tuning.md): each trial is a
child run of a parent tuning run that holds the leaderboard.

``cm.train.auto(dataset_version, target=..., time_budget=60, project=proj)`` tries every
built-in algorithm with tuning and cross-validation and returns the chosen model with its
leaderboard and the reason for the choice (:mod:`civicml.sdk.automl`, docs/automl.md).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from optuna import TrialPruned

from civicml.core.errors import ConfigurationError, InvalidInputError
from civicml.costs.meter import METER
from civicml.data.schemas import DatasetVersion
from civicml.sdk import rules as _rules
from civicml.sdk.client import ModelsHandle, ProjectHandle, RunHandle
from civicml.sdk.costs import metering, metering_trial, record_usage
from civicml.sdk.datasets import DatasetsHandle
from civicml.store.context import shippable_settings
from civicml.tracking.reproducibility import environment_tags
from civicml.tracking.schemas import RunStatus
from civicml.training import TabularModel, fit_tabular
from civicml.training._recording import Recorder
from civicml.training.script import ScriptFailedError, run_script
from civicml.training.tune import (
    Param,
    TrialContext,
    TuningResult,
    categorical,
    check_metric,
    default_direction,
    default_metric,
    float_range,
    int_range,
    leaderboard,
    lightgbm_curve,
    prepared_for,
    run_study,
)

__all__ = [
    "ScriptTrainedModel",
    "TrainedModel",
    "TuningResult",
    "script",
    "tabular",
    "tune",
]

MODEL_PATH = "model"
LOG_PATH = "logs/train.log"


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """A model trained on the platform: the fitted model and where its files are stored."""

    model: TabularModel
    run_id: str
    dataset: DatasetVersion
    artifact_path: str = MODEL_PATH
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def signature(self) -> list[dict[str, Any]]:
        """Input columns and types, as the registry and serving check them."""
        return [dict(column) for column in self.model.signature]


@metering  # the training's usage, on its run (docs/costs.md)
def tabular(
    dataset: DatasetVersion,
    *,
    target: str,
    run: RunHandle,
    algorithm: str = "lightgbm",
    task: Literal["auto", "classification", "regression"] = "auto",
    params: dict[str, Any] | None = None,
    features: list[str] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    rules: Sequence[Any] | None = None,
    model_files: bool = True,
    _frame: Any = None,
    _prepared: Any = None,
) -> TrainedModel:
    """Train a tabular classifier or regressor on a dataset version and record it on ``run``.

    Args:
        dataset: The dataset version to train on (``proj.datasets.version(name)``).
        target: The column to predict.
        run: The run that records params, metrics, model files and lineage.
        algorithm: ``logistic`` / ``linear``, ``random_forest`` or ``lightgbm``.
        task: ``auto`` (from the target), ``classification`` or ``regression``.
        params: Estimator parameters overriding the defaults.
        features: Input columns (default: every column but the target).
        validation_fraction: Share of rows held out for evaluation (seeded, stratified).
        seed: Seed of the split and the estimator.
        rules: Training rules (``[cm.rules.overfit(on_fire="stop")]``, docs/training-rules.md):
            LightGBM logs ``train_loss``/``val_loss`` by boosting round and stops when a
            ``stop`` rule fires; other algorithms have the rules evaluated after the fit.
            Results are recorded on the run (tags ``civicml.rule.<name>``,
            ``rules/evaluation.json``).
        model_files: Store the model's files (``model/``) and confusion matrix on the run.
            ``False`` records parameters and metrics only and returns the model in memory
            (tuning keeps files for improving trials only); it cannot be registered from the
            run until :func:`log_model_files` stores them.

    Returns:
        The :class:`TrainedModel`; its ``signature`` and ``metrics`` go to the registry.

    Example:
        >>> with proj.start_run(experiment="baseline") as run:  # doctest: +SKIP
        ...     trained = cm.train.tabular(raw, target="eligible", run=run)
        >>> mv = proj.models.register("eligibility", trained, run=run)  # doctest: +SKIP
    """
    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"cm.train.tabular needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass proj.datasets.ingest(...) or proj.datasets.version(name).",
        )
    backend = run._backend
    if _frame is None:  # quarantined or policy-refused data is not trained on (docs/datasets.md)
        DatasetsHandle(backend, dataset.project).check_usable(dataset)
    # A tuning trial passes the rows it already read (never modified: fitting copies).
    frame = (
        _frame
        if _frame is not None
        else DatasetsHandle(backend, dataset.project).to_pandas(dataset)
    )
    monitor = _rules.monitor_for(rules, frame, target, task)  # training rules (sdk/rules.py)
    if monitor is not None:
        _rules.before_fit(monitor, run)
    model = fit_tabular(
        frame,
        target,
        algorithm=algorithm,
        task=task,
        params=params,
        validation_fraction=validation_fraction,
        seed=seed,
        features=features,
        callbacks=[monitor.lightgbm_callback()] if monitor and algorithm == "lightgbm" else (),
        prepared=_prepared,  # a tuning trial: the split and preprocessing made once per job
    )
    _record_fit(run, dataset, model, target, seed, validation_fraction)
    if model_files:
        log_model_files(run, model)
    if monitor is not None:
        _rules.after_fit(
            monitor, run, model, frame, validation_fraction=validation_fraction, features=features
        )
    return TrainedModel(
        model=model,
        run_id=run.id,
        dataset=dataset,
        metrics={f"val_{k}": float(v) for k, v in model.metrics.items()},
    )


def _record_fit(
    run: RunHandle,
    dataset: DatasetVersion,
    model: TabularModel,
    target: str,
    seed: builtins.int,
    validation_fraction: builtins.float,
) -> None:
    """What :func:`tabular` records of a fit: lineage from the dataset, params, metrics."""
    run.log_input(dataset)
    run.log_params(
        {
            "algorithm": model.algorithm,
            "task": model.task,
            "target": target,
            "seed": seed,
            "validation_fraction": validation_fraction,
            "dataset": f"{dataset.name}@v{dataset.version}",
            **{f"model.{k}": v for k, v in sorted(model.params.items())},
        }
    )
    run.log_metrics({f"val_{k}": v for k, v in model.metrics.items()})


def log_model_files(run: RunHandle, model: Any) -> None:
    """Store a fitted built-in model's files under ``model/`` and its confusion matrix on
    ``run`` (what :func:`tabular` does unless ``model_files=False``)."""
    with tempfile.TemporaryDirectory(prefix="civicml-model-") as tmp:
        model.save(Path(tmp))
        run.log_artifacts(tmp, MODEL_PATH)
    if model.confusion_matrix is not None:
        run.log_text(json.dumps(model.confusion_matrix), "evaluation/confusion_matrix.json")


@dataclass(frozen=True, slots=True)
class ScriptTrainedModel:
    """A model a training script wrote: its run, files (under ``model/``) and signature.

    ``proj.models.register(name, trained, run=run)`` registers it with its signature.
    """

    run_id: str
    files: list[str]
    log: str
    exit_code: int
    duration_s: float
    input_signature: list[dict[str, Any]] = field(default_factory=list)
    artifact_path: str = MODEL_PATH
    metrics: dict[str, float] | None = None  # None: the registry takes the run's latest
    model: None = None  # the model itself stays a file: civicml never unpickles it here

    @property
    def signature(self) -> list[dict[str, Any]] | None:
        """Input columns and types (``None`` when unknown), as the registry stores them."""
        return [dict(c) for c in self.input_signature] or None


@metering  # the script's usage (exact, from wait4), on its run (docs/costs.md)
def script(
    path: str | Path,
    channels: Mapping[str, DatasetVersion] | DatasetVersion,
    *,
    run: RunHandle,
    target: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    time_limit_s: float = 3600.0,
    memory_mb: int = 4096,
    cpu_s: int | None = None,
    python: str | Path | None = None,
    python_path: list[str | Path] | None = None,
    env: Mapping[str, str] | None = None,
    task: Literal["auto", "classification", "regression"] = "auto",
    signature: list[dict[str, Any]] | None = None,
    echo: bool | None = None,
) -> ScriptTrainedModel:
    """Run your own training script on dataset versions and record it on ``run``.

    The script gets each channel as ``$CIVICML_CHANNEL_<NAME>/data.parquet``, writes its model
    to ``$CIVICML_MODEL_DIR`` and reads hyperparameters as ``--name value`` arguments (the
    whole contract: docs/script-mode.md). On success the model directory's files are logged
    under ``model/`` (with a ``civicml.pickle/1`` manifest for a bare ``model.pkl``), the log
    as ``logs/train.log``, the exit code as tag ``script.exit_code``. On failure the run ends
    ``failed`` with the log and nothing of the model directory.

    Args:
        path: The training script.
        channels: ``{"train": dv, "validation": dv2}``, or one version (the ``train`` channel).
        run: The run that records params, log, exit code, model files and lineage.
        target: The label column (``CIVICML_TARGET``; the manifest's task and classes).
        hyperparameters: Passed as ``--name value`` arguments and ``CIVICML_HYPERPARAMETERS``.
        time_limit_s: Wall-clock limit; past it the script and its children are killed.
        memory_mb: Address-space limit of the script.
        cpu_s: CPU-seconds limit (default from ``time_limit_s``).
        python: The interpreter (default: the one running civicml).
        python_path: Folders put on the script's ``PYTHONPATH``.
        env: Extra environment variables for the script (no ``CIVICML_`` names).
        task: ``auto``, ``classification`` or ``regression`` for the manifest.
        signature: Input columns (default: the train channel's columns but the target).
        echo: Print the script's lines as they come (default: when stderr is a terminal).

    Returns:
        The :class:`ScriptTrainedModel`.

    Raises:
        ScriptFailedError: The script exited non-zero, timed out or ran out of memory (422).

    Example:
        >>> with proj.start_run(experiment="script") as run:  # doctest: +SKIP
        ...     trained = cm.train.script("train.py", {"train": raw}, target="eligible",
        ...                               hyperparameters={"C": 0.5}, run=run)
        >>> mv = proj.models.register("eligibility-byo", trained, run=run)  # doctest: +SKIP
    """
    named = {"train": channels} if isinstance(channels, DatasetVersion) else dict(channels)
    for name, version in named.items():
        if not isinstance(version, DatasetVersion):
            raise InvalidInputError(
                f"Channel {name!r} of cm.train.script needs a dataset version, not "
                f"{type(version).__name__}.",
                hint="Pass proj.datasets.ingest(...) or proj.datasets.version(name).",
            )
    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(
            f"Training script {str(path)!r} is not a file.", hint="Pass the path of your train.py."
        )
    params = dict(hyperparameters or {})
    backend = run._backend
    for version in named.values():  # quarantine and the personal-data policy
        DatasetsHandle(backend, version.project).check_usable(version)
    tables = {n: DatasetsHandle(backend, v.project).read(v) for n, v in named.items()}
    for version in named.values():
        run.log_input(version)
    run.log_params(
        {
            "script": source.name,
            "script.sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "target": target or "",
            "time_limit_s": time_limit_s,
            "memory_mb": memory_mb,
            **{f"channel.{n}": f"{v.name}@v{v.version}" for n, v in sorted(named.items())},
            **{f"hp.{k}": v for k, v in sorted(params.items())},
        }
    )
    run.log_artifact(source, "code")
    with tempfile.TemporaryDirectory(prefix="civicml-script-") as tmp:
        try:
            result = run_script(
                source,
                tables,
                workdir=tmp,
                target=target,
                hyperparameters=params,
                time_limit_s=time_limit_s,
                memory_mb=memory_mb,
                cpu_s=cpu_s,
                python=python,
                python_path=python_path,
                env=env,
                task=task,
                signature=signature,
                on_line=_echo(source.name) if _interactive(echo) else None,
            )
        except ScriptFailedError as err:
            run.log_text(err.log, LOG_PATH)
            run.set_tags({"script.exit_code": err.exit_code, "script.failure": err.reason})
            run.end(RunStatus.FAILED)
            raise
        run.log_text(result.log, LOG_PATH)
        run.set_tags({"script.exit_code": result.exit_code})
        run.log_metric("script_duration_s", result.duration_s)
        stored = run.log_artifacts(result.model_dir, MODEL_PATH)
        if any(Path(result.output_dir).iterdir()):
            run.log_artifacts(result.output_dir, "output")
    return ScriptTrainedModel(
        run_id=run.id,
        files=[a.path for a in stored],
        log=result.log,
        exit_code=result.exit_code,
        duration_s=result.duration_s,
        input_signature=result.signature,
    )


LEADERBOARD_PATH = "tuning/leaderboard.json"


class _Tune:
    """``cm.train.tune(...)``, with search-space helpers ``.int``, ``.float``, ``.categorical``."""

    int = staticmethod(int_range)
    float = staticmethod(float_range)
    categorical = staticmethod(categorical)

    def __repr__(self) -> str:
        return "<cm.train.tune>"

    def __call__(
        self,
        dataset: DatasetVersion,
        *,
        target: str,
        space: Mapping[str, Param],
        project: ProjectHandle | None = None,
        run: RunHandle | None = None,
        experiment: str = "tuning",
        algorithm: str = "lightgbm",
        metric: str | None = None,
        direction: Literal["maximize", "minimize"] | None = None,
        strategy: Literal["random", "grid", "tpe", "hyperband"] = "tpe",
        max_trials: builtins.int = 20,
        max_parallel: builtins.int = 1,
        time_budget_s: builtins.float | None = None,
        early_stopping: Literal["median"] | None = None,
        warm_start: str | None = None,
        register: str | None = None,
        task: Literal["auto", "classification", "regression"] = "auto",
        params: dict[str, Any] | None = None,
        features: list[str] | None = None,
        validation_fraction: builtins.float = 0.2,
        seed: builtins.int = 0,
        rules: Sequence[Any] | None = None,
        keep_models: Literal["improving", "all"] = "improving",
    ) -> TuningResult:
        """Search hyperparameters of a built-in algorithm; every trial is a child run.

        A parent run (``run``, or a new one in ``experiment`` of ``project``) gets the tuning's
        settings, the best trial's params and metric, and the leaderboard
        (``tuning/leaderboard.json``). Each trial is ``cm.train.tabular`` on its own run in the
        same experiment, tagged ``tuning.id`` (the parent run's id), ``tuning.trial`` and
        ``parent_run_id``. Pruned trials end ``killed`` with tag ``tuning.state=pruned``.

        Args:
            dataset: The dataset version to train on.
            target: The column to predict.
            space: Parameter → ``cm.train.tune.int(lo, hi)``, ``.float(lo, hi, log=True)`` or
                ``.categorical([...])``; merged over ``params`` for each trial.
            project: The project whose ``experiment`` gets the runs (or give ``run``).
            run: An open run to use as the parent (it is not ended here).
            experiment: Experiment of the parent and trial runs when ``project`` is given.
            algorithm: ``lightgbm``, ``logistic``, ``linear`` or ``random_forest``.
            metric: A validation metric, ``val_roc_auc``, ``val_rmse``, … (default
                ``val_roc_auc`` for classification, ``val_rmse`` for regression).
            direction: ``maximize`` or ``minimize`` (default from the metric).
            strategy: ``random``, ``grid`` (categorical and stepped ranges; runs the whole grid
                up to ``max_trials``), ``tpe`` (Bayesian) or ``hyperband`` (TPE + Hyperband).
            max_trials: Most trials to run.
            max_parallel: Trials at once, in threads.
            time_budget_s: No new trial starts after this many seconds.
            early_stopping: ``"median"`` stops a trial whose intermediate metric is worse than
                the median of earlier trials at the same boosting round (LightGBM only).
            warm_start: The id of an earlier tuning (its parent run): its best trials (up to 3)
                are evaluated first.
            register: Register the best trial's model under this name.
            task, params, features, validation_fraction, seed: As in ``cm.train.tabular``.
            rules: Training rules evaluated in every trial, as in ``cm.train.tabular``: a
                ``stop`` rule ends a LightGBM trial's boosting early (the trial completes
                with the model it has); each trial run records the results.
            keep_models: ``"improving"`` (default) stores model files only on trials that
                were at least as good as every trial finished before them — the best trial
                always has its files, and most trials write none (writing a model costs more
                than fitting a small one); ``"all"`` stores them on every trial. Every trial
                records its parameters and metrics either way.

        Returns:
            The :class:`~civicml.training.tune.TuningResult`.

        Example:
            >>> result = cm.train.tune(raw, target="eligible", project=proj,  # doctest: +SKIP
            ...     space={"num_leaves": cm.train.tune.int(8, 64)}, max_trials=10)
        """
        return _tune(**locals())


tune = _Tune()


def _tune(self: _Tune, **kw: Any) -> TuningResult:
    dataset: DatasetVersion = kw["dataset"]
    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"cm.train.tune needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass proj.datasets.ingest(...) or proj.datasets.version(name).",
        )
    project: ProjectHandle | None = kw["project"]
    given: RunHandle | None = kw["run"]
    if (project is None) == (given is None):
        raise InvalidInputError(
            "cm.train.tune needs exactly one of project= (a new parent run) or run= (yours).",
            hint='Pass project=ml.project("benefits").',
        )
    _rules.parse_rules(kw["rules"])  # a bad rule fails before any run starts
    backend = given._backend if given is not None else project._backend  # type: ignore[union-attr]
    executor = _tuning_executor(backend)  # Ray connects (or says it is missing) before any run
    DatasetsHandle(backend, dataset.project).check_usable(dataset)  # quarantine, policy
    frame = DatasetsHandle(backend, dataset.project).to_pandas(dataset)
    algorithm: str = kw["algorithm"]
    target: str = kw["target"]
    metric = "val_" + check_metric(kw["metric"] or default_metric(frame, target, kw["task"]))
    direction = kw["direction"] or default_direction(metric)
    parent = given or project.start_run(experiment=kw["experiment"])  # type: ignore[union-attr]
    info = parent.info
    warm = _warm_start(backend, kw["warm_start"], kw["max_trials"])
    space: Mapping[str, Param] = kw["space"]
    parent.log_input(dataset)
    parent.log_params(
        {
            "tuning.algorithm": algorithm,
            "tuning.metric": metric,
            "tuning.direction": direction,
            "tuning.strategy": kw["strategy"],
            "tuning.max_trials": kw["max_trials"],
            "tuning.max_parallel": kw["max_parallel"],
            "tuning.seed": kw["seed"],
            "tuning.early_stopping": kw["early_stopping"] or "none",
            "tuning.space": json.dumps({k: _describe(v) for k, v in space.items()}),
        }
    )
    parent.set_tags({"tuning.id": parent.id, "tuning.role": "parent"})
    if kw["warm_start"]:
        parent.set_tag("tuning.warm_start", kw["warm_start"])
    probe = algorithm == "lightgbm" and (
        kw["early_stopping"] == "median" or kw["strategy"] == "hyperband"
    )
    trained: dict[builtins.int, TrainedModel] = {}
    trial = _Trial(
        dataset=dataset,
        target=target,
        algorithm=algorithm,
        metric=metric,
        probe=probe,
        parent_id=parent.id,
        project=info.project,
        experiment=info.experiment,
        name=info.name,
        options={
            k: kw.get(k)
            for k in (
                "task",
                "params",
                "features",
                "validation_fraction",
                "seed",
                "rules",
                "keep_models",
            )
        },
    )

    def objective(ctx: TrialContext) -> builtins.float:
        model = trial.run(backend, frame, ctx)
        trained[ctx.number] = model
        return model.metrics[metric]

    recorder: Recorder | None = None
    if executor is not None:  # trials as Ray tasks: the worker opens the stores itself
        trial = replace(
            trial, settings=shippable_settings(backend.settings), principal=backend.ctx.principal
        )
    else:  # each trial's recording overlaps the next trial's training (training/_recording.py)
        recorder = Recorder(name="civicml-tune-record")
        trial = replace(trial, recorder=recorder)

    try:
        result = run_study(
            objective if executor is None else trial,
            space=space,
            tuning_id=parent.id,
            metric=metric,
            direction=direction,
            strategy=kw["strategy"],
            max_trials=kw["max_trials"],
            max_parallel=kw["max_parallel"],
            time_budget_s=kw["time_budget_s"],
            early_stopping=kw["early_stopping"],
            warm_start=warm,
            seed=kw["seed"],
            executor=executor,
        )
        if recorder is not None:
            recorder.close()  # every trial run recorded and ended (or its error raised)
    except BaseException:
        if recorder is not None:
            recorder.close(raise_error=False)
        if given is None:
            parent.end(RunStatus.FAILED)
        raise
    rows = leaderboard(result.trials, direction)
    parent.log_text(
        json.dumps(
            {
                "tuning_id": parent.id,
                "metric": metric,
                "direction": direction,
                "strategy": kw["strategy"],
                "stopped": result.stopped,
                "best_trial": result.best_trial,
                "best_params": result.best_params,
                "best_value": result.best_value,
                "rows": rows,
            },
            indent=2,
            default=str,
        ),
        LEADERBOARD_PATH,
    )
    parent.log_params({f"best.{k}": v for k, v in sorted(result.best_params.items())})
    parent.log_metrics(
        {
            f"best_{metric}": result.best_value,
            "tuning.trials_complete": sum(t.state == "complete" for t in result.trials),
            "tuning.trials_pruned": sum(t.state == "pruned" for t in result.trials),
        }
    )
    parent.set_tags(
        {
            "tuning.best_run_id": result.best_run_id or "",
            "tuning.best_trial": result.best_trial,
            "tuning.stopped": result.stopped,
        }
    )
    version = None
    if kw["register"]:
        best: Any = trained.get(result.best_trial)
        if best is None:  # a remote trial: what it recorded, not the model object
            record = next(t for t in result.trials if t.number == result.best_trial)
            best = _TrialModel(**record.info)
        version = ModelsHandle(backend, info.project).register(kw["register"], best)
    if given is None:
        parent.end(RunStatus.FINISHED)
    return replace(result, model_version=version)


@dataclass(frozen=True, slots=True)
class _TrialModel:
    """The best remote trial's model as the registry needs it (its files are on its run)."""

    run_id: str
    signature: list[dict[str, Any]]
    metrics: dict[str, builtins.float]
    artifact_path: str = MODEL_PATH
    model: None = None


@dataclass(frozen=True, slots=True)
class _Trial:
    """One tuning trial: a child run of the parent, trained as ``cm.train.tabular`` does.

    Called by the local study with the caller's backend (:meth:`run`), or shipped to a Ray
    worker as itself (``__call__``): then it carries plain data only — the settings (without
    the API token) and the caller's principal — and the worker opens the same stores."""

    dataset: DatasetVersion
    target: str
    algorithm: str
    metric: str
    probe: bool
    parent_id: str
    project: str
    experiment: str
    name: str
    options: dict[str, Any]
    settings: dict[str, Any] | None = None
    principal: Any = None
    recorder: Recorder | None = None  # in this process: records while the next trial trains

    def __call__(self, ctx: TrialContext) -> builtins.float:
        backend, frame = _worker_backend(self.settings or {}, self.principal, self.dataset)
        return self.run(backend, frame, ctx).metrics[self.metric]

    def run(self, backend: Any, frame: Any, ctx: TrialContext) -> TrainedModel:
        """Train one trial on a new child run and record it. With a :attr:`recorder` (trials
        in this process, no training rules) everything recorded after the fit is written on
        the recorder's thread while the next trial trains; otherwise here."""
        if self.recorder is None or self.options.get("rules"):
            return self._run_here(backend, frame, ctx)
        self.recorder.check()  # a store that failed to record a trial stops the search
        return self._run_overlapped(backend, frame, ctx, self.recorder)

    def _start(self, backend: Any, ctx: TrialContext) -> RunHandle:
        from civicml.core.compute import worker_info

        record = backend.create_run(
            self.project,
            self.experiment,
            f"{self.name}-trial-{ctx.number}",
            None,
            {
                "tuning.id": self.parent_id,
                "tuning.trial": ctx.number,
                "tuning.role": "trial",
                "parent_run_id": self.parent_id,
                **environment_tags(),  # code and library versions (reproducibility)
                **{f"civicml.compute.{k}": v for k, v in worker_info().items()},
            },
        )
        child = RunHandle(backend, record)
        ctx.run_id = child.id
        return child

    def _prepared(self, frame: Any) -> Any:
        opts = self.options
        return prepared_for(  # made by the first trial, shared by the others
            frame,
            self.target,
            algorithm=self.algorithm,
            task=opts["task"],
            features=opts["features"],
            validation_fraction=opts["validation_fraction"],
            seed=opts["seed"],
        )

    def _probe(self, frame: Any, child: RunHandle, ctx: TrialContext, prepared: Any) -> None:
        opts = self.options
        lightgbm_curve(
            frame,
            self.target,
            metric=self.metric,
            report=lambda step, value: _report(child, ctx, self.metric, step, value),
            task=opts["task"],
            params={**(opts["params"] or {}), **ctx.params},
            features=opts["features"],
            validation_fraction=opts["validation_fraction"],
            seed=opts["seed"],
            prepared=prepared,
        )

    def _run_overlapped(
        self, backend: Any, frame: Any, ctx: TrialContext, recorder: Recorder
    ) -> TrainedModel:
        """Fit here, measured as the trial's usage; hand the recording to ``recorder``."""
        opts = self.options
        measurement = METER.start()
        # Without a probe nothing is logged while fitting: the run is created on the
        # recorder's thread meanwhile (its start is the trial's), and waited for after the fit.
        started: Future[RunHandle] = Future()
        if self.probe:
            started.set_result(self._start(backend, ctx))
        else:
            started = recorder.call(self._start, backend, ctx)
        try:
            prepared = self._prepared(frame)
            if self.probe:
                self._probe(frame, started.result(), ctx, prepared)
            model = fit_tabular(
                frame,
                self.target,
                algorithm=self.algorithm,
                task=opts["task"],
                params={**(opts["params"] or {}), **ctx.params},
                features=opts["features"],
                validation_fraction=opts["validation_fraction"],
                seed=opts["seed"],
                prepared=prepared,
            )
        except BaseException as err:
            usage = METER.end(measurement)
            child = started.result()
            if isinstance(err, TrialPruned):
                child.set_tags({"tuning.state": "pruned", "tuning.pruned": str(err)})
                child.end(RunStatus.KILLED)
            else:
                child.set_tag("tuning.state", "failed")
                child.end(RunStatus.FAILED)
            record_usage(backend, child.id, usage)
            raise
        usage = METER.end(measurement)
        child = started.result()
        metric_key = self.metric.removeprefix("val_")
        if metric_key not in model.metrics:
            child.end(RunStatus.FAILED)
            record_usage(backend, child.id, usage)
            raise InvalidInputError(
                f"Trial {ctx.number} has no metric {self.metric!r}; it has "
                + ", ".join(sorted(f"val_{k}" for k in model.metrics))
                + ".",
                hint="Pick one of those as metric=.",
            )
        metrics = {f"val_{k}": float(v) for k, v in model.metrics.items()}
        kept = opts.get("keep_models") == "all" or ctx.improves(metrics[self.metric])
        recorder.submit(self._record, backend, child, model, kept, usage)
        ctx.info = {"run_id": child.id, "signature": model.signature, "metrics": metrics}
        return TrainedModel(model=model, run_id=child.id, dataset=self.dataset, metrics=metrics)

    def _record(
        self, backend: Any, child: RunHandle, model: TabularModel, kept: bool, usage: Any
    ) -> None:
        """What a trial records after its fit (on the recorder's thread): as ``tabular`` and
        :meth:`_run_here` record it, then its usage."""
        opts = self.options
        try:
            _record_fit(
                child, self.dataset, model, self.target, opts["seed"], opts["validation_fraction"]
            )
            if kept:
                log_model_files(child, model)
            child.set_tags({"tuning.state": "complete", "tuning.model_files": str(kept).lower()})
            child.end(RunStatus.FINISHED)
        except BaseException:
            with contextlib.suppress(Exception):  # unless it ended: the first error is raised
                child.end(RunStatus.FAILED)
            raise
        finally:
            record_usage(backend, child.id, usage)

    @metering_trial  # the trial's usage, probe included, on its run (docs/costs.md)
    def _run_here(self, backend: Any, frame: Any, ctx: TrialContext) -> TrainedModel:
        opts = self.options
        child = self._start(backend, ctx)
        merged = {**(opts["params"] or {}), **ctx.params}
        try:
            prepared = self._prepared(frame)
            if self.probe:
                self._probe(frame, child, ctx, prepared)
            model = tabular(
                self.dataset,
                target=self.target,
                run=child,
                algorithm=self.algorithm,
                task=opts["task"],
                params=merged,
                features=opts["features"],
                validation_fraction=opts["validation_fraction"],
                seed=opts["seed"],
                rules=opts.get("rules"),
                model_files=False,  # below, when this trial keeps them
                _frame=frame,  # read once for the whole tuning job
                _prepared=prepared,
            )
        except TrialPruned as pruned:
            child.set_tags({"tuning.state": "pruned", "tuning.pruned": str(pruned)})
            child.end(RunStatus.KILLED)
            raise
        except BaseException:
            child.set_tag("tuning.state", "failed")
            child.end(RunStatus.FAILED)
            raise
        if self.metric not in model.metrics:
            child.end(RunStatus.FAILED)
            raise InvalidInputError(
                f"Trial {ctx.number} has no metric {self.metric!r}; it has "
                + ", ".join(sorted(model.metrics))
                + ".",
                hint="Pick one of those as metric=.",
            )
        kept = opts.get("keep_models") == "all" or ctx.improves(model.metrics[self.metric])
        if kept:
            log_model_files(child, model.model)
        child.set_tags({"tuning.state": "complete", "tuning.model_files": str(kept).lower()})
        child.end(RunStatus.FINISHED)
        ctx.info = {"run_id": child.id, "signature": model.signature, "metrics": model.metrics}
        return model


_WORKER_BACKENDS: dict[str, Any] = {}


def _worker_backend(settings: dict[str, Any], principal: Any, dataset: DatasetVersion) -> Any:
    """The embedded backend of a Ray worker and the trial's data, opened once per process."""
    from civicml.core.settings import Settings
    from civicml.sdk.embedded import EmbeddedBackend
    from civicml.store.context import worker_context

    key = json.dumps([settings, principal.user, sorted(principal.roles)], default=str)
    found = _WORKER_BACKENDS.get(key)
    if found is None:
        ctx = worker_context(settings, principal)
        backend = EmbeddedBackend(Settings.load(**settings), principal, ctx=ctx)
        found = _WORKER_BACKENDS[key] = [backend, {}]
    backend, frames = found
    if dataset.id not in frames:
        frames.clear()  # one dataset at a time per worker
        frames[dataset.id] = DatasetsHandle(backend, dataset.project).to_pandas(dataset)
    return backend, frames[dataset.id]


def _tuning_executor(backend: Any) -> Any:
    """A Ray executor when ``compute`` names Ray (embedded only), else None (threads)."""
    compute = getattr(backend, "settings", None)
    name = getattr(compute, "compute", "local")
    if name == "local":
        return None
    if backend.remote:
        raise ConfigurationError(
            f"compute = {name!r} runs tuning trials on Ray, and Ray workers open the stores "
            "themselves; a client of a civicml server has no stores to give them.",
            hint="Tune embedded on the stores the server uses (cm.connect() with the same "
            "db_url and artifacts), or set CIVICML_COMPUTE=local to train here.",
        )
    from civicml.core.compute import executor_for

    return executor_for(name)


def _report(
    child: RunHandle, ctx: TrialContext, metric: str, step: builtins.int, value: builtins.float
) -> None:
    child.log_metric(metric, value, step=step)
    ctx.report(step, value)


def _describe(param: Param) -> dict[str, Any]:
    return {"type": type(param).__name__, **asdict(param)}


def _warm_start(
    backend: Any, tuning_id: str | None, max_trials: builtins.int
) -> list[dict[str, Any]]:
    if not tuning_id:
        return []
    try:
        board = json.loads(backend.read_artifact(tuning_id, LEADERBOARD_PATH))
    except Exception as err:
        raise InvalidInputError(
            f"warm_start={tuning_id!r} is not a finished tuning: it has no {LEADERBOARD_PATH}.",
            hint="Pass the tuning_id of an earlier cm.train.tune result (result.tuning_id).",
        ) from err
    rows = [r for r in board["rows"] if r["state"] == "complete"][: min(3, max_trials)]
    meta = {"rank", "trial", "state", "value", "run_id", "duration_s", "last_step"}
    return [{k: v for k, v in r.items() if k not in meta} for r in rows]


def _interactive(echo: bool | None) -> bool:
    return sys.stderr.isatty() if echo is None else echo


def _echo(name: str) -> Callable[[str], None]:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)

    def show(line: str) -> None:
        console.print(f"[dim]{escape(name)} |[/dim] {escape(line)}")

    return show


def __getattr__(name: str) -> Any:
    """``auto`` loads on first use: :mod:`civicml.sdk.automl` builds on this module, so it is
    not imported here (and not in ``__all__``, which a star-import would resolve eagerly)."""
    if name == "auto":
        from civicml.sdk.automl import auto

        return auto
    raise AttributeError(f"module 'civicml.sdk.train' has no attribute {name!r}")
