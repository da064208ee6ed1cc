"""A fitted tabular model with its signature and metrics, and its files on disk.

:meth:`TabularModel.save` writes two files: ``model.skops``, the fitted scikit-learn pipeline in
the `skops <https://skops.readthedocs.io>`_ format (a zip of JSON and NumPy arrays; LightGBM
boosters inside it are held as LightGBM's own text model), and ``civicml-model.json``, the
manifest: task, algorithm, parameters, seed, signature, classes, metrics, confusion matrix,
training row counts and library versions.

Model files are data: :meth:`TabularModel.load` never unpickles anything. It reads
``model.skops`` with ``skops.io.load`` and an explicit allowlist (:data:`TRUSTED_TYPES`, the
few types beyond scikit-learn's and NumPy's own that the built-in algorithms need); a file that
names any other type, or that is not a skops file at all (a pickle), is refused before any of
it is turned into objects.

Bundles written before civicml 0.9 hold ``model.joblib`` (a pickle, manifest format
``civicml.tabular/1``). :meth:`TabularModel.load` refuses them; :func:`convert_legacy_bundle`
rewrites one in the safe format and is the only place civicml still unpickles — the platform
calls it only on bundles whose SHA-256 matched the registry (files civicml itself wrote).
"""

from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path
from typing import Any, Literal

import lightgbm
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import sklearn  # type: ignore[import-untyped]
import skops  # type: ignore[import-untyped]
import skops.io  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.training._metrics import ConfusionMatrix
from civicml.training._signature import SignatureColumn, conform

__all__ = [
    "FORMAT",
    "LEGACY_FORMAT",
    "LEGACY_MODEL_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "PICKLE_FORMAT",
    "PICKLE_MODEL_FILE",
    "TRUSTED_TYPES",
    "TabularModel",
    "Task",
    "UnsafeModelFormatError",
    "convert_legacy_bundle",
]

Task = Literal["classification", "regression"]

MODEL_FILE = "model.skops"
MANIFEST_FILE = "civicml-model.json"
FORMAT = "civicml.tabular/2"
#: The pickle format of civicml before 0.9 (``model.joblib``); never loaded by :meth:`load`.
LEGACY_FORMAT = "civicml.tabular/1"
LEGACY_MODEL_FILE = "model.joblib"
#: A bring-your-own pickle (``model.pkl``): never loaded in-process; endpoints may serve it from
#: an isolated worker (``pickle_models = "sandbox"``, :mod:`civicml.serving.sandbox`).
PICKLE_FORMAT = "civicml.pickle/1"
PICKLE_MODEL_FILE = "model.pkl"

#: The types ``model.skops`` may name beyond those skops trusts by default (scikit-learn
#: estimators, NumPy arrays, builtins). Exactly what the built-in algorithms need: nothing is
#: imported by a dotted path unless it is listed here.
TRUSTED_TYPES: tuple[str, ...] = (
    "civicml.training._preprocess.epoch_seconds",
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
)

_CONVERT_HINT = (
    "Convert stored bundles once with convert_model_bundles() (civicml.evaluation.models), "
    "or train and register the model again; civicml never loads pickled model files."
)


class UnsafeModelFormatError(InvalidInputError):
    """A model file is not in the safe format (a pickle, or a skops file naming other types)."""


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
        """Write ``model.skops`` (the pipeline) and ``civicml-model.json`` into ``directory``.

        Returns:
            The written files.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_path, manifest_path = directory / MODEL_FILE, directory / MANIFEST_FILE
        skops.io.dump(self.pipeline, model_path)
        manifest_path.write_text(
            json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return [model_path, manifest_path]

    @classmethod
    def load(cls, directory: Path) -> TabularModel:
        """Load a model written by :meth:`save`, without unpickling anything.

        Raises:
            NotFoundError: A model file is missing.
            UnsafeModelFormatError: The bundle is a pickle (``model.joblib``, the format before
                civicml 0.9), or ``model.skops`` is not a skops file or names a type outside
                :data:`TRUSTED_TYPES`. Nothing of the file was executed.
            InvalidInputError: The manifest is not a civicml tabular model.
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        if manifest.get("format") == LEGACY_FORMAT:
            raise UnsafeModelFormatError(
                f"The model bundle is a pickle ({LEGACY_MODEL_FILE}, format {LEGACY_FORMAT!r}); "
                "civicml does not load pickled model files.",
                hint=_CONVERT_HINT,
            )
        if manifest.get("format") == PICKLE_FORMAT:
            raise UnsafeModelFormatError(
                f"The model bundle is a pickle ({PICKLE_MODEL_FILE}, format {PICKLE_FORMAT!r}); "
                "civicml does not load pickled model files in its own process.",
                hint="Only an endpoint can serve it, in an isolated worker, when the server sets "
                "pickle_models = 'sandbox' and the version was signed at registration "
                "(docs/security.md); explanations and bias evaluations need a model trained by "
                "civicml.",
            )
        if manifest.get("format") != FORMAT or manifest.get("model_file") != MODEL_FILE:
            raise InvalidInputError(
                f"The manifest has format {manifest.get('format')!r}, expected {FORMAT!r}.",
                hint="It was not written by this version of civicml's TabularModel.save().",
            )
        model_path = directory / MODEL_FILE
        if not model_path.is_file():
            raise NotFoundError(
                f"Model file {MODEL_FILE} is missing from the bundle.",
                hint="Point load() at a directory written by TabularModel.save().",
            )
        return cls._from_manifest(_load_skops(model_path), manifest)

    @classmethod
    def _from_manifest(cls, pipeline: Any, manifest: dict[str, Any]) -> TabularModel:
        return cls(
            pipeline,
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


def convert_legacy_bundle(directory: Path) -> list[Path]:
    """Rewrite a pre-0.9 bundle (``model.joblib``) in place in the safe format.

    Warning:
        This unpickles ``model.joblib`` once — the only unpickling left in civicml. Call it only
        on files civicml itself wrote: :func:`civicml.evaluation.models.convert_model_bundles`
        does so only after the bundle's SHA-256 matched the registry. Never call it in a server
        process on an uploaded file.

    Returns:
        The files written (``model.skops`` and the new ``civicml-model.json``);
        ``model.joblib`` is removed.

    Raises:
        NotFoundError: A file is missing.
        InvalidInputError: The bundle is not a legacy civicml tabular model.
    """
    import joblib  # type: ignore[import-untyped]  # only the conversion needs it

    directory = Path(directory)
    manifest = _read_manifest(directory)
    legacy = directory / LEGACY_MODEL_FILE
    if manifest.get("format") != LEGACY_FORMAT or not legacy.is_file():
        raise InvalidInputError(
            f"The model bundle is not a {LEGACY_FORMAT!r} bundle with {LEGACY_MODEL_FILE}.",
            hint="Only bundles written by civicml before 0.9 need converting.",
        )
    model = TabularModel._from_manifest(joblib.load(legacy), manifest)
    model.library_versions = {**manifest["library_versions"], "skops": skops.__version__}
    written = model.save(directory)
    legacy.unlink()
    return written


def _read_manifest(directory: Path) -> dict[str, Any]:
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise NotFoundError(
            f"Model file {MANIFEST_FILE} is missing from the bundle.",
            hint="Point load() at a directory written by TabularModel.save().",
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInputError(
            f"{MANIFEST_FILE} is not valid JSON.",
            hint="It was not written by civicml's TabularModel.save().",
        ) from err
    if not isinstance(manifest, dict):
        raise InvalidInputError(
            f"{MANIFEST_FILE} is not a JSON object.",
            hint="It was not written by civicml's TabularModel.save().",
        )
    return manifest


def _load_skops(path: Path) -> Any:
    """``skops.io.load`` with the allowlist; anything else is refused before it is built."""
    if not zipfile.is_zipfile(path):
        raise UnsafeModelFormatError(
            f"{MODEL_FILE} is not a skops file (a pickle, or another format civicml does not "
            "load).",
            hint=_CONVERT_HINT,
        )
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as err:  # a damaged or hand-made zip: report it, never build it
        raise UnsafeModelFormatError(
            f"{MODEL_FILE} is not a readable skops file.", hint=_CONVERT_HINT
        ) from err
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise UnsafeModelFormatError(
            f"{MODEL_FILE} names type(s) civicml does not load: {', '.join(unknown[:5])}.",
            hint="Only models trained by civicml's built-in algorithms are loaded; "
            + _CONVERT_HINT,
        )
    try:
        return skops.io.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as err:
        raise UnsafeModelFormatError(
            f"{MODEL_FILE} could not be loaded as a civicml model.", hint=_CONVERT_HINT
        ) from err


def _library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "skops": skops.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
