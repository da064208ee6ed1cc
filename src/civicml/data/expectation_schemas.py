"""Schemas of dataset quality expectations and their reports (SDK, REST, ``--json``).

The kinds follow Great Expectations' and Deequ's vocabulary, one word each:

=====================  ==========================================  ===========================
kind                   Great Expectations                          Deequ
=====================  ==========================================  ===========================
``not_null``           expect_column_values_to_not_be_null         isComplete / hasCompleteness
``unique``             expect_column_values_to_be_unique           isUnique
``between``            expect_column_values_to_be_between          isContainedIn(min, max)
``in_set``             expect_column_values_to_be_in_set           isContainedIn(values)
``match_regex``        expect_column_values_to_match_regex         hasPattern
``row_count_between``  expect_table_row_count_to_be_between        hasSize
``freshness``          (none: the max of a timestamp is recent)    (none)
``references``         (none: values exist in another dataset)     (none)
``sql``                UnexpectedRowsExpectation                   satisfies(sql)
=====================  ==========================================  ===========================

``mostly`` is Great Expectations' share of rows that must pass (Deequ's assertion on the
completeness); ``blocking`` decides whether a failure quarantines the version.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_PATTERN",
    "MAX_SQL",
    "Expectation",
    "ExpectationCreate",
    "ExpectationKind",
    "ExpectationResult",
    "QualityReport",
    "QualityStatus",
    "UseApproval",
]

MAX_PATTERN = 500
MAX_SQL = 10_000
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_Scalar = str | int | float | bool


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExpectationKind(StrEnum):
    """What an expectation checks."""

    NOT_NULL = "not_null"
    UNIQUE = "unique"
    BETWEEN = "between"
    IN_SET = "in_set"
    MATCH_REGEX = "match_regex"
    ROW_COUNT_BETWEEN = "row_count_between"
    FRESHNESS = "freshness"
    REFERENCES = "references"
    SQL = "sql"


class QualityStatus(StrEnum):
    """A version's quality verdict: every expectation passed, only non-blocking ones failed
    (warned), a blocking one failed (quarantined), or quarantined and then released by an
    override (``datasets.override_quarantine``)."""

    PASSED = "passed"
    WARNED = "warned"
    QUARANTINED = "quarantined"
    RELEASED = "released"


_NEEDS: dict[ExpectationKind, tuple[str, ...]] = {
    ExpectationKind.NOT_NULL: ("column",),
    ExpectationKind.UNIQUE: ("column",),
    ExpectationKind.BETWEEN: ("column",),
    ExpectationKind.IN_SET: ("column", "values"),
    ExpectationKind.MATCH_REGEX: ("column", "pattern"),
    ExpectationKind.ROW_COUNT_BETWEEN: (),
    ExpectationKind.FRESHNESS: ("column", "max_age"),
    ExpectationKind.REFERENCES: ("column", "dataset"),
    ExpectationKind.SQL: ("sql",),
}


class ExpectationCreate(_Schema):
    """An expectation to add to a dataset; which fields it needs depends on ``kind``."""

    name: str = Field(
        min_length=1, max_length=128, description="Unique within the dataset, e.g. 'age-range'."
    )
    kind: ExpectationKind = Field(description="What is checked (see the table above).")
    column: str | None = Field(
        default=None,
        max_length=256,
        description="The column checked (every kind but row count and SQL).",
    )
    min: float | str | None = Field(
        default=None,
        description="Lower bound (between: a number, or an ISO date/time for a date column; "
        "row_count_between: rows). None: unbounded.",
    )
    max: float | str | None = Field(default=None, description="Upper bound, as for ``min``.")
    strict: bool = Field(default=False, description="between: exclude the bounds themselves.")
    values: list[_Scalar] | None = Field(
        default=None, max_length=1000, description="in_set: the allowed values (at most 1000)."
    )
    pattern: str | None = Field(
        default=None,
        max_length=MAX_PATTERN,
        description="match_regex: an RE2 regular expression a value must contain a match of "
        "(anchor with ^…$ for a full match); RE2 runs in linear time, so no pattern can hang "
        "the check.",
    )
    max_age: str | None = Field(
        default=None,
        max_length=32,
        description="freshness: how old the newest value may be: '36h', '7d', '90m', '2w' or "
        "seconds.",
    )
    dataset: str | None = Field(
        default=None, max_length=128, description="references: the dataset whose values count."
    )
    dataset_column: str | None = Field(
        default=None,
        max_length=256,
        description="references: its column (default: the same name as ``column``).",
    )
    dataset_version: int | None = Field(
        default=None, ge=1, description="references: its version (default: the latest)."
    )
    sql: str | None = Field(
        default=None,
        max_length=MAX_SQL,
        description="sql: one read-only SELECT over the table 'data' that returns the failing "
        'rows, e.g. "SELECT * FROM data WHERE income < 0 AND eligible".',
    )
    mostly: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of rows that must pass (Great Expectations' mostly); 1.0: every row.",
    )
    blocking: bool = Field(
        default=True,
        description="A failure quarantines the version (no training run or pipeline may consume "
        "it without an override); false: it is only reported (status 'warned').",
    )
    description: str = Field(default="", max_length=1000, description="Free text.")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ExpectationCreate:
        missing = [f for f in _NEEDS[self.kind] if getattr(self, f) in (None, "", [])]
        if missing:
            raise ValueError(
                f"a {self.kind.value} expectation needs {', '.join(missing)}; e.g. "
                + _EXAMPLES[self.kind]
            )
        if self.max_age is not None:
            max_age_seconds(self.max_age)
        return self


_EXAMPLES = {
    ExpectationKind.NOT_NULL: '{"kind": "not_null", "column": "age"}',
    ExpectationKind.UNIQUE: '{"kind": "unique", "column": "application_id"}',
    ExpectationKind.BETWEEN: '{"kind": "between", "column": "age", "min": 0, "max": 120}',
    ExpectationKind.IN_SET: '{"kind": "in_set", "column": "region", "values": ["north"]}',
    ExpectationKind.MATCH_REGEX: '{"kind": "match_regex", "column": "zip", "pattern": "^[0-9]+$"}',
    ExpectationKind.ROW_COUNT_BETWEEN: '{"kind": "row_count_between", "min": 1000}',
    ExpectationKind.FRESHNESS: '{"kind": "freshness", "column": "updated_at", "max_age": "2d"}',
    ExpectationKind.REFERENCES: '{"kind": "references", "column": "office", "dataset": "offices"}',
    ExpectationKind.SQL: '{"kind": "sql", "sql": "SELECT * FROM data WHERE income < 0"}',
}


def max_age_seconds(text: str) -> int:
    """``'36h'`` → 129600 seconds.

    Raises:
        ValueError: Not a number of seconds, minutes, hours, days or weeks.
    """
    found = _DURATION.match(text)
    if found is None or int(found.group(1)) == 0:
        raise ValueError(
            f"max_age {text!r} is not a duration; use e.g. '36h', '7d', '90m', '2w' or seconds"
        )
    return int(found.group(1)) * _UNITS[found.group(2)]


class Expectation(ExpectationCreate):
    """An expectation of a dataset, as stored."""

    id: str = Field(description="Expectation id.")
    project: str = Field(description="Project name.")
    dataset_name: str = Field(description="The dataset it belongs to.")
    created_at: datetime = Field(description="When it was added (UTC).")
    created_by: str = Field(description="Who added it.")


class ExpectationResult(_Schema):
    """What one expectation found on one version."""

    name: str = Field(description="The expectation's name.")
    kind: ExpectationKind = Field(description="Its kind.")
    column: str | None = Field(default=None, description="The column checked.")
    blocking: bool = Field(description="Whether a failure quarantines the version.")
    status: str = Field(
        description="passed, failed, or error (the check could not run: a missing column, a "
        "referenced dataset that does not exist, SQL that fails on this version)."
    )
    observed: dict[str, Any] = Field(
        default_factory=dict,
        description="What was measured: rows, failing_rows, failing_share, min/max, newest, …",
    )
    failing_rows: int | None = Field(
        default=None, description="Rows that failed (None where the check is about the table)."
    )
    sample: list[dict[str, Any]] = Field(
        default_factory=list, description="Up to ``sample_rows`` failing rows, as JSON values."
    )
    message: str = Field(default="", description="One line saying what was found.")


class QualityReport(_Schema):
    """The expectations of a dataset evaluated on one version."""

    id: str = Field(description="Report id (its files: report.json, report.html).")
    project: str = Field(description="Project name.")
    dataset: str = Field(description="Dataset name.")
    version: int = Field(description="Version number.")
    dataset_version_id: str = Field(description="Dataset version id.")
    trigger: str = Field(description="ingest, manual or pipeline.")
    status: QualityStatus = Field(description="The verdict it gave the version.")
    rows: int = Field(description="Rows of the version.")
    evaluated: int = Field(description="Expectations evaluated.")
    failed: int = Field(description="Expectations failed or in error.")
    blocking_failed: int = Field(description="Blocking expectations failed or in error.")
    results: list[ExpectationResult] = Field(description="One result per expectation, by name.")
    created_at: datetime = Field(description="When it ran (UTC).")
    created_by: str = Field(description="Who ran it.")


class UseApproval(_Schema):
    """An exception to the use rules, recorded on a version: a quarantine override, or a
    justification for training on personal data."""

    kind: str = Field(description="quarantine or personal.")
    by: str = Field(description="Who gave it.")
    at: datetime = Field(description="When (UTC).")
    justification: str = Field(description="Why, as recorded in the audit trail.")
