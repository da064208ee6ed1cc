"""Platform records of the monitoring stage: a stored report, as SDK, REST and CLI see it.

:mod:`civicml.monitoring.schemas` holds the engine's own output (:class:`DriftReport`); this
module holds what the platform records around it: which dataset versions were compared, the
verdict in brief, and the files stored with the report (``report.json``, ``report.html``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from civicml.monitoring.schemas import DriftVerdict
from civicml.store.schemas import ArtifactInfo

__all__ = ["DatasetVersionRef", "Report", "ReportInputs", "ReportKind", "ReportSummary"]

ReportKind = Literal["drift"]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetVersionRef(_Schema):
    """One dataset version a report read, e.g. ``applications v3``."""

    dataset: str = Field(description="Dataset name, e.g. 'applications'.")
    version: int = Field(ge=1, description="Version number ('latest' is resolved when run).")
    id: str = Field(description="Id of the dataset version (its lineage node's ref).")
    digest: str = Field(description="SHA-256 of the version's canonical Parquet file.")
    rows: int = Field(ge=0, description="Rows in the version.")


class ReportInputs(_Schema):
    """What a drift report compared."""

    baseline: DatasetVersionRef = Field(
        description="The reference data, e.g. the training dataset."
    )
    current: DatasetVersionRef = Field(
        description="The data checked against the baseline, e.g. captured inputs."
    )
    columns: list[str] | None = Field(
        default=None,
        description="Columns the comparison was restricted to; null: every column.",
    )
    drift_share: float = Field(
        description="The dataset drifts when at least this share of the columns drift."
    )
    min_rows: int | None = Field(
        default=None,
        description="Fewest rows each side needed for a verdict (setting drift_min_rows, or as "
        "given); null in reports made before the floor existed.",
    )


class ReportSummary(_Schema):
    """The verdict in brief; the per-column results are in the report's ``report.json``."""

    verdict: DriftVerdict = Field(
        description="'drift' when the share of drifted columns reaches drift_share; "
        "'no_drift'; 'insufficient_data' when a side has fewer rows than min_rows (no column "
        "judged, so no drift verdict either way)."
    )
    dataset_drift: bool = Field(description="True when verdict is 'drift'.")
    reference_rows: int | None = Field(
        default=None, ge=0, description="Rows of the baseline (null in older reports)."
    )
    current_rows: int | None = Field(
        default=None, ge=0, description="Rows of the data checked (null in older reports)."
    )
    insufficient_data: str | None = Field(
        default=None,
        description="Why there is no verdict, e.g. 'Only 4 current rows (at least 30 needed for "
        "a drift verdict)'; null when there is one.",
    )
    n_columns: int = Field(ge=0, description="Columns compared.")
    n_drifted: int = Field(
        ge=0, description="Columns whose test detected drift (0 when the data is insufficient)."
    )
    share_drifted: float = Field(ge=0, le=1, description="n_drifted / n_columns.")
    drifted_columns: list[str] = Field(description="Names of the drifted columns.")
    violations: int = Field(
        ge=0, description="Model Monitor style constraint violations of current vs. baseline."
    )
    violation_types: dict[str, int] = Field(
        description="Violations per check, e.g. {'missing_column_check': 1}."
    )


class Report(_Schema):
    """A stored report: the record, its inputs, its verdict and its files."""

    id: str = Field(description="Report id.")
    project: str = Field(description="Project name.")
    kind: ReportKind = Field(description="What the report is: 'drift'.")
    title: str = Field(description="Heading of the report.")
    created_at: datetime = Field(description="When it was made (UTC).")
    created_by: str = Field(description="Who made it.")
    summary: ReportSummary = Field(description="The verdict in brief.")
    inputs: ReportInputs = Field(description="The dataset versions compared and the options.")
    files: list[ArtifactInfo] = Field(
        description="Stored files: 'report.json' (the DriftReport) and 'report.html' "
        "(self-contained page)."
    )
