"""Schemas of the catalog that cross a boundary: SDK, REST and ``civicml catalog --json``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from civicml.data.schemas import Classification

__all__ = [
    "MAX_COLUMN_NOTE",
    "MAX_DESCRIPTION",
    "MAX_PAGE",
    "MAX_QUERY",
    "CatalogEntry",
    "CatalogHit",
    "ColumnDoc",
    "DescribeRequest",
    "EntryKind",
    "HitKind",
    "SearchPage",
]

#: Longest search text (characters).
MAX_QUERY = 200
#: Most hits on one page.
MAX_PAGE = 200
MAX_DESCRIPTION = 10_000
MAX_COLUMN_NOTE = 2_000
MAX_TAGS = 32
MAX_TAG = 64
MAX_COLUMNS = 2_000


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EntryKind(StrEnum):
    """What can be documented in the catalog."""

    DATASET = "dataset"
    MODEL = "model"


class HitKind(StrEnum):
    """What a search finds."""

    DATASET = "dataset"
    MODEL = "model"
    MODEL_VERSION = "model_version"
    REPORT = "report"


class CatalogHit(_Schema):
    """One thing a search found."""

    kind: HitKind = Field(description="dataset, model, model_version or report.")
    project: str = Field(description="The project it belongs to.")
    name: str = Field(description="Its name (a report's title).")
    id: str = Field(description="Its id (the dataset's, model's, version's or report's).")
    version: int | None = Field(
        default=None, description="Latest dataset version, or the model version's number."
    )
    subkind: str | None = Field(
        default=None, description="A report's kind: drift, monitor, bias_post_training, ..."
    )
    description: str = Field(default="", description="Its description.")
    classification: Classification | None = Field(
        default=None, description="public, internal, confidential or personal; null: not set."
    )
    tags: list[str] = Field(default_factory=list, description="Its catalog tags.")
    owner: str = Field(description="Who created it.")
    created_at: datetime = Field(description="When it was created (UTC).")
    lineage: str | None = Field(
        default=None, description="The command that shows its lineage, for datasets and models."
    )


class SearchPage(_Schema):
    """One page of search hits, by name then project."""

    hits: list[CatalogHit] = Field(description="The hits on this page.")
    total: int = Field(description="Hits in all pages.")
    limit: int = Field(description="Most hits per page.")
    offset: int = Field(description="Hits skipped before this page.")
    suggestions: list[str] = Field(
        default_factory=list,
        description="Close names when nothing matched the text (fuzzy, visible projects only).",
    )


class DescribeRequest(_Schema):
    """What to write about a dataset or model; fields left out stay as they are."""

    description: str | None = Field(
        default=None, max_length=MAX_DESCRIPTION, description="Free text ('' clears it)."
    )
    classification: Classification | None = Field(
        default=None, description="public, internal, confidential or personal."
    )
    tags: list[str] | None = Field(
        default=None, max_length=MAX_TAGS, description="The tags, replacing any before."
    )
    columns: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_COLUMNS,
        description="Notes by column name, merged into the existing ones ('' removes one).",
    )

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("the description must not contain NUL characters")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = sorted({t.strip().lower() for t in value})
        for tag in out:
            if not tag or len(tag) > MAX_TAG or not tag.isprintable():
                raise ValueError(
                    f"tag {tag!r} is not valid: use 1 to {MAX_TAG} printable characters"
                )
        return out

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        for name, note in value.items():
            if "\x00" in name or "\x00" in note:
                raise ValueError("column names and notes must not contain NUL characters")
            if not name or len(name) > 256:
                raise ValueError(f"column name {name[:40]!r} is not valid (1 to 256 characters)")
            if len(note) > MAX_COLUMN_NOTE:
                raise ValueError(
                    f"the note of column {name!r} is longer than {MAX_COLUMN_NOTE} characters"
                )
        return value


class ColumnDoc(_Schema):
    """One column of a dataset's latest version, with its note."""

    name: str = Field(description="Column name.")
    type: str = Field(description="Arrow type.")
    note: str = Field(default="", description="What the column holds, as documented.")


class CatalogEntry(_Schema):
    """A dataset or model as the catalog shows it."""

    kind: EntryKind = Field(description="dataset or model.")
    project: str = Field(description="Project name.")
    name: str = Field(description="Its name.")
    id: str = Field(description="Its id.")
    description: str = Field(description="Catalog description (else the stage's own).")
    classification: Classification | None = Field(description="Classification; null: not set.")
    tags: list[str] = Field(description="Tags.")
    owner: str = Field(description="Who created it.")
    created_at: datetime = Field(description="When it was created (UTC).")
    latest_version: int | None = Field(description="Newest version number.")
    columns: list[ColumnDoc] = Field(
        default_factory=list, description="Datasets: the latest version's columns, documented."
    )
    updated_at: datetime | None = Field(default=None, description="Last catalog edit (UTC).")
    updated_by: str | None = Field(default=None, description="Who made it.")
