"""A fitted tabular model with its signature and metrics, and its files on disk.

:meth:`TabularModel.save` writes two files: ``model.joblib``, the fitted scikit-learn pipeline
(pickled by joblib), and ``civicml-model.json``, the manifest: task, algorithm, parameters, seed,
signature, classes, metrics, confusion matrix, training row counts and library versions.

Security: :meth:`TabularModel.load` unpickles ``model.joblib``, which can run arbitrary code. The
platform only loads model files whose SHA-256 matched the registry — that check lives in the
registry and serving layers, not here — and ``load`` must never be pointed at untrusted files.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Literal

import joblib  # type: ignore[import-untyped]
import lightgbm
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import sklearn  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.training._metrics import ConfusionMatrix
from civicml.training._signature import SignatureColumn, conform

__all__ = ["FORMAT", "MANIFEST_FILE", "MODEL_FILE", "TabularModel", "Task"]

Task = Literal["classification", "regression"]

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "civicml-model.json"
FORMAT = "civicml.tabular/1"


class TabularModel:
    """A fitted tabular model: preprocessing and estimator in one pipeline, plus its metadata.

    Made by :func:`fit_tabular` or :meth:`load`. Predictions take raw rows — a DataFrame, a
    record (dict) or a list of records — with the columns of :attr:`signature`.

    Attributes:
        pipeline: The fitted scikit-learn pipeline (``preprocess`` then ``model``).
        task: ``"classification"`` or ``"regression"``.
        algorithm: The algorithm name given to :func:`fit_tabular`.
        target: The predicted column.
        params: The estimator parameters used (defaults merged with overrides).
        seed: The seed of the split and the estimator.
        signature: Raw input columns, each ``{"name", "type", "nullable"}``.
        classes_: Class labels in probability-column order (sorted); empty for regression.
        metrics: Validation metrics, each a float (see :mod:`civicml.training._metrics`).
        confusion_matrix: ``{"labels", "matrix"}`` on the validation set, or ``None``.
        training: Row counts, the validation fraction and the fit time in seconds.
        library_versions: Versions of Python and the libraries the model was fitted with.
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        task: Task,
        algorithm: str,
        target: str,
        params: dict[str, Any],
        seed: int,
        signature: list[SignatureColumn],
        classes: list[Any],
        metrics: dict[str, float],
        confusion_matrix: ConfusionMatrix | None,
        training: dict[str, Any],
        library_versions: dict[str, str] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.task: Task = task
        self.algorithm = algorithm
        self.target = target
        self.params = params
        self.seed = seed
        self.signature = signature
        self.classes_ = classes
        self.metrics = metrics
        self.confusion_matrix = confusion_matrix
        self.training = training
        self.library_versions = library_versions or _library_versions()

    def __repr__(self) -> str:
        return (
            f"TabularModel(task={self.task!r}, algorithm={self.algorithm!r}, "
            f"target={self.target!r})"
        )

    @property
    def feature_names(self) -> list[str]:
        """The raw input columns, in signature order."""
        return [column["name"] for column in self.signature]

    def validate(self, data: Any) -> pd.DataFrame:
        """Check rows against the signature; return them in the dtypes the pipeline expects.

        This is what serving calls on each request; nulls are allowed in every column (the
        pipeline imputes them). Records (dicts) take a fast path that checks values in Python.
        To validate once and predict, call ``self.pipeline`` on the result:
        ``proba = model.pipeline.predict_proba(model.validate(records))``; the labels are then
        ``np.asarray(model.classes_)[proba.argmax(axis=1)]``.

        Args:
            data: A DataFrame, one record (dict) or a list of records.

        Returns:
            A frame with exactly the signature's columns, ready for ``self.pipeline``.

        Raises:
            InvalidInputError: A column is missing, unexpected or of the wrong type. The message
                names the (first) column; ``details`` lists every problem.
        """
        return conform(data, self.signature)

    def predict(self, data: Any) -> np.ndarray[Any, Any]:
        """Predicted labels (classification) or values (regression), one per row.

        Columns not in the signature are ignored, so a frame that still holds the target works.

        Raises:
            InvalidInputError: A signature column is missing or has values of the wrong type.
        """
        result: np.ndarray[Any, Any] = self.pipeline.predict(
            conform(data, self.signature, allow_extra=True)
        )
        return result

    def predict_proba(self, data: Any) -> np.ndarray[Any, Any]:
        """Class probabilities, one row per input row, columns in :attr:`classes_` order.

        Raises:
            InvalidInputError: The model is a regression model, or the input is invalid.
        """
        if self.task != "classification":
            raise InvalidInputError(
                "predict_proba needs a classification model; this one does regression.",
                hint="Use predict() for regression values.",
            )
        result: np.ndarray[Any, Any] = self.pipeline.predict_proba(
            conform(data, self.signature, allow_extra=True)
        )
        return result

    def manifest(self) -> dict[str, Any]:
        """The JSON-ready description written to ``civicml-model.json``."""
        return {
            "format": FORMAT,
            "model_file": MODEL_FILE,
            "task": self.task,
            "algorithm": self.algorithm,
            "target": self.target,
            "params": self.params,
            "seed": self.seed,
            "signature": self.signature,
            "classes": self.classes_,
            "positive_class": self.classes_[1] if len(self.classes_) == 2 else None,
            "metrics": self.metrics,
            "confusion_matrix": self.confusion_matrix,
            "training": self.training,
            "library_versions": self.library_versions,
        }

    def save(self, directory: Path) -> list[Path]:
        """Write ``model.joblib`` (the pipeline) and ``civicml-model.json`` into ``directory``.

        Returns:
            The written files.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_path, manifest_path = directory / MODEL_FILE, directory / MANIFEST_FILE
        joblib.dump(self.pipeline, model_path)
        manifest_path.write_text(
            json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return [model_path, manifest_path]

    @classmethod
    def load(cls, directory: Path) -> TabularModel:
        """Load a model written by :meth:`save`.

        Warning:
            This unpickles ``model.joblib``, which can run arbitrary code. Only load files whose
            SHA-256 matched the registry — the registry and serving layers check that before
            calling this — and never point it at files from an untrusted source.

        Raises:
            NotFoundError: A model file is missing.
            InvalidInputError: The manifest is not a civicml tabular model.
        """
        directory = Path(directory)
        manifest_path, model_path = directory / MANIFEST_FILE, directory / MODEL_FILE
        for path in (manifest_path, model_path):
            if not path.is_file():
                raise NotFoundError(
                    f"Model file {path} does not exist.",
                    hint="Point load() at a directory written by TabularModel.save().",
                )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise InvalidInputError(
                f"{manifest_path} has format {manifest.get('format')!r}, expected {FORMAT!r}.",
                hint="It was not written by this version of civicml's TabularModel.save().",
            )
        return cls(
            joblib.load(model_path),
            task=manifest["task"],
            algorithm=manifest["algorithm"],
            target=manifest["target"],
            params=manifest["params"],
            seed=manifest["seed"],
            signature=manifest["signature"],
            classes=manifest["classes"],
            metrics=manifest["metrics"],
            confusion_matrix=manifest["confusion_matrix"],
            training=manifest["training"],
            library_versions=manifest["library_versions"],
        )


def _library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "joblib": joblib.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
