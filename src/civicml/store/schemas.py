"""Schemas of the store layer that cross a boundary."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ArtifactInfo"]


class ArtifactInfo(BaseModel):
    """An artifact: a relative path inside its owner, naming content-addressed bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Relative path inside the owner, e.g. 'model/model.pkl'.")
    digest: str = Field(description="SHA-256 of the content (hex).")
    size: int = Field(description="Size in bytes.")
    media_type: str | None = Field(default=None, description="Media type, when known.")
    owner_kind: str = Field(description="What owns it: 'run', 'model_version', ...")
    owner_id: str = Field(description="Id of the owner.")
    created_at: datetime = Field(description="When it was recorded (UTC).")
    created_by: str = Field(description="Who recorded it.")
