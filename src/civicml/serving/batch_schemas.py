"""Schemas of batch prediction jobs that cross a boundary: SDK, REST and ``civicml batch --json``.

A batch job reads one dataset version, predicts every row with one model version and stores the
predictions as a new version of an output dataset (SageMaker's batch transform; ``join`` is its
``DataProcessing.JoinSource``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from civicml.core.errors import CivicMLError

__all__ = [
    "MAX_CHUNK_ROWS",
    "BatchJob",
    "BatchJobCreate",
    "BatchJobFailedError",
    "BatchJobStatus",
    "BatchJoin",
]

#: A version number (from 1; ``true`` is not one) or a name: an alias, or ``"latest"``.
VersionRef = Annotated[StrictInt, Field(ge=1)] | Annotated[str, Field(min_length=1, max_length=128)]

#: The most rows one chunk may hold (a chunk, its predictions and explanations are in memory).
MAX_CHUNK_ROWS = 1_000_000


class BatchJobFailedError(CivicMLError):
    """A batch job ran and failed (its row says why); nothing was written to its output.

    Status 422: the job could not turn this input into predictions with this model (a value the
    model refuses, a non-finite prediction). The job stays listed with status ``failed``.
    """

    status = 422


class BatchJoin(StrEnum):
    """What the output rows carry beside the predictions (SageMaker's ``JoinSource``)."""

    #: Every input column, then the outputs (``JoinSource=Input``).
    INPUT = "input"
    #: Only an identifying column (``id_column``, else ``row``: the 0-based input row) and
    #: the outputs (``JoinSource=None``).
    NONE = "none"


class BatchJobStatus(StrEnum):
    """Where a batch job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BatchJobCreate(BaseModel):
    """What a batch job predicts, with what, and where the predictions go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=128, description="The registered model.")
    model_version: VersionRef = Field(
        description="Its version number, or an alias such as 'production'."
    )
    input_dataset: str = Field(min_length=1, max_length=128, description="The rows to predict.")
    input_version: VersionRef = Field(
        default="latest", description="The input dataset's version number, or 'latest'."
    )
    output_dataset: str = Field(
        min_length=1,
        max_length=128,
        description="The dataset the predictions become a new version of (created if needed).",
    )
    join: BatchJoin = Field(
        default=BatchJoin.INPUT,
        description="'input': every input column beside the outputs; 'none': only id_column "
        "(or 'row', the input row number) and the outputs.",
    )
    id_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="With join='none': the input column that identifies a row (default 'row').",
    )
    explain: StrictBool = Field(
        default=False,
        description="Add per-row SHAP attributions: 'shap_<column>' (and 'shap_base_value'); "
        "for a multiclass model, 'shap_<class>_<column>' per class.",
    )
    chunk_rows: StrictInt = Field(
        default=50_000,
        ge=1,
        le=MAX_CHUNK_ROWS,
        description="Rows predicted at once (memory is bounded by about one chunk).",
    )
    description: str = Field(default="", max_length=1024, description="Kept with the output.")


class BatchJob(BaseModel):
    """One batch prediction job and its outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Job id.")
    project: str = Field(description="Project name.")
    status: BatchJobStatus = Field(description="queued, running, succeeded or failed.")
    model_name: str = Field(description="The registered model.")
    model_version: int = Field(ge=1, description="The model version that predicted.")
    model_version_id: str = Field(description="Its id.")
    input_dataset: str = Field(description="The input dataset.")
    input_version: int = Field(ge=1, description="The input version that was read.")
    input_version_id: str = Field(description="Its id.")
    output_dataset: str = Field(description="The output dataset.")
    output_version: int | None = Field(
        default=None, description="The version the predictions became (once succeeded)."
    )
    output_version_id: str | None = Field(default=None, description="Its id.")
    join: BatchJoin = Field(description="'input' or 'none'.")
    id_column: str | None = Field(default=None, description="The identifying column (join='none').")
    explain: bool = Field(description="Whether SHAP attributions were added.")
    chunk_rows: int = Field(ge=1, description="Rows predicted at once.")
    executor: str = Field(description="'local' (this process) or 'ray' (chunks as Ray tasks).")
    rows: int | None = Field(default=None, description="Rows predicted (once succeeded).")
    chunks: int | None = Field(default=None, description="Chunks predicted (once succeeded).")
    error: str | None = Field(default=None, description="Why it failed.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it.")
    started_at: datetime | None = Field(default=None, description="When it started running.")
    ended_at: datetime | None = Field(default=None, description="When it succeeded or failed.")
    duration_s: float | None = Field(default=None, description="Running time in seconds.")
