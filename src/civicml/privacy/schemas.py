"""Schemas of privacy that cross a boundary: SDK, REST and ``civicml privacy --json``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MAX_RETENTION_DAYS",
    "CaptureErasure",
    "Erasure",
    "ErasureCreate",
    "ErasureSummary",
    "FlaggedModel",
    "HoldSet",
    "RetentionResult",
    "RetentionRule",
    "RetentionSet",
    "TargetKind",
    "VersionErasure",
]

MAX_RETENTION_DAYS = 36_500
MAX_SUBJECT = 1_024


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TargetKind(StrEnum):
    """What a retention rule or legal hold governs."""

    DATASET = "dataset"
    ENDPOINT = "endpoint"  # the endpoint's captured requests


class RetentionSet(_Schema):
    """A retention period; null keeps the data until it is erased."""

    days: int | None = Field(
        ge=1,
        le=MAX_RETENTION_DAYS,
        description="Days to keep a dataset version (from its ingestion) or a captured request "
        "(from its hour); null: no retention period.",
    )


class HoldSet(_Schema):
    """A legal hold: nothing of the target is deleted while it stands."""

    reason: str = Field(
        min_length=1, max_length=2_000, description="Why, e.g. a case or request reference."
    )

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        return no_nul(value, "reason")


def no_nul(value: str, what: str) -> str:
    """``value``, refused when it holds a NUL character (no database column can store one)."""
    if "\x00" in value:
        raise ValueError(f"the {what} must not contain NUL characters")
    return value


class RetentionRule(_Schema):
    """The retention period and legal hold of one dataset or endpoint."""

    project: str = Field(description="Project name.")
    kind: TargetKind = Field(description="dataset or endpoint.")
    name: str = Field(description="The dataset's or endpoint's name.")
    days: int | None = Field(description="Retention period in days; null: none.")
    legal_hold: bool = Field(description="Exempt from retention and erasure while true.")
    hold_reason: str | None = Field(description="Why it is held.")
    updated_at: datetime = Field(description="Last change (UTC).")
    updated_by: str = Field(description="Who made it.")


class RetentionResult(_Schema):
    """What one retention pass deleted, and what it left for a legal hold."""

    expired_versions: list[str] = Field(
        description="Dataset versions whose bytes were deleted: 'project/name vN'."
    )
    expired_capture_files: int = Field(description="Capture files deleted.")
    held: list[str] = Field(description="Targets skipped for a legal hold: 'kind project/name'.")
    bytes_deleted: int = Field(description="Stored objects removed (not shared with others).")
    audit_event_ids: list[str] = Field(description="The audit events recording it.")


class ErasureCreate(_Schema):
    """An erasure request: the data subject is every row whose key column holds the value."""

    key_column: str = Field(
        min_length=1, max_length=256, description="The column identifying the subject."
    )
    value: str | int = Field(description="The subject's value in that column.")
    reason: str = Field(
        default="", max_length=2_000, description="The request's reference (no personal data)."
    )

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | int) -> str | int:
        if isinstance(value, str):
            if not 1 <= len(value) <= MAX_SUBJECT:
                raise ValueError(f"the value must have 1 to {MAX_SUBJECT} characters")
            no_nul(value, "value")
        return value

    @field_validator("key_column", "reason")
    @classmethod
    def _text(cls, value: str) -> str:
        return no_nul(value, "key column and reason")


class VersionErasure(_Schema):
    """One dataset version that held the subject, and its successor without them."""

    dataset: str = Field(description="Dataset name.")
    version: int = Field(description="The version that held the subject.")
    version_id: str = Field(description="Its id.")
    rows_before: int = Field(description="Its rows.")
    rows_removed: int = Field(description="The subject's rows in it.")
    digest_before: str = Field(description="SHA-256 of its Parquet file.")
    successor_version: int | None = Field(
        description="The version written without the subject's rows; null: none were left."
    )
    successor_id: str | None = Field(description="Its id.")
    digest_after: str | None = Field(description="SHA-256 of the successor's Parquet file.")
    bytes_deleted: bool = Field(
        description="The old file was deleted (false: other owners still hold the same bytes)."
    )
    check_reports_removed: int = Field(
        default=0,
        description="Files of its quality and personal-data reports removed (they hold sample "
        "rows).",
    )


class CaptureErasure(_Schema):
    """One capture file of an endpoint that held the subject's requests."""

    endpoint: str = Field(description="Endpoint name.")
    path_before: str = Field(description="The file's path under the endpoint.")
    digest_before: str = Field(description="SHA-256 of the file.")
    records_removed: int = Field(description="The subject's records in it.")
    path_after: str | None = Field(description="The rewritten file; null: nothing was left.")
    digest_after: str | None = Field(description="SHA-256 of the rewritten file.")
    bytes_deleted: bool = Field(description="The old file was deleted.")


class FlaggedModel(_Schema):
    """A model version trained on data that held the subject."""

    project: str = Field(description="Its project.")
    model: str = Field(description="Registered model name.")
    version: int = Field(description="Version number.")
    model_version_id: str = Field(description="Its id.")


class ErasureSummary(_Schema):
    """What an erasure found and removed."""

    versions: list[VersionErasure] = Field(description="Dataset versions that held the subject.")
    captures: list[CaptureErasure] = Field(description="Capture files that held the subject.")
    models: list[FlaggedModel] = Field(
        description="Model versions marked 'trained on erased data'."
    )
    withheld: list[str] = Field(
        description="Targets not erased because of a legal hold: 'kind name'."
    )
    scanned_versions: int = Field(description="Dataset versions with the key column, scanned.")
    scanned_capture_files: int = Field(description="Capture files scanned.")
    audit_event_ids: list[str] = Field(description="The audit events that record the erasure.")


class Erasure(_Schema):
    """An erasure request carried out, and its certificate."""

    id: str = Field(description="Erasure id.")
    project: str = Field(description="Project name.")
    key_column: str = Field(description="The key column.")
    subject_hash: str = Field(
        description="SHA-256 of a random salt (in the certificate only) and the subject's "
        "value: the value itself is recorded nowhere."
    )
    status: str = Field(description="'completed', or 'deleting' until every old file is gone.")
    reason: str = Field(description="The request's reference.")
    summary: ErasureSummary = Field(description="What was found and removed.")
    certificate_digest: str | None = Field(description="SHA-256 of certificate.json.")
    audit_event_id: str | None = Field(
        default=None, description="The 'erasure.completed' audit event (binds the certificate)."
    )
    created_at: datetime = Field(description="When it was carried out (UTC).")
    created_by: str = Field(description="Who asked for it.")
