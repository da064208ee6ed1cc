"""``cm.train``: built-in training wired to the platform.

``cm.train.tabular(dataset_version, target=..., algorithm=..., run=run)`` loads the dataset
version, fits a model (:func:`civicml.training.fit_tabular`), and records everything on the run:
params, validation metrics, the confusion matrix, the model files as artifacts under ``model/``,
and lineage ``dataset version → run``. Register the result with
``proj.models.register(name, trained, run=run)``.

``cm.train.script("train.py", {"train": dv}, target=..., run=run)`` runs your own training
script in a subprocess under time and memory limits (:func:`civicml.training.script.run_script`,
docs/script-mode.md) and records its log, exit code and model files on the run.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from civicml.core.errors import InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.sdk.client import RunHandle
from civicml.sdk.datasets import DatasetsHandle
from civicml.tracking.schemas import RunStatus
from civicml.training import TabularModel, fit_tabular
from civicml.training.script import ScriptFailedError, run_script

__all__ = ["ScriptTrainedModel", "TrainedModel", "script", "tabular"]

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
    frame = DatasetsHandle(backend, dataset.project).to_pandas(dataset)
    model = fit_tabular(
        frame,
        target,
        algorithm=algorithm,
        task=task,
        params=params,
        validation_fraction=validation_fraction,
        seed=seed,
        features=features,
    )
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
    with tempfile.TemporaryDirectory(prefix="civicml-model-") as tmp:
        model.save(Path(tmp))
        run.log_artifacts(tmp, MODEL_PATH)
    if model.confusion_matrix is not None:
        run.log_text(json.dumps(model.confusion_matrix), "evaluation/confusion_matrix.json")
    return TrainedModel(
        model=model,
        run_id=run.id,
        dataset=dataset,
        metrics={f"val_{k}": float(v) for k, v in model.metrics.items()},
    )


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


def _interactive(echo: bool | None) -> bool:
    return sys.stderr.isatty() if echo is None else echo


def _echo(name: str) -> Callable[[str], None]:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)

    def show(line: str) -> None:
        console.print(f"[dim]{escape(name)} |[/dim] {escape(line)}")

    return show
