"""Explanations from a live endpoint: SHAP attributions of each answered row, on request.

A :class:`LazyExplainer` sits with each loaded model version. The first request that asks for
explanations (``?explain=true``) builds a :class:`civicml.evaluation.ModelExplainer` for it;
later ones reuse it. Building and explaining are serialized by one lock per model, since SHAP's
explainers are not documented as thread-safe; requests without ``explain`` never touch it.

Background (what attributions are measured against):

* tree models (random forest, LightGBM): none — SHAP's path-dependent ``TreeExplainer`` uses the
  training distribution the trees recorded; the base value is the expected output over it;
* linear models: one *typical record* the fitted pipeline carries (see
  :meth:`FastPath.reference_record <civicml.serving.fastpath.FastPath.reference_record>`): every
  number at its training median (what a missing value is filled with), every category at its
  most frequent value. The base value is the model's output for that record, and a column's
  attribution is how far its value moves the output from there (a missing number: zero). No
  training data is read at serving time, so explaining costs no I/O and leaks no training rows.

A model whose pipeline civicml cannot read (no compiled fast path) can only be explained by a
tree explainer; otherwise the request is refused with a 422 naming the reason.
"""

from __future__ import annotations

import threading
from typing import Any

from civicml.core.errors import InvalidInputError

__all__ = ["LazyExplainer"]


class LazyExplainer:
    """Builds a model's SHAP explainer on first use and explains rows with it.

    Args:
        model: The loaded :class:`~civicml.training.TabularModel`.
        reference: A typical raw record to compare with (linear models), or ``None`` when the
            pipeline could not be read.
        label: The model's name for error messages, e.g. ``"eligibility v3"``.
    """

    def __init__(self, model: Any, reference: dict[str, Any] | None, label: str) -> None:
        self._model = model
        self._reference = reference
        self._label = label
        self._lock = threading.Lock()
        self._explainer: Any = None
        self._error: InvalidInputError | None = None

    @property
    def built(self) -> bool:
        """Whether the explainer exists (it is built by the first explanation request)."""
        return self._explainer is not None

    def explain(self, frame: Any) -> list[dict[str, Any]]:
        """One explanation per row of ``frame`` (validated rows), JSON-ready.

        Each is a :class:`~civicml.evaluation.LocalExplanation`: ``explainer``,
        ``output_space``, ``prediction``, ``values`` and ``outputs`` — per explained output
        (the positive class of a binary classifier, every class of a multiclass one, the value
        of a regression) its ``label``, ``base_value``, ``output`` and ``attributions`` per raw
        input column, where ``base_value + sum(attributions) == output``.

        Raises:
            InvalidInputError: The model cannot be explained (the message says why).
        """
        with self._lock:
            explainer = self._explainer or self._build()
            found = explainer.explain_local(frame)
        return [item.model_dump(mode="json") for item in found]

    def attributions(self, frame: Any) -> Any:
        """SHAP attributions of ``frame``'s rows (validated rows) as arrays, an
        :class:`~civicml.evaluation.explain.Attributions` (``values[row, column, output]``,
        ``base_values[output]``): what batch jobs store as columns, without a record per row.

        Raises:
            InvalidInputError: The model cannot be explained (the message says why).
        """
        with self._lock:
            explainer = self._explainer or self._build()
            return explainer.attributions(frame)

    def _build(self) -> Any:
        """Build the explainer (called with the lock held); a failure is kept and re-raised."""
        if self._error is not None:
            raise self._error
        import pandas as pd  # type: ignore[import-untyped]

        from civicml.evaluation.explain import ModelExplainer

        # Tree explainers ignore the background; linear and kernel ones refuse to run without.
        background = None if self._reference is None else pd.DataFrame([self._reference])
        try:
            self._explainer = ModelExplainer(self._model, background)
        except InvalidInputError as err:
            self._error = InvalidInputError(
                f"Model {self._label} cannot be explained: {err.message}",
                hint="Explanations from an endpoint need a model trained with "
                "cm.train.tabular / fit_tabular (or any tree model).",
            )
            raise self._error from err
        return self._explainer
