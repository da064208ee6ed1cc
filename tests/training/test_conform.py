"""``conform`` (a model's input validation) of DataFrames: columns already in the pipeline's
dtypes are selected, not copied one by one, and the result is still the caller's to change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from civicml.core.errors import InvalidInputError
from civicml.serving._checks import refuse_infinite
from civicml.training._signature import conform

SIGNATURE = [
    {"name": "income", "type": "float64"},
    {"name": "age", "type": "int64"},
]


def test_a_frame_already_in_the_pipeline_dtypes_is_selected_in_signature_order() -> None:
    frame = pd.DataFrame(
        {"extra": ["x", "y", "z"], "age": [30.0, np.nan, 41.0], "income": [1.5, 2.5, np.nan]}
    )
    before = frame.copy()
    out = conform(frame, SIGNATURE, allow_extra=True)
    assert list(out.columns) == ["income", "age"]
    assert (out.dtypes == np.float64).all()
    pd.testing.assert_frame_equal(out, before[["income", "age"]])
    out.loc[0, "income"] = -1.0  # the caller's frame does not change with it
    pd.testing.assert_frame_equal(frame, before)


def test_columns_that_need_converting_still_are() -> None:
    frame = pd.DataFrame({"income": [1, 2, 3], "age": [30, 31, None]})  # int64 and float64
    out = conform(frame, SIGNATURE)
    assert (out.dtypes == np.float64).all()
    assert out["income"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(InvalidInputError, match="non-integer"):
        conform(pd.DataFrame({"income": [1.0], "age": [30.5]}), SIGNATURE)


def test_the_first_infinity_by_row_then_column_is_the_one_named() -> None:
    frame = pd.DataFrame(
        {"a": [0.0, 1.0, np.inf], "b": [0.0, -np.inf, 2.0], "c": [np.nan, np.inf, 0.0]}
    )
    with pytest.raises(InvalidInputError) as caught:
        refuse_infinite(frame, ["a", "b", "c"])
    assert caught.value.details == [
        {"column": "b", "problem": "not_finite", "record": 1, "got": "-Infinity"}
    ]
    refuse_infinite(frame.replace([np.inf, -np.inf], 0.0), ["a", "b", "c"])  # NaN is missing
