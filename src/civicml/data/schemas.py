"""Schemas of datasets that cross a boundary: SDK, REST and ``civicml datasets --json``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Classification",
    "ColumnKind",
    "ColumnProfile",
    "ColumnSchema",
    "Dataset",
    "DatasetVersion",
    "ReadOptions",
    "SchemaChanges",
    "SourceFormat",
    "TopValue",
    "TypeChange",
]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Classification(StrEnum):
    """How sensitive a dataset is, least to most: ``public`` (declared only: detection never
    concludes it), ``internal`` (no personal data found), ``confidential`` (quasi-identifiers
    such as postcodes or ages, or pseudonymised columns), ``personal`` (direct identifiers)."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PERSONAL = "personal"

    @property
    def rank(self) -> int:
        """0 for public … 3 for personal."""
        return list(Classification).index(self)


class SourceFormat(StrEnum):
    """The file formats a dataset version can be ingested from."""

    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"
    DATAFRAME = "dataframe"


class ColumnKind(StrEnum):
    """How a column is profiled, decided by its Arrow type."""

    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    CATEGORICAL = "categorical"
    OTHER = "other"


class ColumnSchema(_Schema):
    """One column of a dataset version: name, Arrow type and whether it holds nulls."""

    name: str = Field(description="Column name, e.g. 'age'.")
    type: str = Field(
        description="Arrow type as pyarrow writes it, e.g. 'int64', 'double', 'string', "
        "'bool', 'timestamp[s]', 'date32[day]'."
    )
    nullable: bool = Field(
        description="Whether the column holds at least one missing value (null, or NaN in a "
        "floating-point column) in this version."
    )


class TypeChange(_Schema):
    """A column whose Arrow type differs from the previous version."""

    name: str = Field(description="Column name.")
    before: str = Field(description="Arrow type in the previous version.")
    after: str = Field(description="Arrow type in this version.")


class SchemaChanges(_Schema):
    """What changed in the columns since the previous version of the same dataset."""

    previous_version: int = Field(description="The version compared against.")
    added: list[ColumnSchema] = Field(
        default_factory=list, description="Columns this version has and the previous lacked."
    )
    removed: list[ColumnSchema] = Field(
        default_factory=list, description="Columns the previous version had and this one lacks."
    )
    retyped: list[TypeChange] = Field(
        default_factory=list, description="Columns whose Arrow type changed."
    )
    nullability_changed: list[str] = Field(
        default_factory=list,
        description="Columns that started or stopped holding missing values.",
    )

    @property
    def changed(self) -> bool:
        """Whether any column was added, removed or retyped."""
        return bool(self.added or self.removed or self.retyped)


class TopValue(_Schema):
    """A frequent value of a categorical column and how often it occurs."""

    value: str = Field(description="The value (as text).")
    count: int = Field(
        description="Rows holding it (a lower bound when the profile is approximate)."
    )


class ColumnProfile(_Schema):
    """Summary statistics of one column; which fields are set depends on ``kind``."""

    name: str = Field(description="Column name.")
    type: str = Field(description="Arrow type, e.g. 'double'.")
    kind: ColumnKind = Field(description="numeric, boolean, datetime, categorical or other.")
    count: int = Field(description="Rows with a value (not missing).")
    missing: int = Field(description="Rows without a value: null, or NaN in a float column.")
    min: float | int | str | None = Field(
        default=None,
        description="Smallest value: a number, or ISO-8601 text for datetimes; None when the "
        "column has no values.",
    )
    max: float | int | str | None = Field(
        default=None, description="Largest value, as for ``min``."
    )
    mean: float | None = Field(
        default=None, description="Arithmetic mean (numeric); share of true values (boolean)."
    )
    std: float | None = Field(
        default=None, description="Sample standard deviation (ddof=1), as pandas computes it."
    )
    quantiles: dict[str, float | None] | None = Field(
        default=None,
        description="p5, p25, p50, p75 and p95 (linear interpolation, as pandas); exact up to "
        "the reservoir size, estimated from a uniform reservoir sample beyond it; a quantile "
        "that is infinite is None.",
    )
    quantiles_exact: bool | None = Field(
        default=None, description="Whether the quantiles were computed from every value."
    )
    true_count: int | None = Field(default=None, description="Rows that are true (boolean).")
    false_count: int | None = Field(default=None, description="Rows that are false (boolean).")
    distinct: int | None = Field(
        default=None, description="Number of distinct values (categorical)."
    )
    distinct_exact: bool | None = Field(
        default=None,
        description="Whether ``distinct`` and ``top`` counts are exact; past the tracking limit "
        "``distinct`` is a k-minimum-values estimate and ``top`` counts are lower bounds.",
    )
    top: list[TopValue] | None = Field(
        default=None, description="The 10 most frequent values with their counts (categorical)."
    )


class ReadOptions(_Schema):
    """How a CSV source's bytes were read: detected, or as given at ingest."""

    encoding: str = Field(
        description="Text encoding, as Python names it: 'utf-8', 'utf-8-sig' (UTF-8 with a "
        "byte-order mark), 'utf-16-le', 'cp1252', 'iso8859-1', ..."
    )
    delimiter: str = Field(description="Field delimiter: ',', ';', '\\t' (tab), '|', ...")


class Dataset(_Schema):
    """A named, versioned dataset of a project."""

    id: str = Field(description="Dataset id.")
    project: str = Field(description="Name of the owning project.")
    name: str = Field(description="Dataset name, unique within the project, e.g. 'applications'.")
    description: str = Field(default="", description="Free text.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it.")
    latest_version: int | None = Field(
        default=None, description="Highest version number; None when it has no versions."
    )
    classification: Classification | None = Field(
        default=None,
        description="The most sensitive classification of its versions from the personal-data "
        "scans (docs/datasets.md, 'Personal data'); None until a version is scanned.",
    )


class DatasetVersion(_Schema):
    """One immutable version of a dataset: its Parquet content, schema and profile."""

    id: str = Field(description="Dataset version id.")
    project: str = Field(description="Name of the owning project.")
    name: str = Field(description="Name of the dataset it belongs to.")
    version: int = Field(ge=1, description="Version number, from 1; never reused.")
    digest: str = Field(
        description="SHA-256 of the stored Parquet file: where its bytes are stored and how "
        "they are checked when read."
    )
    content_hash: str | None = Field(
        default=None,
        description="SHA-256 of its logical content (column names, types and values, whatever "
        "the source format or Parquet encoding); its identity: ingesting the same content "
        "returns this version. None for a version recorded before it existed (migration "
        "0025) and not yet back-filled.",
    )
    size: int = Field(description="Size of the stored Parquet file in bytes.")
    source_format: SourceFormat = Field(description="What it was ingested from.")
    source_name: str | None = Field(
        default=None, description="File name of the source (no directory), when it was a file."
    )
    source_fingerprint: str | None = Field(
        default=None,
        description="SHA-256 of the source bytes as received; None for in-memory data frames.",
    )
    row_count: int = Field(description="Number of rows.")
    columns: list[ColumnSchema] = Field(description="The columns, in order.")
    profile: list[ColumnProfile] = Field(description="Statistics per column, in column order.")
    schema_changes: SchemaChanges | None = Field(
        default=None, description="Column changes against the previous version; None for v1."
    )
    read_options: ReadOptions | None = Field(
        default=None,
        description="How a CSV source was read (encoding and delimiter, detected or given); "
        "None for Parquet, JSON Lines and data frames.",
    )
    description: str = Field(default="", description="Free text.")
    created_at: datetime = Field(description="When it was ingested (UTC).")
    created_by: str = Field(description="Who ingested it.")
    quality_status: str | None = Field(
        default=None,
        description="Latest verdict of the dataset's quality expectations: passed, warned (only "
        "non-blocking ones failed), quarantined (a blocking one failed: no training run or "
        "pipeline may consume it) or released (quarantine overridden); None: not checked.",
    )
    classification: Classification | None = Field(
        default=None,
        description="What its personal-data scan found: internal, confidential or personal; "
        "None: not scanned.",
    )
    redacted_from: str | None = Field(
        default=None, description="Id of the version it is a redaction of; None otherwise."
    )
