"""SHAP explanations of tabular models, expressed in the raw input columns the user knows.

The explainer follows the estimator: ``shap.TreeExplainer`` (path-dependent, no background) for
LightGBM and scikit-learn tree ensembles, ``shap.LinearExplainer`` (interventional, background =
the given background rows) for linear models, and ``shap.KernelExplainer`` on a small background
sample (:data:`KERNEL_BACKGROUND_ROWS`) for anything else. Each runs once, on the *transformed*
matrix the estimator sees; the attributions of the transformed columns are then summed back to
their source column (one-hot dummies to their category column), using the map
:func:`column_sources` builds from the fitted ``ColumnTransformer``. Sums keep additivity:
``base value + sum of raw attributions == model output`` still holds.

Which output is explained (see :mod:`civicml.evaluation.explain_schemas` for the spaces): binary
classification, the *positive* class (``classes_[1]``); multiclass, every class; regression, the
value. LightGBM and logistic models are explained in margin space (log-odds), random forests in
probability space (what ``TreeExplainer`` explains for them), the kernel explainer in probability
space for classifiers.

Partial dependence is computed here directly (scikit-learn's brute-force method: set the column
to each grid value for every sampled row, average the predictions), on the pipeline with raw
columns, so categorical and missing values go through the model's own preprocessing. The grid is
scikit-learn's: distinct values if fewer than ``grid``, else evenly spaced between the 5th and
95th percentiles (``scipy.stats.mstats.mquantiles``); categories sorted (the ``grid`` most
frequent when there are more). Tests check the curves equal
``sklearn.inspection.partial_dependence(model.pipeline, ...)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.evaluation.explain_schemas import (
    ColumnImportance,
    ExplainerKind,
    ExplanationReport,
    GlobalExplanation,
    Label,
    LocalExplanation,
    OutputAttribution,
    OutputSpace,
    PartialDependence,
    PartialDependenceCurve,
)
from civicml.training import TabularModel

__all__ = [
    "KERNEL_BACKGROUND_ROWS",
    "KERNEL_MAX_ROWS",
    "Attributions",
    "ModelExplainer",
    "column_sources",
    "explain",
    "explain_global",
    "explain_local",
    "partial_dependence",
]

#: Background rows the kernel explainer integrates over (shap warns above 100).
KERNEL_BACKGROUND_ROWS = 50
#: The kernel explainer costs ~2,000 model calls per row: global explanations sample this many.
KERNEL_MAX_ROWS = 100
#: Rows averaged over in partial dependence (a seeded sample when the data has more).
PD_MAX_ROWS = 1_000

Method = Literal["auto", "tree", "linear", "kernel"]


@dataclass(frozen=True, slots=True)
class Attributions:
    """SHAP attributions of some rows, summed to raw input columns.

    Attributes:
        values: Array ``(rows, columns, outputs)``; ``values[i, j, k]`` is column ``j``'s
            attribution to output ``k`` for row ``i``.
        base_values: Array ``(outputs,)``, the expected output.
        columns: Raw input columns (signature order).
        outputs: Explained outputs: ``[positive class]``, every class, or ``[None]``.
        explainer: ``"tree"``, ``"linear"`` or ``"kernel"``.
        output_space: ``"margin"``, ``"probability"`` or ``"value"``.
    """

    values: np.ndarray[Any, Any]
    base_values: np.ndarray[Any, Any]
    columns: list[str]
    outputs: list[Label | None]
    explainer: ExplainerKind
    output_space: OutputSpace

    def outputs_total(self) -> np.ndarray[Any, Any]:
        """Model output per row and output: base value plus the sum of attributions."""
        total: np.ndarray[Any, Any] = self.base_values + self.values.sum(axis=1)
        return total


def column_sources(preprocessor: Any, columns: Sequence[str]) -> np.ndarray[Any, Any]:
    """The raw column index of each transformed column of a fitted ``ColumnTransformer``.

    Built from each transformer's output feature names: a one-to-one transformer maps output
    ``k`` to input ``k``; otherwise an output named ``col`` or ``col_<category>`` comes from
    ``col`` (the longest such input name wins).

    Raises:
        InvalidInputError: A transformed column cannot be traced to an input column.
    """
    position = {name: k for k, name in enumerate(columns)}
    width = sum(
        s.stop - s.start for s in preprocessor.output_indices_.values() if isinstance(s, slice)
    )
    sources = np.full(width, -1, dtype=np.intp)
    for name, transformer, selected in preprocessor.transformers_:
        if isinstance(transformer, str) or len(selected) == 0:
            continue  # "drop" / "passthrough" remainder with no columns
        inputs = [str(c) for c in selected]
        where = preprocessor.output_indices_[name]
        names_out = [str(n) for n in transformer.get_feature_names_out(inputs)]
        for offset, out in enumerate(names_out):
            if len(names_out) == len(inputs):
                source = inputs[offset]
            else:
                matches = [c for c in inputs if out == c or out.startswith(c + "_")]
                if not matches:
                    raise InvalidInputError(
                        f"Transformed column {out!r} of {name!r} matches no input column.",
                        hint="Explanations need output names of the form '<column>_<value>'.",
                    )
                source = max(matches, key=len)
            sources[where.start + offset] = position[source]
    if (sources < 0).any():
        raise InvalidInputError("Some transformed columns have no source column.")
    return sources


class ModelExplainer:
    """A SHAP explainer for one model, built once and reused (for instance per request).

    Args:
        model: The fitted model.
        background: Rows the linear and kernel explainers integrate over (raw columns); tree
            explainers need none. ``explain_global`` uses the explained rows.
        method: ``"auto"`` picks by estimator; force ``"tree"``, ``"linear"`` or ``"kernel"``.
        seed: Seeds the kernel explainer's background sample.

    Raises:
        InvalidInputError: The method does not fit the estimator, or a linear or kernel
            explainer has no background.
    """

    def __init__(
        self,
        model: TabularModel,
        background: pd.DataFrame | None = None,
        *,
        method: Method = "auto",
        seed: int = 0,
    ) -> None:
        import shap  # type: ignore[import-untyped]  # numba: slow import, only when used

        self.model = model
        self._preprocess = model.pipeline[:-1]
        self._estimator = model.pipeline[-1]
        self.kind: ExplainerKind = _pick(self._estimator) if method == "auto" else method
        self._sources = column_sources(model.pipeline[0], model.feature_names)
        n_classes = len(model.classes_)
        if self.kind != "tree" and background is None:
            raise InvalidInputError(
                f"The {self.kind} explainer needs background rows to compare against.",
                hint="Pass background=<a sample of the training data>.",
            )
        if self.kind == "tree":
            self._explainer = shap.TreeExplainer(self._estimator)
        elif self.kind == "linear":
            self._explainer = shap.LinearExplainer(
                self._estimator, self._matrix(_rows(model, background))
            )
        else:
            x_background = self._matrix(_rows(model, background))
            if len(x_background) > KERNEL_BACKGROUND_ROWS:
                x_background = shap.sample(x_background, KERNEL_BACKGROUND_ROWS, random_state=seed)
            if model.task == "classification":
                function = self._estimator.predict_proba
            else:
                function = self._estimator.predict
            self._explainer = shap.KernelExplainer(function, x_background, seed=seed)
        self.output_space: OutputSpace = (
            "value"
            if model.task == "regression"
            else "probability"
            if self.kind == "kernel" or _is_forest(self._estimator)
            else "margin"
        )
        self.outputs: list[Label | None] = (
            [None]
            if model.task == "regression"
            else [model.classes_[1]]
            if n_classes == 2
            else list(model.classes_)
        )

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        """The estimator's input for rows already in pipeline dtypes."""
        matrix = self._preprocess.transform(frame)
        if hasattr(matrix, "toarray"):  # sparse one-hot output
            matrix = matrix.toarray()
        result: np.ndarray[Any, Any] = np.asarray(matrix, dtype=np.float64)
        return result

    def attributions(self, data: Any) -> Attributions:
        """SHAP attributions of ``data``'s rows in raw columns (see :class:`Attributions`).

        A DataFrame's columns outside the signature are ignored; records must match it.

        Raises:
            InvalidInputError: The rows do not match the model's signature.
        """
        return self._attributions(_rows(self.model, data))

    def _attributions(self, frame: pd.DataFrame) -> Attributions:
        x = self._matrix(frame)
        if self.kind == "kernel":
            raw = self._explainer.shap_values(x, silent=True)
        elif "from_call" in inspect.signature(self._explainer.shap_values).parameters:
            # from_call: shap's own switch for "LightGBM binary classifier ... output has
            # changed", an informational warning. Not warnings.catch_warnings: it changes the
            # process's filters, and explanations run in threads (pipeline steps, endpoints).
            raw = self._explainer.shap_values(x, from_call=True)
        else:  # pragma: no cover - shap without the switch
            raw = self._explainer.shap_values(x)
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim == 2:
            values = values[:, :, None]
        base = np.atleast_1d(np.asarray(self._explainer.expected_value, dtype=np.float64))
        if values.shape[2] == 2 and len(self.outputs) == 1:  # binary: keep the positive class
            values, base = values[:, :, 1:], base[1:]
        summed = _sum_to_columns(values, self._sources, len(self.model.feature_names))
        return Attributions(
            values=summed,
            base_values=base,
            columns=self.model.feature_names,
            outputs=self.outputs,
            explainer=self.kind,
            output_space=self.output_space,
        )

    def explain_local(self, records: Any) -> list[LocalExplanation]:
        """One :class:`LocalExplanation` per input row (see :func:`explain_local`)."""
        frame = _rows(self.model, records)
        found = self._attributions(frame)
        predictions = self.model.pipeline.predict(frame)
        totals = found.outputs_total()
        columns = found.columns
        result = []
        for i in range(len(frame)):
            outputs = [
                OutputAttribution(
                    label=label,
                    base_value=float(found.base_values[k]),
                    output=float(totals[i, k]),
                    attributions={c: float(found.values[i, j, k]) for j, c in enumerate(columns)},
                )
                for k, label in enumerate(found.outputs)
            ]
            result.append(
                LocalExplanation(
                    row=i,
                    explainer=found.explainer,
                    output_space=found.output_space,
                    prediction=_plain(predictions[i]),
                    values={c: _plain(frame.iloc[i][c]) for c in columns},
                    outputs=outputs,
                )
            )
        return result


def explain_global(
    model: TabularModel,
    data: pd.DataFrame,
    *,
    max_rows: int | None = 100_000,
    seed: int = 0,
    method: Method = "auto",
) -> GlobalExplanation:
    """Global importance of each raw input column: mean |SHAP attribution| over ``data``.

    Tree and linear explainers run once over all rows, up to ``max_rows`` (a seeded sample
    beyond; ``None`` for no limit); the kernel explainer over at most :data:`KERNEL_MAX_ROWS`.
    The linear and kernel explainers take their background from the explained rows.

    Args:
        model: The fitted model.
        data: Rows with the signature's columns (other columns, such as the target, ignored).
        max_rows: Most rows explained.
        seed: Seeds the row sample and the kernel explainer.
        method: ``"auto"`` or a forced explainer kind.

    Returns:
        The importance of every raw column, most important first.

    Raises:
        InvalidInputError: ``data`` does not match the model's signature.

    Example:
        >>> from civicml.data.samples import benefit_applications
        >>> from civicml.training import fit_tabular
        >>> df = benefit_applications(300, seed=1)
        >>> model = fit_tabular(df, "eligible", algorithm="lightgbm")
        >>> explanation = explain_global(model, df)
        >>> explanation.explainer, explanation.output_space, explanation.outputs
        ('tree', 'margin', [1])
    """
    frame = _rows(model, data)
    limit = max_rows
    kind = _pick(model.pipeline[-1]) if method == "auto" else method
    if kind == "kernel":
        limit = KERNEL_MAX_ROWS if limit is None else min(limit, KERNEL_MAX_ROWS)
    sample = _sample(frame, limit, seed)
    explainer = ModelExplainer(model, None if kind == "tree" else sample, method=kind, seed=seed)
    found = explainer._attributions(sample)
    by_output = np.abs(found.values).mean(axis=0)  # (columns, outputs)
    overall = by_output.mean(axis=1)
    total = float(overall.sum()) or 1.0
    order = np.argsort(-overall, kind="stable")
    return GlobalExplanation(
        task=model.task,
        algorithm=model.algorithm,
        explainer=found.explainer,
        output_space=found.output_space,
        outputs=found.outputs,
        base_values=[float(b) for b in found.base_values],
        columns=found.columns,
        importance=[
            ColumnImportance(
                column=found.columns[j],
                importance=float(overall[j]),
                share=min(float(overall[j]) / total, 1.0),
                by_output=[float(v) for v in by_output[j]],
            )
            for j in order
        ],
        rows_total=len(frame),
        rows_explained=len(sample),
        seed=seed,
        target=getattr(model, "target", None),
        classes=[_plain(c) for c in getattr(model, "classes_", [])],
    )


def explain_local(
    model: TabularModel,
    records: Any,
    *,
    background: pd.DataFrame | None = None,
    method: Method = "auto",
) -> list[LocalExplanation]:
    """Per-prediction attributions: why the model gave each row its output.

    Args:
        model: The fitted model.
        records: A DataFrame, one record (dict) or a list of records.
        background: Rows to compare against; needed by linear and kernel explainers (a sample
            of the training data), ignored by tree explainers.
        method: ``"auto"`` or a forced explainer kind.

    Returns:
        One explanation per row, in input order. For reuse across calls (serving), build a
        :class:`ModelExplainer` once and call its ``explain_local``.

    Raises:
        InvalidInputError: The rows do not match the signature, or a background is needed.
    """
    return ModelExplainer(model, background, method=method).explain_local(records)


def partial_dependence(
    model: TabularModel,
    data: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    top_k: int = 5,
    grid: int = 20,
    max_rows: int = PD_MAX_ROWS,
    seed: int = 0,
    explanation: GlobalExplanation | None = None,
) -> list[PartialDependence]:
    """Partial dependence of the prediction on each of ``features`` (see the module docstring).

    Args:
        model: The fitted model.
        data: Rows with the signature's columns.
        features: Raw columns; by default the ``top_k`` most important ones (from
            ``explanation``, computed with :func:`explain_global` when not given). Timestamp
            columns are skipped.
        top_k: How many columns when ``features`` is not given.
        grid: Most grid values per column.
        max_rows: Rows averaged over (a seeded sample beyond).
        seed: Seeds the row sample.
        explanation: A global explanation to take the top columns from.

    Returns:
        One curve set per column, in ``features`` order. Classification shows probabilities.

    Raises:
        InvalidInputError: A feature is not a signature column.
    """
    frame = _rows(model, data)
    types = {c["name"]: c["type"] for c in model.signature}
    if features is None:
        explanation = explanation or explain_global(model, frame, seed=seed)
        features = [c.column for c in explanation.importance if types[c.column] != "timestamp"]
        features = features[:top_k]
    unknown = [f for f in features if f not in types]
    if unknown:
        raise InvalidInputError(
            f"Column {unknown[0]!r} is not an input of this model.",
            hint="Columns: " + ", ".join(types) + ".",
        )
    sample = _sample(frame, max_rows, seed).reset_index(drop=True)
    outputs: list[Label | None] = (
        [None]
        if model.task == "regression"
        else [model.classes_[1]]
        if len(model.classes_) == 2
        else list(model.classes_)
    )
    result = []
    for column in features:
        if types[column] == "timestamp":
            continue
        numeric = types[column] in ("int64", "float64")
        values = _grid(sample[column], grid, numeric=numeric)
        if not values:
            continue
        stacked = pd.concat([sample] * len(values), ignore_index=True)
        stacked[column] = pd.Series(np.repeat(np.asarray(values, dtype=object), len(sample)))
        if numeric:
            stacked[column] = stacked[column].astype("float64")
        if model.task == "regression":
            predicted = model.pipeline.predict(stacked)[:, None]
        else:
            predicted = model.pipeline.predict_proba(stacked)
            predicted = predicted[:, 1:] if len(outputs) == 1 else predicted
        means = predicted.reshape(len(values), len(sample), -1).mean(axis=1)
        result.append(
            PartialDependence(
                column=column,
                kind="numeric" if numeric else "categorical",
                grid=[_plain(v) for v in values],
                output_space="value" if model.task == "regression" else "probability",
                curves=[
                    PartialDependenceCurve(label=label, average=[float(v) for v in means[:, k]])
                    for k, label in enumerate(outputs)
                ],
                rows=len(sample),
            )
        )
    return result


def explain(
    model: TabularModel,
    data: pd.DataFrame,
    *,
    top_k: int = 5,
    local_rows: int = 3,
    max_rows: int | None = 100_000,
    seed: int = 0,
) -> ExplanationReport:
    """Global importance, partial dependence of the ``top_k`` columns and ``local_rows`` examples.

    The examples are the first rows of ``data``; render the result with
    :func:`civicml.evaluation.explain_html.render_explanation_html`.
    """
    frame = _rows(model, data)
    found = explain_global(model, frame, max_rows=max_rows, seed=seed)
    curves = partial_dependence(model, frame, top_k=top_k, seed=seed, explanation=found)
    kind = found.explainer
    background = None if kind == "tree" else _sample(frame, max_rows, seed)  # as global
    local = ModelExplainer(model, background, method=kind, seed=seed).explain_local(
        frame.iloc[:local_rows]
    )
    return ExplanationReport(global_explanation=found, partial_dependence=curves, local=local)


def _pick(estimator: Any) -> ExplainerKind:
    module = type(estimator).__module__
    if module.startswith("lightgbm") or _is_forest(estimator) or module.startswith("sklearn.tree"):
        return "tree"
    if module.startswith("sklearn.linear_model") and hasattr(estimator, "coef_"):
        return "linear"
    return "kernel"


def _is_forest(estimator: Any) -> bool:
    return type(estimator).__module__.startswith("sklearn.ensemble._forest") or type(
        estimator
    ).__module__.startswith("sklearn.tree")


def _rows(model: TabularModel, data: Any) -> pd.DataFrame:
    """The signature's columns of ``data``, checked and in pipeline dtypes (extras ignored)."""
    if isinstance(data, pd.DataFrame):
        data = data[[c for c in data.columns if c in set(model.feature_names)]]
    return model.validate(data)


def _sample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(frame) <= limit:
        return frame
    return frame.sample(n=limit, random_state=seed).sort_index()


def _sum_to_columns(
    values: np.ndarray[Any, Any], sources: np.ndarray[Any, Any], n_columns: int
) -> np.ndarray[Any, Any]:
    """Sum transformed-column attributions ``(rows, transformed, outputs)`` to raw columns."""
    if len(sources) == n_columns and (sources == np.arange(n_columns)).all():
        return values
    mapping = np.zeros((len(sources), n_columns))
    mapping[np.arange(len(sources)), sources] = 1.0
    summed: np.ndarray[Any, Any] = np.einsum("itk,tc->ick", values, mapping)
    return summed


def _grid(series: pd.Series, size: int, *, numeric: bool) -> list[Any]:
    present = series.dropna()
    if present.empty:
        return []
    if not numeric:
        frequent = present.value_counts().index[:size]  # all values when fewer than size
        return sorted(frequent, key=str)
    from scipy.stats.mstats import mquantiles  # type: ignore[import-untyped]

    uniques = np.unique(present.to_numpy(dtype=np.float64))
    if len(uniques) < size:
        return [float(v) for v in uniques]
    low, high = mquantiles(present.to_numpy(dtype=np.float64), prob=(0.05, 0.95))
    return [float(v) for v in np.linspace(low, high, num=size)]


def _plain(value: Any) -> Any:
    """A JSON-ready Python scalar: NumPy scalars unwrapped, timestamps ISO 8601, missing None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value
