"""Model registry: registered models, versions, approval, aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.types import MetricNumber, PositiveInt64
from civicml.oversight import ApprovalService
from civicml.registry.etags import alias_etag, version_etag
from civicml.registry.schemas import (
    ApprovalRecord,
    ApprovalStatus,
    ColumnSpec,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)
from civicml.server.deps import Services, services
from civicml.server.paging import Page, page

router = APIRouter(prefix="/api/v1/projects/{project}/models", tags=["models"])
Svc = Annotated[Services, Depends(services)]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=1000,
        description="The ETag you read: the change is refused with 412 when the resource "
        "changed since ('*': only if it exists).",
    ),
]


def _tagged(response: Response, mv: ModelVersion) -> ModelVersion:
    response.headers["ETag"] = version_etag(mv)
    return mv


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelCreate(_Body):
    name: str = Field(description="Model name, e.g. 'eligibility'.")
    description: str = Field(default="", max_length=10_000, description="Free text.")


class VersionCreate(_Body):
    run_id: str | None = Field(default=None, description="Run whose artifacts are the model.")
    artifact_path: str = Field(default="model", description="Artifact folder of the run.")
    artifacts: dict[str, str] | None = Field(
        default=None, description="Instead of a run: {relative path: sha256} of uploaded blobs."
    )
    signature: list[ColumnSpec] | None = Field(default=None, description="Input columns.")
    metrics: dict[str, MetricNumber | None] | None = Field(
        default=None, description="Evaluation metrics (default: the run's latest metrics)."
    )
    description: str = Field(default="", max_length=10_000, description="Free text.")


class NoteBody(_Body):
    note: str = Field(description="Why (required: it is part of the approval record).")


class ApproveBody(NoteBody):
    override_justification: str | None = Field(
        default=None,
        max_length=10_000,
        description="Approve despite a failed gate: why (needs a role the policy allows).",
    )


class ApprovalBody(_Body):
    status: ApprovalStatus = Field(description="PendingManualApproval, Approved or Rejected.")
    note: str = Field(default="", description="Why.")
    override_justification: str | None = Field(
        default=None, max_length=10_000, description="For Approved: override a failed gate."
    )


class AliasBody(_Body):
    version: PositiveInt64 = Field(description="Version the alias should point at.")


@router.get("", response_model=list[RegisteredModel])
def list_models(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[RegisteredModel]:
    return page(svc.registry.list_models(project), paging, request, response)


@router.post("", response_model=RegisteredModel, status_code=201)
def create_model(project: str, body: ModelCreate, svc: Svc, response: Response) -> RegisteredModel:
    model = svc.registry.create_model(project, body.name, body.description)
    response.headers["Location"] = f"/api/v1/projects/{project}/models/{model.name}"
    return model


@router.get("/{name}", response_model=RegisteredModel)
def get_model(project: str, name: str, svc: Svc) -> RegisteredModel:
    return svc.registry.get_model(project, name)


@router.get("/{name}/versions", response_model=list[ModelVersion])
def list_versions(
    project: str,
    name: str,
    svc: Svc,
    paging: Page,
    request: Request,
    response: Response,
    include_archived: bool = False,
) -> list[ModelVersion]:
    versions = svc.registry.list_versions(project, name, include_archived=include_archived)
    return page(versions, paging, request, response)


@router.post("/{name}/versions", response_model=ModelVersion, status_code=201)
def register(
    project: str, name: str, body: VersionCreate, svc: Svc, response: Response
) -> ModelVersion:
    mv = svc.registry.register(
        project,
        name,
        run_id=body.run_id,
        artifact_path=body.artifact_path,
        artifacts=body.artifacts,
        signature=body.signature,
        metrics=body.metrics,
        description=body.description,
    )
    response.headers["Location"] = f"/api/v1/projects/{project}/models/{name}/versions/{mv.version}"
    return _tagged(response, mv)


@router.get("/{name}/versions/{version}", response_model=ModelVersion)
def get_version(
    project: str, name: str, version: str, svc: Svc, response: Response
) -> ModelVersion:
    """A version by number or by alias (e.g. ``production``), with its ``ETag``."""
    return _tagged(response, svc.registry.get_version(project, name, version))


@router.get("/{name}/versions/{version}/manifest")
def get_manifest(project: str, name: str, version: str, svc: Svc) -> dict[str, Any]:
    mv = svc.registry.get_version(project, name, version)
    return svc.registry.get_manifest(mv)


@router.post("/{name}/versions/{version}/approve", response_model=ModelVersion)
def approve(
    project: str, name: str, version: str, body: ApproveBody, svc: Svc, response: Response
) -> ModelVersion:
    """Approve a version. The model's approval policy is evaluated as a gate first: a failed
    gate answers 409 with one ``details`` entry per failed check, unless
    ``override_justification`` is given by someone whose role the policy allows to override.
    Whoever registered or trained the version cannot approve it (403). Every refusal is
    audited (``model_version.approval_refused``)."""
    mv = ApprovalService(svc.ctx).update_approval(
        project,
        name,
        version,
        ApprovalStatus.APPROVED,
        body.note,
        override_justification=body.override_justification,
    )
    return _tagged(response, mv)


@router.post("/{name}/versions/{version}/reject", response_model=ModelVersion)
def reject(
    project: str, name: str, version: str, body: NoteBody, svc: Svc, response: Response
) -> ModelVersion:
    mv = ApprovalService(svc.ctx).update_approval(
        project, name, version, ApprovalStatus.REJECTED, body.note
    )
    return _tagged(response, mv)


@router.put("/{name}/versions/{version}/approval", response_model=ModelVersion)
def update_approval(
    project: str, name: str, version: str, body: ApprovalBody, svc: Svc, response: Response
) -> ModelVersion:
    """Set the approval status; ``Approved`` goes through the gate like ``/approve``."""
    mv = ApprovalService(svc.ctx).update_approval(
        project,
        name,
        version,
        body.status,
        body.note,
        override_justification=body.override_justification,
    )
    return _tagged(response, mv)


@router.get("/{name}/versions/{version}/approvals", response_model=list[ApprovalRecord])
def approval_history(
    project: str,
    name: str,
    version: str,
    svc: Svc,
    paging: Page,
    request: Request,
    response: Response,
) -> list[ApprovalRecord]:
    return page(svc.registry.approval_history(project, name, version), paging, request, response)


@router.post("/{name}/versions/{version}/archive", response_model=ModelVersion)
def archive(project: str, name: str, version: str, svc: Svc, response: Response) -> ModelVersion:
    return _tagged(response, svc.registry.archive_version(project, name, version))


@router.post("/{name}/versions/{version}/unarchive", response_model=ModelVersion)
def unarchive(project: str, name: str, version: str, svc: Svc, response: Response) -> ModelVersion:
    return _tagged(response, svc.registry.unarchive_version(project, name, version))


@router.delete("/{name}/versions/{version}", status_code=204)
def delete_version(project: str, name: str, version: str, svc: Svc) -> None:
    svc.registry.delete_version(project, name, version)


@router.get("/{name}/aliases/{alias}", response_model=ModelAlias)
def get_alias(project: str, name: str, alias: str, svc: Svc, response: Response) -> ModelAlias:
    """The version an alias points at, with the alias's ``ETag`` (for ``If-Match``)."""
    found = svc.registry.get_alias(project, name, alias)
    response.headers["ETag"] = alias_etag(found.version_id, found.alias)
    return found


@router.put("/{name}/aliases/{alias}", response_model=ModelVersion)
def set_alias(
    project: str,
    name: str,
    alias: str,
    body: AliasBody,
    svc: Svc,
    response: Response,
    if_match: IfMatch = None,
) -> ModelVersion:
    """Point ``alias`` at a version (moves atomically); answers the version, with the alias's
    new ``ETag``. A stale ``If-Match`` is a 412; ``production`` (or the aliases the model's
    policy names) may only point at an Approved version (409)."""
    mv = svc.registry.set_alias(project, name, alias, body.version, if_match=if_match)
    response.headers["ETag"] = alias_etag(mv.id, alias)
    return mv


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(project: str, name: str, alias: str, svc: Svc, if_match: IfMatch = None) -> None:
    """Remove an alias (a stale ``If-Match`` is a 412)."""
    svc.registry.delete_alias(project, name, alias, if_match=if_match)
