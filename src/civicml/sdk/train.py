"""``cm.train``: built-in training wired to the platform.

``cm.train.tabular(dataset_version, target=..., algorithm=..., run=run)`` loads the dataset
version, fits a model (:func:`civicml.training.fit_tabular`), and records everything on the run:
params, validation metrics, the confusion matrix, the model files as artifacts under ``model/``,
and lineage ``dataset version → run``. Register the result with
``proj.models.register(name, trained, run=run)``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from civicml.core.errors import InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.sdk.client import RunHandle
from civicml.sdk.datasets import DatasetsHandle
from civicml.training import TabularModel, fit_tabular

__all__ = ["TrainedModel", "tabular"]

MODEL_PATH = "model"


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
