"""The preprocessing half of a tabular pipeline, chosen by the signature's column types.

* numbers (``int64``, ``float64``): median imputation, plus standard scaling for linear models;
* timestamps: float seconds since the Unix epoch (UTC), then as numbers;
* categories (``string``, ``bool``): most-frequent imputation, then one-hot encoding
  (``handle_unknown="ignore"``: an unseen category is all zeros) for linear models, and ordinal
  encoding (an unseen category becomes ``-1``) for tree models, which split on codes and need no
  column per category.

``model.skops`` names :func:`epoch_seconds` by its dotted path, and
:data:`civicml.training.model.TRUSTED_TYPES` allows exactly that path: renaming or moving it
breaks loading saved models (update the allowlist and convert stored bundles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
from sklearn.impute import SimpleImputer  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import (  # type: ignore[import-untyped]
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from civicml.training._signature import SignatureColumn

__all__ = ["build_preprocessor", "epoch_seconds"]


def build_preprocessor(signature: Sequence[SignatureColumn], *, linear: bool) -> ColumnTransformer:
    """A column transformer for the signature's columns (see the module docstring)."""

    def numeric(*first: tuple[str, Any]) -> Pipeline:
        steps = [*first, ("impute", SimpleImputer(strategy="median"))]
        if linear:
            steps.append(("scale", StandardScaler()))
        return Pipeline(steps)

    by_type: dict[str, list[str]] = {"number": [], "timestamp": [], "category": []}
    for column in signature:
        group = {"int64": "number", "float64": "number", "timestamp": "timestamp"}
        by_type[group.get(column["type"], "category")].append(column["name"])
    encoder = (
        OneHotEncoder(handle_unknown="ignore")
        if linear
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    )
    transformers = [
        ("number", numeric(), by_type["number"]),
        (
            "timestamp",
            numeric(("epoch", FunctionTransformer(epoch_seconds, feature_names_out="one-to-one"))),
            by_type["timestamp"],
        ),
        (
            "category",
            Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]),
            by_type["category"],
        ),
    ]
    return ColumnTransformer([t for t in transformers if t[2]])


def epoch_seconds(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    """Timestamps as float seconds since 1970-01-01 UTC; NaT becomes NaN."""
    seconds = {
        name: (frame[name] - pd.Timestamp(0)) / pd.Timedelta(seconds=1) for name in frame.columns
    }
    result: np.ndarray[Any, Any] = pd.DataFrame(seconds).to_numpy(dtype="float64")
    return result
