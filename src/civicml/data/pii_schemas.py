"""Schemas of personal-data scans, classifications and redactions (SDK, REST, ``--json``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from civicml.data.schemas import Classification, DatasetVersion

__all__ = [
    "Classification",
    "KAnonymity",
    "PiiFinding",
    "PiiReport",
    "PiiType",
    "RedactAction",
    "RedactRequest",
    "RedactionResult",
    "RedactionRule",
]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PiiType(StrEnum):
    """Kinds of personal data the scanner recognises."""

    EMAIL = "email"
    PHONE = "phone"
    US_SSN = "us_ssn"
    UK_NINO = "uk_nino"
    IBAN = "iban"
    PAYMENT_CARD = "payment_card"
    IP_ADDRESS = "ip_address"
    DATE_OF_BIRTH = "date_of_birth"
    POSTAL_ADDRESS = "postal_address"
    PERSON_NAME = "person_name"
    POSTCODE = "postcode"
    AGE = "age"

    @property
    def quasi(self) -> bool:
        """A quasi-identifier (identifies only combined with others): postcode, age."""
        return self in (PiiType.POSTCODE, PiiType.AGE)


class PiiFinding(_Schema):
    """Personal data found in one column."""

    column: str = Field(description="Column name.")
    type: PiiType = Field(description="What it looks like.")
    confidence: float = Field(
        ge=0,
        le=1,
        description="0-1: the share of sampled values that match (checksums "
        "included), raised when the column's name agrees; name-only evidence gives 0.5-0.6.",
    )
    matched: int = Field(description="Sampled values that matched.")
    sampled: int = Field(description="Non-missing values looked at.")
    evidence: str = Field(description="values, name, or values+name.")
    redacted: str | None = Field(
        default=None,
        description="The redaction that made this column (hash, mask, generalize_date, …) when "
        "the version is a redaction's output; None otherwise.",
    )


class PiiReport(_Schema):
    """A personal-data scan of one dataset version."""

    id: str = Field(description="Report id (its files: report.json, report.html).")
    project: str = Field(description="Project name.")
    dataset: str = Field(description="Dataset name.")
    version: int = Field(description="Version number.")
    dataset_version_id: str = Field(description="Dataset version id.")
    classification: Classification = Field(description="What the findings make the version.")
    findings: list[PiiFinding] = Field(description="Findings, most confident first.")
    columns_scanned: int = Field(description="Columns looked at.")
    rows_scanned: int = Field(
        description="Rows sampled, evenly spread over the version (every s-th row, s a power "
        "of two)."
    )
    rows: int = Field(description="Rows of the version.")
    complete: bool = Field(
        description="False when the time budget ran out before every column was scanned."
    )
    trigger: str = Field(description="ingest or manual.")
    created_at: datetime = Field(description="When it ran (UTC).")
    created_by: str = Field(description="Who ran it.")


class RedactAction(StrEnum):
    """What a redaction rule does to its column."""

    DROP = "drop"
    MASK = "mask"
    HASH = "hash"
    GENERALIZE_DATE = "generalize_date"
    AGE_BAND = "age_band"
    POSTCODE_PREFIX = "postcode_prefix"


class RedactionRule(_Schema):
    """One column's redaction."""

    column: str = Field(min_length=1, max_length=256, description="The column.")
    action: RedactAction = Field(
        description="drop: remove the column; mask: keep only the last ``keep`` characters "
        "(e-mail: the first letter and the domain); hash: HMAC-SHA256 with the project's "
        "pseudonymisation secret (joins still work, values cannot be reversed); "
        "generalize_date: to the year or month; age_band: to bands of ``width`` years; "
        "postcode_prefix: keep the outward code (UK) or the first ``keep`` characters."
    )
    keep: int = Field(
        default=0, ge=0, le=16, description="mask / postcode_prefix: characters kept."
    )
    granularity: str = Field(
        default="year", pattern="^(year|month)$", description="generalize_date: year or month."
    )
    width: int = Field(default=10, ge=2, le=50, description="age_band: years per band.")
    key: str = Field(
        default="default",
        pattern="^[a-z0-9][a-z0-9_-]{0,63}$",
        description="hash: which of the project's secrets (one is made on first use).",
    )


class RedactRequest(_Schema):
    """A redaction of one dataset version into a successor version."""

    rules: list[RedactionRule] = Field(
        min_length=1, max_length=200, description="One rule per column."
    )
    target: str | None = Field(
        default=None,
        max_length=128,
        description="Dataset the redacted rows go to (default: a new version of the same one).",
    )
    quasi_identifiers: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Columns whose combination could single a person out (after redaction): "
        "the k-anonymity check groups by them.",
    )
    min_k: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Refuse the redaction when a group of quasi-identifiers has fewer rows than "
        "this (1: only report k).",
    )
    description: str = Field(default="", max_length=1000, description="Kept with the version.")

    @model_validator(mode="after")
    def _one_rule_per_column(self) -> RedactRequest:
        seen = [r.column for r in self.rules]
        twice = sorted({c for c in seen if seen.count(c) > 1})
        if twice:
            raise ValueError(f"column(s) {', '.join(twice)} have more than one rule")
        return self


class KAnonymity(_Schema):
    """k-anonymity of a table over its quasi-identifiers: every combination of their values is
    shared by at least ``k`` rows."""

    quasi_identifiers: list[str] = Field(description="The columns grouped by.")
    k: int = Field(description="Rows in the smallest group (0: no rows).")
    groups: int = Field(description="Distinct combinations.")
    smallest: list[dict[str, Any]] = Field(
        description="Up to 5 smallest groups: their values and 'count'."
    )


class RedactionResult(_Schema):
    """What a redaction wrote."""

    source: DatasetVersion = Field(description="The version redacted.")
    version: DatasetVersion = Field(description="The redacted successor (DerivedFrom lineage).")
    rules: list[RedactionRule] = Field(description="The rules applied.")
    k_anonymity: KAnonymity | None = Field(
        default=None, description="The check over ``quasi_identifiers``, when given."
    )
    classification: Classification | None = Field(
        default=None, description="The successor's classification, from its own scan."
    )
