"""Conditions: parsing each kind of metric, the errors for what is wrong, and comparison."""

from __future__ import annotations

import math
import re

import pytest

from civicml.alerts.conditions import Condition, compare, parse_condition
from civicml.core.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "source", "column", "expected"),
    [
        ("p99_ms > 50", "endpoint", None, Condition("p99_ms", ">", 50.0)),
        ("error_rate>=0.01", "endpoint", None, Condition("error_rate", ">=", 0.01)),
        ("  requests < 10 ", "endpoint", None, Condition("requests", "<", 10.0)),
        ("verdict == drift", "monitoring", None, Condition("verdict", "==", "drift")),
        ("verdict != 'no_drift'", "monitoring", None, Condition("verdict", "!=", "no_drift")),
        ("status == violations", "monitoring", None, Condition("status", "==", "violations")),
        ("dataset_drift == TRUE", "monitoring", None, Condition("dataset_drift", "==", True)),
        ("share_drifted >= 0.5", "monitoring", None, Condition("share_drifted", ">=", 0.5)),
        ("drift_score > 0.2", "monitoring", "age", Condition("drift_score", ">", 0.2)),
        ("drift_detected == false", "monitoring", "age", Condition("drift_detected", "==", False)),
    ],
)
def test_conditions_parse(text: str, source: str, column: str | None, expected: Condition) -> None:
    assert parse_condition(text, source, column=column) == expected


def test_the_text_is_written_back_as_given() -> None:
    assert parse_condition("p99_ms > 50", "endpoint").text == "p99_ms > 50"
    assert parse_condition("error_rate > 0.015", "endpoint").text == "error_rate > 0.015"
    assert parse_condition("dataset_drift == true", "monitoring").text == "dataset_drift == true"


@pytest.mark.parametrize(
    ("text", "source", "column", "message"),
    [
        ("p99 > 50", "endpoint", None, "Metric 'p99' is not one an endpoint rule offers."),
        ("p99_ms >> 50", "endpoint", None, "p99_ms compares with a finite number, not '> 50'"),
        ("p99_ms is high", "endpoint", None, "is not '<metric> <operator> <value>'"),
        ("p99_ms > fast", "endpoint", None, "p99_ms compares with a finite number"),
        ("p99_ms > nan", "endpoint", None, "p99_ms compares with a finite number"),
        ("verdict > drift", "monitoring", None, "verdict is compared with == or != only"),
        ("verdict == drifted", "monitoring", None, "A verdict is one of drift"),
        ("dataset_drift == yes", "monitoring", None, "dataset_drift is true or false"),
        ("verdict == drift", "endpoint", None, "Metric 'verdict' is not one an endpoint rule"),
        ("drift_score > 0.1", "monitoring", None, "(a column metric: name the column)"),
        ("verdict == drift", "monitoring", "age", "(a whole-report metric: leave out the column)"),
    ],
)
def test_bad_conditions_say_what_is_wrong(
    text: str, source: str, column: str | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)) as caught:
        parse_condition(text, source, column=column)
    assert caught.value.hint


def test_an_unknown_metric_suggests_the_closest() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_condition("p99_msec > 5", "endpoint")
    assert caught.value.hint == "Did you mean 'p99_ms'?"


@pytest.mark.parametrize(
    ("value", "op", "threshold", "expected"),
    [
        (51.0, ">", 50.0, True),
        (50.0, ">", 50.0, False),
        (50.0, ">=", 50.0, True),
        (0.001, "<", 0.01, True),
        (1.0, "!=", 1.0, False),
        ("drift", "==", "drift", True),
        ("no_drift", "!=", "drift", True),
        (True, "==", True, True),
        (math.inf, ">", 50.0, True),
        (None, ">", 50.0, None),
        ("drift", ">", 1.0, None),  # another kind of value: no data, never a guess
        (1.0, "==", True, None),
        (math.nan, ">", 1.0, None),
    ],
)
def test_compare(value: object, op: str, threshold: object, expected: bool | None) -> None:
    assert compare(value, op, threshold) is expected  # type: ignore[arg-type]
