"""Signed model packages: download a version as a package, import a verified one.

See ``civicml.oversight.packages`` and docs/security.md ("Signed model packages").
"""

from __future__ import annotations

import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from civicml.core.ids import validate_name
from civicml.oversight.packages import PackageService
from civicml.registry.schemas import ModelVersion
from civicml.server.bodies import upload_body
from civicml.server.deps import Services, services

router = APIRouter(prefix="/api/v1/projects/{project}/models", tags=["models"])
Svc = Annotated[Services, Depends(services)]


@router.get("/{name}/versions/{version}/package")
def export_package(project: str, name: str, version: str, svc: Svc) -> StreamingResponse:
    """The version as a signed package (a tar: files, package.json, signature.json)."""
    spool = tempfile.TemporaryFile(dir=str(svc.ctx.artifacts.scratch_dir))
    try:
        signer = PackageService(svc.ctx).export(project, name, version, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise

    def chunks() -> Any:
        with spool:
            while block := spool.read(1 << 20):
                yield block

    filename = f"{validate_name('Model', name)}-v{version}.tar".replace('"', "")
    return StreamingResponse(
        chunks(),
        media_type="application/x-tar",
        headers={
            "Content-Length": str(size),
            "X-CivicML-Signer": signer,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


@router.post("/import", response_model=ModelVersion, status_code=201)
async def import_package(
    project: str,
    request: Request,
    response: Response,
    svc: Svc,
    name: Annotated[
        str | None, Query(max_length=200, description="Register under this model name.")
    ] = None,
) -> ModelVersion:
    """Verify a package (``application/octet-stream``) against ``trusted_signers`` and every
    file's SHA-256, then register it as a new version, ``PendingManualApproval``."""
    async with upload_body(request) as spool:
        mv = await run_in_threadpool(
            lambda: PackageService(svc.ctx).import_package(project, spool, name=name)
        )
    response.headers["Location"] = (
        f"/api/v1/projects/{project}/models/{mv.name}/versions/{mv.version}"
    )
    return mv
