"""Datasets: ingest versions (raw upload), list them, read their schema, profile and Parquet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from civicml.data.schemas import Dataset, DatasetVersion
from civicml.data.service import DatasetService
from civicml.server.bodies import upload_body
from civicml.server.deps import Services, services
from civicml.server.paging import Page, page

router = APIRouter(prefix="/api/v1/projects/{project}/datasets", tags=["datasets"])
Svc = Annotated[Services, Depends(services)]


def _datasets(svc: Services) -> DatasetService:
    return DatasetService(svc.ctx)


@router.get("", response_model=list[Dataset])
def list_datasets(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[Dataset]:
    return page(_datasets(svc).list_datasets(project), paging, request, response)


@router.get("/{name}", response_model=Dataset)
def get_dataset(project: str, name: str, svc: Svc) -> Dataset:
    return _datasets(svc).get_dataset(project, name)


@router.get("/{name}/versions", response_model=list[DatasetVersion])
def list_versions(
    project: str, name: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[DatasetVersion]:
    return page(_datasets(svc).list_versions(project, name), paging, request, response)


@router.post("/{name}/versions", response_model=DatasetVersion, status_code=201)
async def ingest(
    project: str,
    name: str,
    request: Request,
    svc: Svc,
    response: Response,
    format: Annotated[
        str | None, Query(description="Format of the uploaded bytes: csv, parquet or jsonl.")
    ] = None,
    encoding: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Text encoding of CSV bytes, e.g. 'utf-8', 'cp1252', 'utf-16' "
            "(default: detected).",
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        Query(
            max_length=8,
            description="Field delimiter of CSV bytes: ',', ';', '|' or a tab (default: detected).",
        ),
    ] = None,
    description: Annotated[str, Query(max_length=10_000, description="Free text.")] = "",
) -> DatasetVersion:
    """Upload raw bytes (``application/octet-stream``) as a new version of dataset ``name``.

    Identical content answers with the existing version (the same id and number). CSV bytes are
    decoded with ``encoding`` and split with ``delimiter``, each detected when not given; the
    version's ``read_options`` say which were used. Bytes that are not text, or not valid in the
    encoding, are a 422 naming the line.
    """
    async with upload_body(request) as spool:  # streamed to disk, bounded by the guard
        version = await run_in_threadpool(
            lambda: _datasets(svc).ingest(
                project,
                name,
                spool,
                format=format,
                encoding=encoding,
                delimiter=delimiter,
                description=description,
                progress=False,
            )
        )
    response.headers["Location"] = (
        f"/api/v1/projects/{project}/datasets/{name}/versions/{version.version}"
    )
    return version


@router.get("/{name}/versions/{version}", response_model=DatasetVersion)
def get_version(project: str, name: str, version: str, svc: Svc) -> DatasetVersion:
    """A version (by number or ``latest``) with its schema, profile and schema changes."""
    return _datasets(svc).get_version(project, name, version)


@router.get("/{name}/versions/{version}/data")
def download(project: str, name: str, version: str, svc: Svc) -> StreamingResponse:
    """The version's Parquet file, verified against its SHA-256 before the first byte is sent."""
    datasets = _datasets(svc)
    found = datasets.get_version(project, name, version)
    handle = datasets.open(found)

    def chunks() -> Any:
        with handle:
            while block := handle.read(1 << 20):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/vnd.apache.parquet",
        headers={
            "ETag": f'"sha256:{found.digest}"',
            "Content-Length": str(found.size),
            "X-Content-SHA256": found.digest,
            "Content-Disposition": f'attachment; filename="{found.name}-v{found.version}.parquet"',
        },
    )
