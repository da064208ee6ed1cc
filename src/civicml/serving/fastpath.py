"""Compiled fast paths: a fitted tabular pipeline turned into NumPy arithmetic at load time.

A scikit-learn pipeline spends milliseconds on one row that its arithmetic needs microseconds
for: ``ColumnTransformer`` and pandas cost about 3 ms per call whatever the row count. When a
model version is loaded, :func:`compile_fast_path` reads the fitted pipeline that
:func:`civicml.training.fit_tabular` builds (see :mod:`civicml.training._preprocess`) and keeps
only the numbers it needs:

* numbers and timestamps (as float seconds since the epoch): the median imputer's statistics and,
  for linear models, the scaler's mean and scale;
* categories (strings, booleans): the most-frequent imputer's value and the encoder's categories
  (one-hot for linear models — an unseen category is all zeros — or ordinal codes for trees — an
  unseen category is the encoder's ``unknown_value``).

Then, per estimator:

* ``LogisticRegression`` and ``Ridge``: one matrix product of the scaled numbers plus one looked-up
  weight vector per category column (the one-hot columns are never built), then the estimator's
  link: the logistic function for two classes, softmax for more, none for ridge;
* random forests: the ordinal matrix in ``float32``, each tree's ``tree_.predict`` summed in the
  forest's order and divided by the tree count, as the forest's own ``predict_proba`` does;
* LightGBM: the ordinal matrix given to the booster with the parameters the scikit-learn wrapper
  would pass, with the wrapper's binary ``[1 - p, p]`` stacking; the booster's predictor is built
  once, not on every call as ``Booster.predict`` builds it (a one-row request: 117 -> 89 µs).

Records are checked and encoded in Python (:meth:`FastPath.encode`) without building a frame;
values that do not plainly fit the signature give ``None``, and the caller goes through the
model's own validation (which words the error, or accepts, e.g., NumPy scalars) and
:meth:`FastPath.from_frame`.

Nothing is guessed: a pipeline with any step, parameter or estimator this module does not know
compiles to ``None`` (the caller keeps the pipeline), and a compiled path is checked against the
pipeline on probe rows built from the fitted statistics (missing values, every known category,
an unseen one) before it is used: probabilities and values to ``1e-9`` for linear models,
bit-for-bit for trees. Anything else falls back to the pipeline too.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["INLINE_MAX_RECORDS", "Encoded", "FastPath", "compile_fast_path", "inline_records"]

log = logging.getLogger("civicml.serving")

#: Linear probes must match the pipeline to this (relative and absolute) tolerance.
LINEAR_TOLERANCE = 1e-9
_EPOCH = np.datetime64(0, "ns")
_SECOND = np.timedelta64(1_000_000_000, "ns")
_NUMBER_TYPES = ("int64", "float64")
_UNSEEN = "\x00civicml-unseen-category"
#: The most records a server predicts on its event loop in one request (linear models).
INLINE_MAX_RECORDS = 64
#: A tree model's request is predicted on the event loop when its encoding and prediction are
#: measured to take at most this long (seconds): about what a hop to a worker thread and back
#: costs a request under load, and short enough not to hold other requests up.
INLINE_BUDGET_S = 0.001


@dataclass(frozen=True, slots=True)
class Encoded:
    """Checked rows in the fast path's form.

    Attributes:
        rows: How many rows.
        numbers: ``(rows, k)`` float64: the number columns, then the timestamp columns as
            seconds since the epoch, in the pipeline's column order; NaN where missing.
        categories: One list of values per category column (pipeline order); ``None`` where
            missing.
    """

    rows: int
    numbers: np.ndarray[Any, Any]
    categories: tuple[list[Any], ...]

    def __len__(self) -> int:
        return self.rows

    @staticmethod
    def concat(parts: Sequence[Encoded]) -> Encoded:
        """The rows of ``parts`` in order, as one :class:`Encoded`."""
        if len(parts) == 1:
            return parts[0]
        numbers = np.concatenate([p.numbers for p in parts])
        columns = tuple(
            [value for p in parts for value in p.categories[j]]
            for j in range(len(parts[0].categories))
        )
        return Encoded(sum(p.rows for p in parts), numbers, columns)


@dataclass(frozen=True, slots=True)
class _Number:
    name: str
    timestamp: bool
    integer: bool
    median: float
    scaled: bool  # whether a StandardScaler follows the imputer
    mean: float  # scaler mean (0.0 without one)
    scale: float  # scaler scale (1.0 without one)


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    kind: str  # "string" or "bool"
    fill: Any  # the most-frequent imputer's value
    codes: dict[Any, int]  # category -> position in the encoder's categories_
    categories: list[Any]
    unknown: float  # an ordinal encoder's code for unseen categories (NaN for one-hot)


Prediction = tuple[list[Any], list[list[float]] | None]


class FastPath:
    """A fitted pipeline compiled to NumPy (build one with :func:`compile_fast_path`).

    Attributes:
        kind: ``"linear"``, ``"forest"`` or ``"lightgbm"``.
        inline: Whether a small request costs so little that a server should predict it on
            its event loop rather than in a worker thread (a thread hop costs more than the
            arithmetic): ``inline_records > 0``.
        inline_records: The most records one request may carry to be predicted on the event
            loop: :data:`INLINE_MAX_RECORDS` for linear models (microseconds of arithmetic);
            for trees, what fits :data:`INLINE_BUDGET_S` as measured when the path is compiled
            (:func:`inline_records`; 0 when one record does not), so a big forest, or a big
            request, is never predicted on the loop.
    """

    def __init__(
        self,
        *,
        signature: Sequence[Mapping[str, Any]],
        numbers: list[_Number],
        categories: list[_Category],
        kind: str,
        predict: Callable[[np.ndarray[Any, Any], tuple[list[Any], ...]], Any],
        classes: list[Any] | None,
    ) -> None:
        self.kind = kind
        self.inline_records = INLINE_MAX_RECORDS if kind == "linear" else 0
        self._numbers = numbers
        self._categories = categories
        self._predict = predict
        self._classes = None if classes is None else np.asarray(classes, dtype=object)
        self._names = [str(c["name"]) for c in signature]
        self._known = frozenset(self._names)
        number_at = {n.name: i for i, n in enumerate(numbers)}
        category_at = {c.name: j for j, c in enumerate(categories)}
        # (name, check, slot): check 0 float, 1 int, 2 timestamp, 3 string, 4 bool
        plan: list[tuple[str, int, int]] = []
        for column in signature:
            name, kind_ = str(column["name"]), str(column["type"])
            if name in number_at:
                check = 2 if kind_ == "timestamp" else 1 if kind_ == "int64" else 0
                plan.append((name, check, number_at[name]))
            else:
                plan.append((name, 3 if kind_ == "string" else 4, category_at[name]))
        self._plan = plan
        self._timestamps = [i for i, n in enumerate(numbers) if n.timestamp]

    @property
    def inline(self) -> bool:
        return self.inline_records > 0

    # Input --------------------------------------------------------------------------------------
    def encode(self, records: Any) -> Encoded | None:
        """Check plain JSON-like records against the signature and encode them.

        Returns ``None`` unless ``records`` is a non-empty list of dicts with exactly the
        signature's keys whose values plainly fit (numbers as ``int``/``float`` — whole numbers
        for integer columns, finite —, strings as ``str``, booleans as ``bool``, timestamps as
        ISO 8601 strings, ``None`` anywhere): the model's own validation decides the rest.
        """
        if type(records) is not list or not records:
            return None
        known = self._known
        width = len(self._numbers)
        numbers: list[list[Any]] = []
        categories: tuple[list[Any], ...] = tuple([] for _ in self._categories)
        stamps: list[list[Any]] = []
        for record in records:
            if type(record) is not dict or record.keys() != known:
                return None
            row: list[Any] = [None] * width
            for name, check, slot in self._plan:
                value = record[name]
                if value is None:
                    if check >= 3:
                        categories[slot].append(None)
                    continue
                kind = type(value)
                if check <= 1:
                    if kind is float:
                        if not math.isfinite(value):
                            return None  # NaN or an infinity: the validation refuses it
                        if check == 1 and not value.is_integer():
                            return None
                    elif kind is not int:
                        return None
                    row[slot] = value
                elif check == 2:
                    if kind is not str:
                        return None
                    row[slot] = value
                elif check == 3:
                    if kind is not str:
                        return None
                    categories[slot].append(value)
                elif kind is bool:
                    categories[slot].append(value)
                else:
                    return None
            numbers.append(row)
            if self._timestamps:
                stamps.append(row)
        if self._timestamps and not _parse_timestamps(stamps, self._timestamps):
            return None
        try:
            matrix = np.array(numbers, dtype=np.float64).reshape(len(records), width)
        except (TypeError, ValueError, OverflowError):
            return None
        return Encoded(len(records), matrix, categories)

    def from_frame(self, frame: Any) -> Encoded:
        """Encode a frame the model's validation returned (pipeline dtypes)."""
        import pandas as pd  # type: ignore[import-untyped]

        rows = len(frame)
        if not any(number.timestamp for number in self._numbers):
            # One conversion of the frame's float block (Fortran-ordered, and possibly the
            # frame's own memory: only read — every compiled model computes new arrays from
            # it) instead of a column-by-column strided copy.
            names = [number.name for number in self._numbers]
            matrix = frame[names].to_numpy(dtype=np.float64) if names else np.empty((rows, 0))
        else:
            matrix = np.empty((rows, len(self._numbers)), dtype=np.float64)
            for i, number in enumerate(self._numbers):
                series = frame[number.name]
                if number.timestamp:
                    seconds = (series - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
                    matrix[:, i] = seconds.to_numpy(dtype=np.float64)
                else:
                    matrix[:, i] = series.to_numpy(dtype=np.float64)
        categories = tuple(
            [None if _missing(v) else v for v in frame[c.name].tolist()] for c in self._categories
        )
        return Encoded(rows, matrix, categories)

    # Prediction ---------------------------------------------------------------------------------
    def predict(self, batch: Encoded) -> Prediction:
        """Labels and probabilities (classification) or values (regression), one per row."""
        output = self._predict(batch.numbers, batch.categories)
        if self._classes is None:
            return output.tolist(), None
        labels = self._classes[output.argmax(axis=1)]
        return labels.tolist(), output.tolist()

    def predict_raw(self, batch: Encoded) -> np.ndarray[Any, Any]:
        """The model's output as one array, without converting to lists (batch jobs): ``(rows,
        classes)`` probabilities for a classifier (its label is the first most probable class,
        as :meth:`predict` picks it), ``(rows,)`` values for a regressor."""
        output: np.ndarray[Any, Any] = self._predict(batch.numbers, batch.categories)
        return output

    def reference_record(self) -> dict[str, Any]:
        """A typical raw record: each number and timestamp at its training median (what the
        pipeline fills in for a missing value; rounded for integer columns), each category at
        its most frequent value. Explanations of linear models compare with it."""
        record: dict[str, Any] = {}
        for number in self._numbers:
            if number.timestamp:
                record[number.name] = _iso(number.median)
            elif number.integer:
                record[number.name] = round(number.median)
            else:
                record[number.name] = number.median
        for category in self._categories:
            record[category.name] = category.fill
        return {name: record[name] for name in self._names}

    def probe_records(self) -> list[dict[str, Any]]:
        """Rows that exercise every compiled branch: missing values, each known category, an
        unseen one, numbers around their centre."""
        count = max([3, *(len(c.categories) + 2 for c in self._categories)])
        records: list[dict[str, Any]] = []
        for i in range(count):
            record: dict[str, Any] = {}
            for k, number in enumerate(self._numbers):
                if (i + k) % 4 == 0:
                    value: Any = None
                else:
                    spread = number.scale if number.scaled else abs(number.median) or 1.0
                    value = number.median + ((i + k) % 5 - 2) * 0.75 * spread
                    if number.integer:
                        value = round(value)
                    if number.timestamp:
                        value = _iso(value)
                record[number.name] = value
            for category in self._categories:
                options: list[Any] = [*category.categories, None]
                options.append(_UNSEEN if category.kind == "string" else None)
                record[category.name] = options[i % len(options)]
            records.append({name: record[name] for name in self._names})
        return records


def _iso(seconds: float) -> str:
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=round(seconds, 3))
    return moment.isoformat()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _parse_timestamps(rows: list[list[Any]], slots: list[int]) -> bool:
    """Replace ISO 8601 strings in ``rows[*][slots]`` by seconds since the epoch, as the model's
    validation (standard-library parse, UTC-naive ``datetime64[ns]``) and the pipeline's
    ``epoch_seconds`` compute them; False when a value needs pandas' parser."""
    for slot in slots:
        stamps: list[Any] = []
        for row in rows:
            value = row[slot]
            if value is None:
                stamps.append(None)
                continue
            try:
                stamp = datetime.datetime.fromisoformat(value)
            except ValueError:
                return False
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone(datetime.UTC).replace(tzinfo=None)
            stamps.append(stamp)
        try:
            array = np.array(stamps, dtype="datetime64[ns]")
        except (ValueError, OverflowError):
            return False
        seconds = _epoch_seconds(array)
        for row, value in zip(rows, seconds.tolist(), strict=True):
            row[slot] = value
    return True


def _epoch_seconds(stamps: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``(stamps - Timestamp(0)) / Timedelta(seconds=1)`` as pandas computes it: NumPy's
    ``timedelta64`` division (NaT gives NaN)."""
    seconds: np.ndarray[Any, Any] = (stamps - _EPOCH) / _SECOND
    return seconds


# Compiling ------------------------------------------------------------------------------------
class _Unknown(Exception):
    """The pipeline holds something this module does not compile."""


def compile_fast_path(model: Any) -> FastPath | None:
    """The fast path of a :class:`~civicml.training.TabularModel`, or ``None``.

    ``None`` when the pipeline is not one this module knows (see the module docstring) or when
    the compiled path disagrees with the pipeline on the probe rows; the reason is logged.
    """
    try:
        fast = _compile(model)
    except _Unknown as why:
        log.info("model %r predicts through its pipeline: %s", model, why)
        return None
    try:
        agrees = _agrees(fast, model)
    except Exception:  # a probe the pipeline or the fast path cannot take
        log.exception("model %r: fast path probe failed; predicting through the pipeline", model)
        return None
    if not agrees:
        log.warning("model %r: fast path differs from the pipeline; not used", model)
        return None
    if fast.kind != "linear":
        fast.inline_records = inline_records(fast)
    return fast


def inline_records(
    fast: FastPath,
    budget_s: float = INLINE_BUDGET_S,
    clock: Callable[[], float] = time.thread_time,
) -> int:
    """How many records of one request ``fast`` encodes and predicts within ``budget_s`` of
    CPU time (at most :data:`INLINE_MAX_RECORDS`; 0 when one record takes longer).

    The best of a few timed runs on 1 and 8 probe records gives a first count, assuming the
    cost grows linearly; that count is then timed itself and halved until it fits (a booster's
    cost per record grows faster with more records). ``clock`` is the thread's CPU clock, so a
    busy machine that takes the core away while the model is timed does not count."""
    probes = fast.probe_records()

    def best(count: int) -> float:
        records = (probes * (count // len(probes) + 1))[:count]
        times = []
        for _ in range(3):
            started = clock()
            encoded = fast.encode(records)
            if encoded is None:
                return math.inf
            fast.predict(encoded)
            times.append(clock() - started)
        return min(times)

    one = best(1)
    if not one <= budget_s:
        return 0
    per_record = max((best(8) - one) / 7, 1e-9)
    count = max(1, min(INLINE_MAX_RECORDS, 1 + int((budget_s - one) / per_record)))
    while count > 1 and not best(count) <= budget_s:
        count //= 2
    return count


def _agrees(fast: FastPath, model: Any) -> bool:
    probes = fast.probe_records()
    encoded = fast.encode(probes)
    if encoded is None:
        return False
    frame = model.validate(probes)
    classification = model.task == "classification"
    want = model.pipeline.predict_proba(frame) if classification else model.pipeline.predict(frame)
    got = fast._predict(encoded.numbers, encoded.categories)
    again = fast._predict(*_from_frame(fast, frame))
    if got.shape != want.shape or again.shape != want.shape:
        return False
    if fast.kind == "linear":
        tolerance = LINEAR_TOLERANCE
        return bool(
            np.allclose(got, want, rtol=tolerance, atol=tolerance)
            and np.allclose(again, want, rtol=tolerance, atol=tolerance)
        )
    return bool(np.array_equal(got, want) and np.array_equal(again, want))


def _from_frame(fast: FastPath, frame: Any) -> tuple[np.ndarray[Any, Any], tuple[list[Any], ...]]:
    encoded = fast.from_frame(frame)
    return encoded.numbers, encoded.categories


def _compile(model: Any) -> FastPath:
    from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

    pipeline: Any = getattr(model, "pipeline", None)
    signature = getattr(model, "signature", None)
    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2 or not signature:
        raise _Unknown("not a preprocess + estimator pipeline")
    preprocess, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if type(preprocess) is not ColumnTransformer:
        raise _Unknown("the first step is not a ColumnTransformer")
    types = {str(c["name"]): str(c["type"]) for c in signature}
    numbers, categories, encoder = _read_preprocess(preprocess, types)
    if set(types) != {n.name for n in numbers} | {c.name for c in categories}:
        raise _Unknown("the transformers do not cover the signature exactly")
    classification = model.task == "classification"
    classes = list(model.classes_) if classification else None
    kind, predict = _read_estimator(estimator, numbers, categories, encoder, classification)
    if classification and [_plain(c) for c in estimator.classes_] != classes:
        raise _Unknown("the estimator's classes differ from the model's")
    return FastPath(
        signature=signature,
        numbers=numbers,
        categories=categories,
        kind=kind,
        predict=predict,
        classes=classes,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _read_preprocess(
    preprocess: Any, types: dict[str, str]
) -> tuple[list[_Number], list[_Category], str | None]:
    """The numbers (number then timestamp columns) and categories of a fitted
    ``build_preprocessor`` transformer, with the category encoder kind."""
    from sklearn.pipeline import Pipeline

    if preprocess.sparse_threshold != 0.3 or preprocess.transformer_weights is not None:
        raise _Unknown("ColumnTransformer settings")
    numbers: list[_Number] = []
    categories: list[_Category] = []
    encoder_kind: str | None = None
    scaled: bool | None = None
    for name, step, columns in preprocess.transformers_:
        if name == "remainder":
            if step != "drop":
                raise _Unknown("a remainder that is not dropped")
            continue
        if type(step) is not Pipeline:
            raise _Unknown(f"transformer {name!r} is not a Pipeline")
        cols = [str(c) for c in columns]
        steps = dict(step.steps)
        if name in ("number", "timestamp"):
            expected = ["epoch"] if name == "timestamp" else []
            expected.append("impute")
            if "scale" in steps:
                expected.append("scale")
            if [s for s, _ in step.steps] != expected:
                raise _Unknown(f"steps of {name!r}")
            if scaled is not None and scaled != ("scale" in steps):
                raise _Unknown("scaled and unscaled number columns")
            scaled = "scale" in steps
            if name == "timestamp":
                _check_epoch(steps["epoch"])
            median = _imputer(steps["impute"], "median", len(cols))
            mean, scale = _scaler(steps.get("scale"), len(cols))
            for k, col in enumerate(cols):
                wanted = ("timestamp",) if name == "timestamp" else _NUMBER_TYPES
                if types.get(col) not in wanted:
                    raise _Unknown(f"column {col!r} is not of type {wanted}")
                numbers.append(
                    _Number(
                        col,
                        name == "timestamp",
                        types[col] == "int64",
                        float(median[k]),
                        scaled,
                        float(mean[k]),
                        float(scale[k]),
                    )
                )
        elif name == "category":
            if [s for s, _ in step.steps] != ["impute", "encode"]:
                raise _Unknown("steps of 'category'")
            fills = _imputer(steps["impute"], "most_frequent", len(cols))
            encoder_kind, found, unknown = _encoder(steps["encode"], len(cols))
            for k, col in enumerate(cols):
                if types.get(col) not in ("string", "bool"):
                    raise _Unknown(f"column {col!r} is not a category")
                values = [_plain(v) for v in found[k]]
                codes = {v: i for i, v in enumerate(values)}
                if len(codes) != len(values):
                    raise _Unknown(f"duplicate categories in {col!r}")
                fill = _plain(fills[k])
                categories.append(_Category(col, types[col], fill, codes, values, unknown))
        else:
            raise _Unknown(f"unknown transformer {name!r}")
    order = [n for n in numbers if not n.timestamp] + [n for n in numbers if n.timestamp]
    if order != numbers:
        raise _Unknown("timestamp columns before number columns")
    return numbers, categories, encoder_kind


def _check_epoch(step: Any) -> None:
    from sklearn.preprocessing import FunctionTransformer  # type: ignore[import-untyped]

    func = getattr(step, "func", None)
    if (
        type(step) is not FunctionTransformer
        or getattr(func, "__module__", "") != "civicml.training._preprocess"
        or getattr(func, "__name__", "") != "epoch_seconds"
        or step.kw_args
        or step.validate
    ):
        raise _Unknown("a timestamp step other than civicml's epoch_seconds")


def _imputer(step: Any, strategy: str, width: int) -> np.ndarray[Any, Any]:
    from sklearn.impute import SimpleImputer  # type: ignore[import-untyped]

    missing = step.missing_values if type(step) is SimpleImputer else None
    if (
        type(step) is not SimpleImputer
        or step.strategy != strategy
        or step.add_indicator
        or not (isinstance(missing, float) and math.isnan(missing))
        or len(step.statistics_) != width
    ):
        raise _Unknown(f"an imputer other than SimpleImputer({strategy!r})")
    stats: np.ndarray[Any, Any] = step.statistics_
    if strategy == "median" and not np.isfinite(stats.astype(np.float64)).all():
        raise _Unknown("a number column without a median (all missing in training)")
    if strategy != "median" and any(_missing(v) for v in stats.tolist()):
        raise _Unknown("a category column without a most frequent value")
    return stats


def _scaler(step: Any, width: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.preprocessing import StandardScaler

    if step is None:
        return np.zeros(width), np.ones(width)
    if type(step) is not StandardScaler:
        raise _Unknown("a scaler other than StandardScaler")
    mean = step.mean_ if step.with_mean else np.zeros(width)
    scale = step.scale_ if step.with_std else np.ones(width)
    if len(mean) != width or len(scale) != width:
        raise _Unknown("scaler width")
    return np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)


def _encoder(step: Any, width: int) -> tuple[str, list[Any], float]:
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if len(step.categories_) != width:
        raise _Unknown("encoder width")
    if type(step) is OneHotEncoder:
        if (
            step.handle_unknown != "ignore"
            or step.drop is not None
            or step.min_frequency is not None
            or step.max_categories is not None
        ):
            raise _Unknown("OneHotEncoder settings")
        return "onehot", list(step.categories_), math.nan
    if type(step) is OrdinalEncoder:
        if (
            step.handle_unknown != "use_encoded_value"
            or step.min_frequency is not None
            or step.max_categories is not None
        ):
            raise _Unknown("OrdinalEncoder settings")
        unknown = step.unknown_value
        if type(unknown) not in (int, float) or step.dtype is not np.float64:
            raise _Unknown("OrdinalEncoder unknown_value or dtype")
        return "ordinal", list(step.categories_), float(unknown)
    raise _Unknown(f"category encoder {type(step).__name__}")


PredictFn = Callable[[np.ndarray[Any, Any], tuple[list[Any], ...]], Any]


def _read_estimator(
    estimator: Any,
    numbers: list[_Number],
    categories: list[_Category],
    encoder: str | None,
    classification: bool,
) -> tuple[str, PredictFn]:
    from sklearn.ensemble import (  # type: ignore[import-untyped]
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge  # type: ignore[import-untyped]

    kind = type(estimator)
    if kind is LogisticRegression and classification:
        return "linear", _linear(estimator, numbers, categories, encoder, logistic=True)
    if kind is Ridge and not classification:
        return "linear", _linear(estimator, numbers, categories, encoder, logistic=False)
    if kind in (RandomForestClassifier, RandomForestRegressor):
        if (kind is RandomForestClassifier) != classification:
            raise _Unknown("forest task")
        return "forest", _forest(estimator, numbers, categories, encoder, classification)
    if type(estimator).__module__.startswith("lightgbm"):
        return "lightgbm", _lightgbm(estimator, numbers, categories, encoder, classification)
    raise _Unknown(f"estimator {kind.__name__}")


def _linear(
    estimator: Any,
    numbers: list[_Number],
    categories: list[_Category],
    encoder: str | None,
    *,
    logistic: bool,
) -> PredictFn:
    """Scaled numbers times their weights plus one weight vector per category value."""
    from scipy.special import expit  # type: ignore[import-untyped]

    if categories and encoder != "onehot":
        raise _Unknown("a linear model over non-one-hot categories")
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    coef = coef[None, :] if coef.ndim == 1 else coef
    intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
    width = len(numbers) + sum(len(c.categories) for c in categories)
    if coef.shape[1] != width or intercept.shape != (coef.shape[0],):
        raise _Unknown("linear coefficients do not match the transformed columns")
    if not logistic and coef.shape[0] != 1:
        raise _Unknown("multi-target ridge")
    weights = np.ascontiguousarray(coef[:, : len(numbers)].T)  # (numbers, outputs)
    mean = np.array([n.mean for n in numbers], dtype=np.float64)
    scale = np.array([n.scale for n in numbers], dtype=np.float64)
    median = np.array([n.median for n in numbers], dtype=np.float64)
    # ((x - mean) / scale) @ weights, folded: x @ (weights / scale) - (mean / scale) @ weights —
    # one pass over the rows instead of three.
    scaled = np.ascontiguousarray(weights / scale[:, None])
    shift = (mean / scale) @ weights
    lookups: list[tuple[dict[Any, np.ndarray[Any, Any]], np.ndarray[Any, Any]]] = []
    offset = len(numbers)
    zero = np.zeros(coef.shape[0])
    for category in categories:
        table = {value: coef[:, offset + code].copy() for value, code in category.codes.items()}
        lookups.append((table, table.get(category.fill, zero)))
        offset += len(category.categories)
    outputs = coef.shape[0]
    binary = logistic and outputs == 1

    def predict(x: np.ndarray[Any, Any], cats: tuple[list[Any], ...]) -> np.ndarray[Any, Any]:
        rows = x.shape[0]
        if len(numbers):
            missing = np.isnan(x)
            filled = np.where(missing, median, x) if missing.any() else x
            scores = filled @ scaled - shift
        else:
            scores = np.zeros((rows, outputs))
        for (table, fill), values in zip(lookups, cats, strict=True):
            scores += np.array(
                [fill if v is None else table.get(v, zero) for v in values], dtype=np.float64
            ).reshape(rows, outputs)
        scores += intercept
        if not logistic:
            result: np.ndarray[Any, Any] = scores[:, 0]
            return result
        if binary:
            positive = expit(scores[:, 0])
            return np.stack([1 - positive, positive], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    return predict


def _tree_input(
    numbers: list[_Number], categories: list[_Category], encoder: str | None
) -> Callable[[np.ndarray[Any, Any], tuple[list[Any], ...]], np.ndarray[Any, Any]]:
    """The dense matrix a tree model sees: imputed numbers, then ordinal codes."""
    if categories and encoder != "ordinal":
        raise _Unknown("a tree model over non-ordinal categories")
    if any(n.scaled for n in numbers):
        raise _Unknown("a tree model over scaled numbers")
    medians = np.array([n.median for n in numbers], dtype=np.float64)
    tables = [
        ({v: float(code) for v, code in c.codes.items()}, c.fill, c.unknown) for c in categories
    ]

    def matrix(x: np.ndarray[Any, Any], cats: tuple[list[Any], ...]) -> np.ndarray[Any, Any]:
        rows = x.shape[0]
        out = np.empty((rows, x.shape[1] + len(tables)), dtype=np.float64)
        out[:, : x.shape[1]] = np.where(np.isnan(x), medians, x)
        for j, ((table, fill, unknown), values) in enumerate(zip(tables, cats, strict=True)):
            out[:, x.shape[1] + j] = [table.get(fill if v is None else v, unknown) for v in values]
        return out

    return matrix


def _forest(
    estimator: Any,
    numbers: list[_Number],
    categories: list[_Category],
    encoder: str | None,
    classification: bool,
) -> PredictFn:
    """Each tree's ``tree_.predict`` on the float32 matrix, summed in order, over the count."""
    if getattr(estimator, "n_outputs_", None) != 1:
        raise _Unknown("a multi-output forest")
    trees = [tree.tree_ for tree in estimator.estimators_]
    if not trees:
        raise _Unknown("an empty forest")
    n_classes = int(estimator.n_classes_) if classification else 0
    matrix = _tree_input(numbers, categories, encoder)

    def predict(x: np.ndarray[Any, Any], cats: tuple[list[Any], ...]) -> np.ndarray[Any, Any]:
        x32 = np.ascontiguousarray(matrix(x, cats), dtype=np.float32)
        total: np.ndarray[Any, Any]
        if classification:
            total = np.zeros((x32.shape[0], n_classes), dtype=np.float64)
            for tree in trees:
                total += tree.predict(x32)[:, :n_classes]
        else:
            total = np.zeros(x32.shape[0], dtype=np.float64)
            for tree in trees:
                total += tree.predict(x32)[:, 0]
        total /= len(trees)
        return total

    return predict


def _lightgbm_runner(booster: Any, params: dict[str, Any]) -> Callable[[Any], Any]:
    """``booster.predict(m, validate_features=False, **params)``, less its per-call set-up.

    ``Booster.predict`` builds a predictor object (a copy of the parameters, their string for
    the library, a query of the booster's iteration count) on every call: a third of a
    one-row prediction's 45 µs. The predictor is built once here instead, for the booster's
    life (it borrows the booster's handle; ``booster`` is kept alive by the closure), and
    asked as ``Booster.predict`` asks it. Its predictions are the library's own, read-only
    and safe from several threads as the booster's are. A lightgbm without this internal
    predictor gets ``Booster.predict`` itself.
    """
    try:
        from lightgbm.basic import _InnerPredictor

        predictor = _InnerPredictor.from_booster(booster=booster, pred_parameter=dict(params))
        iterations = booster.best_iteration  # what Booster.predict passes by default
        call = predictor.predict
    except Exception:  # another lightgbm: its internals moved
        return functools.partial(booster.predict, validate_features=False, **params)

    def run(m: Any) -> Any:
        _ = booster  # the predictor borrows its handle: keep it alive
        return call(m, num_iteration=iterations, validate_features=False)

    return run


def _lightgbm(
    estimator: Any,
    numbers: list[_Number],
    categories: list[_Category],
    encoder: str | None,
    classification: bool,
) -> PredictFn:
    """The booster on the ordinal matrix, with the parameters the scikit-learn wrapper passes."""
    import lightgbm

    if type(estimator) not in (lightgbm.LGBMClassifier, lightgbm.LGBMRegressor):
        raise _Unknown(f"estimator {type(estimator).__name__}")
    if (type(estimator) is lightgbm.LGBMClassifier) != classification:
        raise _Unknown("LightGBM task")
    if callable(getattr(estimator, "objective", None)):
        raise _Unknown("a custom LightGBM objective")
    try:  # what LGBMModel.predict computes before calling the booster (lightgbm 4)
        from lightgbm.basic import _ConfigAliases
        from lightgbm.sklearn import _choose_param_value  # type: ignore[attr-defined]

        params = estimator._process_params(stage="predict")
        for alias in _ConfigAliases.get_by_alias(
            "data",
            "X",
            "raw_score",
            "start_iteration",
            "num_iteration",
            "pred_leaf",
            "pred_contrib",
        ):
            params.pop(alias, None)
        params = _choose_param_value("num_threads", params, estimator.n_jobs)
        params["num_threads"] = estimator._process_n_jobs(params["num_threads"])
        booster = estimator.booster_
    except Exception as err:  # another lightgbm: its private helpers moved
        raise _Unknown(f"LightGBM internals ({err})") from err
    multiclass = classification and len(estimator.classes_) > 2
    matrix = _tree_input(numbers, categories, encoder)
    run = _lightgbm_runner(booster, params)

    def predict(x: np.ndarray[Any, Any], cats: tuple[list[Any], ...]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = run(matrix(x, cats))
        if classification and not multiclass:
            return np.vstack((1.0 - result, result)).transpose()
        return result

    return predict
