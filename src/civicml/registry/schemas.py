"""Schemas of the model registry that cross a boundary: SDK, REST and ``civicml models --json``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

__all__ = [
    "PROTECTED_ALIASES",
    "ApprovalPolicyRecord",
    "ApprovalRecord",
    "ApprovalStatus",
    "ColumnSpec",
    "ModelAlias",
    "ModelVersion",
    "RegisteredModel",
    "Signature",
]


#: Aliases that may only point at an Approved version unless the model's approval policy names
#: others (``[aliases] require_approved``).
PROTECTED_ALIASES = ("production",)


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovalStatus(StrEnum):
    """Where a model version stands in review (SageMaker's ``ModelApprovalStatus``)."""

    PENDING = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class ColumnSpec(_Schema):
    """One input column of a model signature, e.g. ``{"name": "age", "type": "integer"}``."""

    name: str = Field(min_length=1, max_length=256, description="Column name.")
    type: str = Field(
        min_length=1,
        max_length=64,
        description="Column type as the model sees it, e.g. 'integer', 'double', 'string', "
        "'boolean', 'datetime' or a framework dtype such as 'float64'.",
    )
    nullable: bool = Field(default=True, description="Whether the column may hold nulls.")

    @field_validator("name", "type")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank, e.g. 'age' or 'integer'")
        return value


class Signature(RootModel[list[ColumnSpec]]):
    """The input columns a model version expects, in order; column names are unique."""

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        seen: set[str] = set()
        for column in self.root:
            if column.name in seen:
                raise ValueError(f"column {column.name!r} appears twice; names must be unique")
            seen.add(column.name)
        return self


class RegisteredModel(_Schema):
    """A registered model: the named, versioned home of one model within a project."""

    id: str = Field(description="Registered model id.")
    project: str = Field(description="Name of the owning project.")
    name: str = Field(description="Model name, unique within the project, e.g. 'eligibility'.")
    description: str = Field(default="", description="Free text.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it.")
    latest_version: int | None = Field(
        default=None, description="Highest existing version number; None when it has none."
    )
    aliases: dict[str, int] = Field(
        default_factory=dict,
        description="Aliases and the version each points at, e.g. {'production': 3}.",
    )


class ModelVersion(_Schema):
    """One immutable version of a registered model and its review state."""

    id: str = Field(description="Model version id.")
    project: str = Field(description="Name of the owning project.")
    name: str = Field(description="Name of the registered model it belongs to.")
    version: int = Field(ge=1, description="Version number, from 1; never reused.")
    run_id: str | None = Field(default=None, description="The run that produced it, if any.")
    artifact_digest: str = Field(
        description="SHA-256 of the version's manifest in the artifact store; the manifest "
        "names every file of the model with its own SHA-256 and size."
    )
    artifact_path: str = Field(
        description="Where the files came from: the path inside the run, e.g. 'model'."
    )
    signature: list[ColumnSpec] | None = Field(
        default=None, description="Input columns the model expects, when known."
    )
    metrics: dict[str, float | None] = Field(
        default_factory=dict,
        description="Evaluation metrics at registration; None stands for NaN or infinity.",
    )
    description: str = Field(default="", description="Free text.")
    approval_status: ApprovalStatus = Field(description="Review state.")
    approval_by: str | None = Field(
        default=None, description="Who last changed the approval status."
    )
    approval_note: str | None = Field(
        default=None, description="Why they changed it (required for approve and reject)."
    )
    approval_at: datetime | None = Field(
        default=None, description="When the approval status last changed (UTC)."
    )
    archived: bool = Field(
        default=False, description="Archived versions are hidden from listings by default."
    )
    aliases: list[str] = Field(
        default_factory=list, description="Aliases pointing at this version, sorted."
    )
    created_at: datetime = Field(description="When it was registered (UTC).")
    created_by: str = Field(description="Who registered it.")


class ModelAlias(_Schema):
    """An alias of a registered model (e.g. ``production``) and the version it points at."""

    project: str = Field(description="Name of the owning project.")
    model: str = Field(description="Name of the registered model.")
    alias: str = Field(description="The alias, as it was set.")
    version: int = Field(ge=1, description="The version it points at.")
    version_id: str = Field(description="Id of that version.")
    updated_at: datetime = Field(description="When it was last set or moved (UTC).")
    updated_by: str = Field(description="Who set or moved it.")


class ApprovalRecord(_Schema):
    """One change of a model version's approval status: who, why, when."""

    id: str = Field(description="Record id.")
    name: str = Field(description="Name of the registered model.")
    version: int = Field(description="Version number.")
    from_status: ApprovalStatus = Field(description="Status before the change.")
    to_status: ApprovalStatus = Field(description="Status after the change.")
    by: str = Field(description="Who changed it.")
    note: str = Field(description="Why they changed it.")
    at: datetime = Field(description="When (UTC).")
    evidence: dict[str, Any] | None = Field(
        default=None,
        description="For approvals under a policy: the gate's evaluation (each check) and any "
        "override (justification, role).",
    )


class ApprovalPolicyRecord(_Schema):
    """One version of a registered model's approval policy, as stored."""

    model: str = Field(description="Name of the registered model.")
    version: int = Field(ge=1, description="Policy version, from 1; the latest one applies.")
    policy: dict[str, Any] = Field(description="The parsed policy (see civicml.oversight.policy).")
    source: str = Field(description="The policy file as it was written (TOML or JSON).")
    created_at: datetime = Field(description="When it was set (UTC).")
    created_by: str = Field(description="Who set it.")
