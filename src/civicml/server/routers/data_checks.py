"""Dataset quality expectations, quality reports, quarantine overrides, personal-data scans,
redactions and the usability check (docs/datasets.md).

Expectations and runs take ``datasets.write``, reading ``datasets.read``; overrides and personal
use justifications ``datasets.override_quarantine`` — each checked in the services. Reports are
served as the other reports are: JSON as stored, HTML with the page's own style only.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from civicml.data.expectation_schemas import Expectation, ExpectationCreate, QualityReport
from civicml.data.personal import PersonalDataService
from civicml.data.pii_schemas import PiiReport, RedactionResult, RedactRequest
from civicml.data.quality import MAX_SAMPLE_ROWS, QualityService
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.server.deps import Services, services
from civicml.server.html import html_response

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/datasets/{name}", tags=["datasets"])
Svc = Annotated[Services, Depends(services)]
Version = Annotated[
    str, Path(min_length=1, max_length=24, description="Version number or 'latest'.")
]
ExpectationName = Annotated[
    str, Path(min_length=1, max_length=128, description="The expectation's name.")
]


class Justification(BaseModel):
    """Why a version may be used anyway (kept in the audit trail)."""

    model_config = ConfigDict(extra="forbid")
    justification: str = Field(min_length=10, max_length=2000, description="Why, in words.")


class Usable(BaseModel):
    """A version training may consume (otherwise the answer is a 409 saying why)."""

    usable: bool = Field(description="Always true in a 200 answer.")
    purpose: str = Field(description="training or pipeline.")


def _version(svc: Services, project: str, name: str, version: str) -> DatasetVersion:
    return DatasetService(svc.ctx).get_version(project, name, version)


@router.get("/expectations", response_model=list[Expectation])
def list_expectations(project: str, name: str, svc: Svc) -> list[Expectation]:
    """The dataset's expectations, by name (`datasets.read`)."""
    return QualityService(svc.ctx).list(project, name)


@router.post("/expectations", response_model=Expectation, status_code=201)
def add_expectation(
    project: str, name: str, body: ExpectationCreate, svc: Svc, response: Response
) -> Expectation:
    """Add an expectation (`datasets.write`); a bad column, pattern or SQL is a 422."""
    found = QualityService(svc.ctx).add(project, name, body)
    response.headers["Location"] = (
        f"/api/v1/projects/{quote(project)}/datasets/{quote(name)}/expectations/"
        f"{quote(found.name, safe='')}"
    )
    return found


@router.delete("/expectations/{expectation}", status_code=204, response_class=Response)
def remove_expectation(project: str, name: str, expectation: ExpectationName, svc: Svc) -> Response:
    """Remove an expectation (`datasets.write`)."""
    QualityService(svc.ctx).remove(project, name, expectation)
    return Response(status_code=204)


@router.post("/versions/{version}/quality", response_model=QualityReport | None)
async def run_quality(
    project: str,
    name: str,
    version: Version,
    svc: Svc,
    sample_rows: Annotated[
        int, Query(ge=0, le=MAX_SAMPLE_ROWS, description="Failing rows kept per expectation.")
    ] = 20,
) -> QualityReport | None:
    """Evaluate the dataset's expectations on the version and store the report
    (`datasets.write`); null when the dataset has none."""

    def work() -> QualityReport | None:
        found = _version(svc, project, name, version)
        return QualityService(svc.ctx).run(found, sample_rows=sample_rows)

    return await run_in_threadpool(work)


@router.get("/versions/{version}/quality", response_model=QualityReport)
def quality_report(project: str, name: str, version: Version, svc: Svc) -> QualityReport:
    """The newest quality report of the version (`datasets.read`)."""
    return QualityService(svc.ctx).report(_version(svc, project, name, version))


@router.get("/versions/{version}/quality/html", response_class=Response)
def quality_html(project: str, name: str, version: Version, svc: Svc) -> Response:
    """The newest quality report as a self-contained HTML page (`datasets.read`)."""
    return html_response(QualityService(svc.ctx).report_html(_version(svc, project, name, version)))


@router.post("/versions/{version}/quarantine/override", response_model=DatasetVersion)
def override_quarantine(
    project: str, name: str, version: Version, body: Justification, svc: Svc
) -> DatasetVersion:
    """Release a quarantined version (`datasets.override_quarantine`)."""
    found = _version(svc, project, name, version)
    return QualityService(svc.ctx).override_quarantine(found, justification=body.justification)


@router.post("/versions/{version}/pii", response_model=PiiReport)
async def scan_pii(project: str, name: str, version: Version, svc: Svc) -> PiiReport:
    """Scan the version for personal data; stores the report and classification
    (`datasets.write`)."""

    def work() -> PiiReport:
        return PersonalDataService(svc.ctx).scan(_version(svc, project, name, version))

    return await run_in_threadpool(work)


@router.get("/versions/{version}/pii", response_model=PiiReport)
def pii_report(project: str, name: str, version: Version, svc: Svc) -> PiiReport:
    """The newest personal-data scan of the version (`datasets.read`)."""
    return PersonalDataService(svc.ctx).report(_version(svc, project, name, version))


@router.get("/versions/{version}/pii/html", response_class=Response)
def pii_html(project: str, name: str, version: Version, svc: Svc) -> Response:
    """The newest personal-data scan as a self-contained HTML page (`datasets.read`)."""
    return html_response(
        PersonalDataService(svc.ctx).report_html(_version(svc, project, name, version))
    )


@router.post("/versions/{version}/personal-use", response_model=DatasetVersion)
def justify_personal_use(
    project: str, name: str, version: Version, body: Justification, svc: Svc
) -> DatasetVersion:
    """Record why a version classified personal may be trained on
    (`datasets.override_quarantine`)."""
    found = _version(svc, project, name, version)
    return PersonalDataService(svc.ctx).justify_personal_use(
        found, justification=body.justification
    )


@router.post("/versions/{version}/redact", response_model=RedactionResult, status_code=201)
async def redact(
    project: str, name: str, version: Version, body: RedactRequest, svc: Svc, response: Response
) -> RedactionResult:
    """Write a redacted successor version with DerivedFrom lineage (`datasets.write`)."""

    def work() -> RedactionResult:
        return PersonalDataService(svc.ctx).redact(_version(svc, project, name, version), body)

    result = await run_in_threadpool(work)
    response.headers["Location"] = (
        f"/api/v1/projects/{quote(project)}/datasets/{quote(result.version.name)}/versions/"
        f"{result.version.version}"
    )
    return result


@router.get("/versions/{version}/usable", response_model=Usable)
def usable(
    project: str,
    name: str,
    version: Version,
    svc: Svc,
    purpose: Annotated[
        str, Query(pattern="^(training|pipeline)$", description="training or pipeline.")
    ] = "training",
) -> Usable:
    """200 when training may consume the version; 409 saying why not (`datasets.read`)."""
    datasets = DatasetService(svc.ctx)
    datasets.check_usable(datasets.get_version(project, name, version), purpose=purpose)
    return Usable(usable=True, purpose=purpose)
