"""Built-in training for tabular classification and regression.

:func:`fit_tabular` splits a DataFrame into seeded train and validation sets (stratified for
classification), fits one scikit-learn :class:`~sklearn.pipeline.Pipeline` — preprocessing and
estimator together, so serving takes raw rows — evaluates it on the validation set and returns a
:class:`TabularModel`.

Preprocessing by column type is described in :mod:`civicml.training._preprocess`.

Everything that comes before the estimator — the signature, the split, the conformed frames and
the fitted preprocessing with its output — depends on the data and the split, not on the
estimator's parameters. :func:`prepare_tabular` computes it once as a :class:`PreparedTabular`;
``fit_tabular(..., prepared=...)`` then fits only the estimator, so the trials of a tuning job
share it (the same arrays, hence the same models and metrics as fitting from scratch).

The model, its files and the security rule for loading them: :mod:`civicml.training.model`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.ensemble import (  # type: ignore[import-untyped]
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError, closest
from civicml.training._metrics import (
    ConfusionMatrix,
    classification_metrics,
    regression_metrics,
)
from civicml.training._preprocess import build_preprocessor
from civicml.training._signature import SignatureColumn, conform, infer_signature
from civicml.training.model import MANIFEST_FILE, MODEL_FILE, TabularModel, Task

__all__ = [
    "ALGORITHMS",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "PreparedTabular",
    "TabularModel",
    "Task",
    "fit_tabular",
    "prepare_tabular",
    "train_validation_split",
]

#: An integer target with at most this many distinct values is a classification target.
MAX_AUTO_CLASSES = 10
MIN_TRAIN_ROWS = 5
MIN_VALIDATION_ROWS = 2


@dataclass(frozen=True, slots=True)
class _Algorithm:
    tasks: tuple[Task, ...]
    linear: bool
    defaults: Callable[[int], dict[str, Any]]
    make: Callable[[Task, dict[str, Any]], Any]


def _forest(task: Task, params: dict[str, Any]) -> Any:
    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    return cls(**params)


def _lightgbm(task: Task, params: dict[str, Any]) -> Any:
    cls = lightgbm.LGBMClassifier if task == "classification" else lightgbm.LGBMRegressor
    return cls(**params)


#: The built-in algorithms: which tasks each fits and its default parameters for a seed.
#: ``n_jobs=1`` keeps results identical across machines and single-row prediction cheap;
#: pass ``params={"n_jobs": -1}`` to train a forest faster.
ALGORITHMS: dict[str, _Algorithm] = {
    "logistic": _Algorithm(
        tasks=("classification",),
        linear=True,
        defaults=lambda seed: {"C": 1.0, "max_iter": 1000, "random_state": seed},
        make=lambda _task, params: LogisticRegression(**params),
    ),
    "linear": _Algorithm(
        tasks=("regression",),
        linear=True,
        defaults=lambda seed: {"alpha": 1.0, "random_state": seed},
        make=lambda _task, params: Ridge(**params),
    ),
    "random_forest": _Algorithm(
        tasks=("classification", "regression"),
        linear=False,
        defaults=lambda seed: {
            "n_estimators": 100,
            "min_samples_leaf": 1,
            "n_jobs": 1,
            "random_state": seed,
        },
        make=_forest,
    ),
    "lightgbm": _Algorithm(
        tasks=("classification", "regression"),
        linear=False,
        defaults=lambda seed: {
            "n_estimators": 200,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "n_jobs": 1,
            "random_state": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        },
        make=_lightgbm,
    ),
}


def fit_tabular(
    df: pd.DataFrame,
    target: str,
    *,
    algorithm: str = "lightgbm",
    task: Literal["auto", "classification", "regression"] = "auto",
    params: dict[str, Any] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    features: list[str] | None = None,
    callbacks: Sequence[Callable[[Any], None]] = (),
    prepared: PreparedTabular | None = None,
) -> TabularModel:
    """Fit a preprocessing + estimator pipeline on ``df`` and evaluate it on a held-out split.

    Args:
        df: Training data, one row per example.
        target: The column to predict.
        algorithm: ``"logistic"`` (classification), ``"linear"`` (ridge regression),
            ``"random_forest"`` or ``"lightgbm"``.
        task: ``"auto"`` picks classification for boolean, string and categorical targets and
            for integer targets with at most 10 distinct values, regression otherwise.
        params: Estimator parameters; they override the defaults in :data:`ALGORITHMS`
            (including ``random_state``, which defaults to ``seed``).
        validation_fraction: Share of rows held out for evaluation, between 0 and 1.
        seed: Seeds the split and the estimator: same data and seed, same model.
        features: Input columns; all columns except ``target`` when omitted.
        callbacks: LightGBM callbacks (``algorithm="lightgbm"`` only). LightGBM is then fitted
            watching the train and validation sets, named ``train`` and ``validation``, so a
            callback sees both losses each boosting round and may stop training
            (:class:`civicml.training.rules.RuleMonitor`).
        prepared: What :func:`prepare_tabular` computed from this ``df`` with the same
            ``target``, ``task``, ``features``, ``validation_fraction``, ``seed`` and kind of
            algorithm: only the estimator is fitted (a tuning job's trials share it). A
            ``prepared`` made with other arguments is refused.

    Returns:
        The fitted model with its validation metrics.

    Raises:
        InvalidInputError: Unknown algorithm or parameter, algorithm/task mismatch, missing
            target or feature columns, a target with missing values or a single class, or too
            few rows for the split.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"income": range(40), "eligible": [i < 20 for i in range(40)]})
        >>> model = fit_tabular(df, "eligible", algorithm="logistic")
        >>> model.task, model.classes_
        ('classification', [False, True])
        >>> model.predict([{"income": 3}]).tolist()
        [True]
    """
    spec = _algorithm(algorithm)
    effective = {**spec.defaults(seed), **(params or {})}
    preprocess_seconds = 0.0  # counted when the preprocessing is fitted for this model only
    if prepared is None:
        columns, resolved = _check_data(df, target, features, task, spec, algorithm)
        estimator = _estimator(spec, algorithm, resolved, effective)  # bad params: before the split
        prepared = _prepare(df, target, columns, resolved, spec, validation_fraction, seed, task)
        preprocess_seconds = prepared.preprocess_seconds
    else:
        _check_prepared(prepared, df, target, algorithm, spec, task, validation_fraction, seed)
        if tuple(_features(df, target, features)) != prepared.features:
            raise InvalidInputError(
                "prepared= was made for other feature columns than this fit's.",
                hint="Call prepare_tabular() with this fit's features=.",
            )
        resolved = prepared.task
        estimator = _estimator(spec, algorithm, resolved, effective)
    x_train, x_valid = prepared.x_train, prepared.x_valid
    y_train, y_valid = prepared.y_train, prepared.y_valid
    started = time.perf_counter()
    if callbacks:
        _fit_watched(estimator, algorithm, x_train, y_train, x_valid, y_valid, callbacks)
    else:
        estimator.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started + preprocess_seconds
    # The preprocessing fitted once, copied: each model owns its pipeline.
    pipeline = Pipeline([("preprocess", copy.deepcopy(prepared.preprocess)), ("model", estimator)])
    confusion: ConfusionMatrix | None = None
    if resolved == "classification":
        classes = [_plain(c) for c in estimator.classes_]
        proba = estimator.predict_proba(x_valid)
        metrics, confusion = classification_metrics(
            y_valid, _predicted(estimator, algorithm, proba, x_valid), proba, classes
        )
    else:
        classes = []
        metrics = regression_metrics(y_valid, estimator.predict(x_valid))
    return TabularModel(
        pipeline,
        task=resolved,
        algorithm=algorithm,
        target=target,
        params=effective,
        seed=seed,
        signature=[SignatureColumn(**c) for c in prepared.signature],
        classes=classes,
        metrics=metrics,
        confusion_matrix=confusion,
        training={
            "rows": prepared.rows,
            "train_rows": prepared.train_rows,
            "validation_rows": prepared.validation_rows,
            "validation_fraction": validation_fraction,
            "stratified": resolved == "classification",
            "fit_seconds": round(fit_seconds, 4),
        },
    )


@dataclass(frozen=True, slots=True, eq=False)
class PreparedTabular:
    """The data side of a fit, computed once by :func:`prepare_tabular`: the signature, the
    seeded split and the preprocessing fitted on the training rows, with its output for both
    sets. Treat it as read-only: the trials of a tuning job share its arrays."""

    target: str
    task: Task
    features: tuple[str, ...]
    validation_fraction: float
    seed: int
    linear: bool
    rows: int
    signature: tuple[SignatureColumn, ...]
    train_rows: int
    validation_rows: int
    preprocess: Any  # the fitted ColumnTransformer
    x_train: Any  # its output on the training rows
    x_valid: Any  # and on the validation rows
    y_train: np.ndarray[Any, Any]
    y_valid: np.ndarray[Any, Any]
    preprocess_seconds: float = 0.0
    requested: str = "auto"  # the task as asked for (``auto`` resolves to ``task``)


def prepare_tabular(
    df: pd.DataFrame,
    target: str,
    *,
    algorithm: str = "lightgbm",
    task: Literal["auto", "classification", "regression"] = "auto",
    validation_fraction: float = 0.2,
    seed: int = 0,
    features: list[str] | None = None,
) -> PreparedTabular:
    """Everything :func:`fit_tabular` does before it fits the estimator, for reuse across fits
    of the same data with other estimator parameters (``fit_tabular(..., prepared=...)``).

    The preprocessing depends on the kind of algorithm only (linear models get scaling and
    one-hot encoding, the others ordinal codes), not on its parameters.

    Raises:
        InvalidInputError: As :func:`fit_tabular` does for the data and split arguments.
    """
    spec = _algorithm(algorithm)
    columns, resolved = _check_data(df, target, features, task, spec, algorithm)
    return _prepare(df, target, columns, resolved, spec, validation_fraction, seed, task)


def _check_data(
    df: pd.DataFrame,
    target: str,
    features: list[str] | None,
    task: str,
    spec: _Algorithm,
    algorithm: str,
) -> tuple[list[str], Task]:
    """The feature columns and the resolved task, or the error that says what is wrong."""
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"Training data must be a pandas DataFrame, not {type(df)}.")
    if target not in df.columns:
        raise InvalidInputError(
            f"Target column {target!r} is not in the data.",
            hint=closest(target, [str(c) for c in df.columns])
            or "Columns: " + ", ".join(map(str, df.columns)) + ".",
        )
    columns = _features(df, target, features)
    resolved = _resolve_task(df[target], target, task)
    if resolved not in spec.tasks:
        other = "logistic" if resolved == "classification" else "linear"
        raise InvalidInputError(
            f"Algorithm {algorithm!r} does not do {resolved}; it does {' and '.join(spec.tasks)}.",
            hint=f"Use algorithm={other!r}, 'random_forest' or 'lightgbm', or set task=... .",
        )
    return columns, resolved


def _prepare(
    df: pd.DataFrame,
    target: str,
    columns: list[str],
    resolved: Task,
    spec: _Algorithm,
    validation_fraction: float,
    seed: int,
    requested: str,
) -> PreparedTabular:
    signature = infer_signature(df, columns)
    train, valid = train_validation_split(
        df[[*columns, target]],
        target,
        task=resolved,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    y_train, y_valid = _labels(train[target], resolved), _labels(valid[target], resolved)
    started = time.perf_counter()
    preprocess = build_preprocessor(signature, linear=spec.linear)
    x_train = preprocess.fit_transform(conform(train[columns], signature), y_train)
    x_valid = preprocess.transform(conform(valid[columns], signature))
    if not spec.linear:
        # Trees read rows: LightGBM copies a column-major matrix into row order at every fit;
        # done once here (a tree predicts the same whatever the layout).
        x_train, x_valid = _row_major(x_train), _row_major(x_valid)
    return PreparedTabular(
        target=target,
        task=resolved,
        features=tuple(columns),
        validation_fraction=validation_fraction,
        seed=seed,
        linear=spec.linear,
        rows=len(df),
        signature=tuple(signature),
        train_rows=len(train),
        validation_rows=len(valid),
        preprocess=preprocess,
        x_train=x_train,
        x_valid=x_valid,
        y_train=y_train,
        y_valid=y_valid,
        preprocess_seconds=time.perf_counter() - started,
        requested=requested,
    )


def _check_prepared(
    prepared: PreparedTabular,
    df: pd.DataFrame,
    target: str,
    algorithm: str,
    spec: _Algorithm,
    task: str,
    validation_fraction: float,
    seed: int,
) -> None:
    """Refuse a :class:`PreparedTabular` made from other data or arguments than this fit's."""
    if not isinstance(prepared, PreparedTabular):
        raise InvalidInputError(
            f"prepared= takes what prepare_tabular() returns, not {type(prepared).__name__}."
        )
    if prepared.task not in spec.tasks:
        raise InvalidInputError(
            f"Algorithm {algorithm!r} does not do {prepared.task}; it does "
            f"{' and '.join(spec.tasks)}.",
            hint="Use another algorithm, or prepare the data for this one.",
        )
    same = (
        prepared.target == target
        and task in (prepared.requested, prepared.task)
        and prepared.validation_fraction == validation_fraction
        and prepared.seed == seed
        and prepared.linear == spec.linear
        and prepared.rows == len(df)
    )
    if not same:
        raise InvalidInputError(
            "prepared= was made from other data or arguments than this fit's (target, task, "
            "validation_fraction, seed, the kind of algorithm or the number of rows differ).",
            hint="Call prepare_tabular() with this fit's data and arguments.",
        )


def _row_major(x: Any) -> Any:
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x


def _predicted(estimator: Any, algorithm: str, proba: Any, x_valid: Any) -> Any:
    """The predicted classes: LightGBM and random forests predict the most probable class
    (exactly ``classes_[argmax(predict_proba)]``, which is what their ``predict`` computes),
    so their probabilities are not computed twice; other estimators are asked."""
    if algorithm in ("lightgbm", "random_forest"):
        return np.asarray(estimator.classes_).take(np.argmax(proba, axis=1), axis=0)
    return estimator.predict(x_valid)


def _fit_watched(
    estimator: Any,
    algorithm: str,
    train: Any,
    y_train: Any,
    valid: Any,
    y_valid: Any,
    callbacks: Sequence[Callable[[Any], None]],
) -> None:
    """Fit the estimator on the preprocessed sets, LightGBM watching both so callbacks see the
    losses."""
    if algorithm != "lightgbm":
        raise InvalidInputError(
            f"callbacks are LightGBM callbacks; algorithm {algorithm!r} takes none.",
            hint="Drop callbacks=, or use algorithm='lightgbm'.",
        )
    estimator.fit(
        train,
        y_train,
        eval_X=(train, valid),
        eval_y=(y_train, y_valid),
        eval_names=["train", "validation"],
        callbacks=list(callbacks),
    )


def train_validation_split(
    df: pd.DataFrame,
    target: str,
    *,
    task: Task,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seeded train and validation frames :func:`fit_tabular` uses (stratified by class).

    Raises:
        InvalidInputError: The fraction is not between 0 and 1, the target has missing values
            or one class, a class has a single row, or there are too few rows.
    """
    if not 0 < validation_fraction < 1:
        raise InvalidInputError(
            f"validation_fraction must be between 0 and 1 (exclusive), not {validation_fraction}.",
            hint="0.2 holds out a fifth of the rows for evaluation.",
        )
    y = df[target]
    missing = int(y.isna().sum())
    if missing:
        raise InvalidInputError(
            f"Target column {target!r} has {missing} missing value(s).",
            hint="Drop the unlabelled rows before training: df.dropna(subset=[target]).",
        )
    per_split = 1
    if task == "classification":
        counts = y.value_counts(sort=False)
        if len(counts) < 2:
            raise InvalidInputError(
                f"Target column {target!r} has one class ({_plain(counts.index[0])!r}); "
                "classification needs at least two.",
                hint="Check the target column, or train on data that has both outcomes.",
            )
        rare = counts[counts < 2]
        if len(rare):
            raise InvalidInputError(
                f"Class {_plain(rare.index[0])!r} of target {target!r} has a single row; a "
                "stratified split needs at least two rows per class.",
                hint="Add examples of that class or drop its row.",
            )
        per_split = len(counts)
    n_train, n_valid = _split_sizes(len(df), validation_fraction)
    if not _enough(n_train, n_valid, per_split):
        minimum = len(df) + 1
        while not _enough(*_split_sizes(minimum, validation_fraction), per_split):
            minimum += 1
        raise InvalidInputError(
            f"Too few rows to train: {len(df)} row(s) give {n_train} for training and {n_valid} "
            f"for validation (validation_fraction={validation_fraction}).",
            hint=f"Provide at least {minimum} rows, or change validation_fraction.",
        )
    train, valid = train_test_split(
        df,
        test_size=n_valid,
        random_state=seed,
        shuffle=True,
        stratify=y if task == "classification" else None,
    )
    return train, valid


def _split_sizes(rows: int, validation_fraction: float) -> tuple[int, int]:
    n_valid = math.ceil(rows * validation_fraction)
    return rows - n_valid, n_valid


def _enough(n_train: int, n_valid: int, per_split: int) -> bool:
    return n_train >= max(MIN_TRAIN_ROWS, per_split) and n_valid >= max(
        MIN_VALIDATION_ROWS, per_split
    )


def _algorithm(name: str) -> _Algorithm:
    spec = ALGORITHMS.get(name)
    if spec is None:
        raise InvalidInputError(
            f"Unknown algorithm {name!r}.",
            hint=closest(name, ALGORITHMS) or "Choose one of: " + ", ".join(ALGORITHMS) + ".",
        )
    return spec


def _features(df: pd.DataFrame, target: str, features: list[str] | None) -> list[str]:
    if features is None:
        columns = [c for c in df.columns if c != target]
    else:
        unknown = [f for f in features if f not in df.columns]
        if unknown:
            raise InvalidInputError(
                f"Feature column {unknown[0]!r} is not in the data.",
                hint=closest(str(unknown[0]), [str(c) for c in df.columns])
                or "Columns: " + ", ".join(map(str, df.columns)) + ".",
            )
        if target in features:
            raise InvalidInputError(
                f"Target column {target!r} is also listed as a feature.",
                hint="Remove it from features=[...]: a model cannot take its own answer as input.",
            )
        columns = list(dict.fromkeys(features))
    if not columns:
        raise InvalidInputError(
            "There are no feature columns to train on.", hint="Add input columns to the data."
        )
    not_text = [c for c in columns if not isinstance(c, str)]
    if not_text:
        raise InvalidInputError(
            f"Column name {not_text[0]!r} is not a string.",
            hint="Rename the columns to strings: df.columns = df.columns.astype(str).",
        )
    return columns


def _resolve_task(y: pd.Series, target: str, task: str) -> Task:
    numeric = pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype)
    if task == "regression":
        if not numeric:
            raise InvalidInputError(
                f"Target column {target!r} is not numeric ({y.dtype}); regression needs numbers.",
                hint="Use task='classification' for labels.",
            )
        return "regression"
    if task == "classification":
        return "classification"
    if task != "auto":
        raise InvalidInputError(
            f"Unknown task {task!r}.",
            hint=closest(task, ["auto", "classification", "regression"])
            or "Use 'auto', 'classification' or 'regression'.",
        )
    if not numeric:
        return "classification"
    if pd.api.types.is_integer_dtype(y.dtype) and y.nunique() <= MAX_AUTO_CLASSES:
        return "classification"
    return "regression"


def _estimator(spec: _Algorithm, algorithm: str, task: Task, params: dict[str, Any]) -> Any:
    known = spec.make(task, spec.defaults(0)).get_params(deep=False)
    unknown = [key for key in params if key not in known]
    if unknown:
        raise InvalidInputError(
            f"Unknown parameter {unknown[0]!r} for algorithm {algorithm!r}.",
            hint=closest(unknown[0], known) or "Parameters: " + ", ".join(sorted(known)) + ".",
        )
    try:
        json.dumps(params)
    except TypeError as err:
        raise InvalidInputError(
            f"Parameters of {algorithm!r} must be JSON values (numbers, strings, lists, dicts).",
            hint=str(err),
        ) from err
    return spec.make(task, params)


def _labels(y: pd.Series, task: Task) -> np.ndarray[Any, Any]:
    """Target values as NumPy: floats for regression, labels of their own type otherwise."""
    if task == "regression":
        dtype: Any = "float64"
    elif pd.api.types.is_bool_dtype(y.dtype):
        dtype = bool
    elif pd.api.types.is_numeric_dtype(y.dtype):
        dtype = None
    else:
        y, dtype = y.astype(object), object
    result: np.ndarray[Any, Any] = y.to_numpy(dtype=dtype)
    return result


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
