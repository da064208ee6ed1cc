"""Real-time endpoints: deploy, list, show, switch version, delete, and invocations.

Management lives under ``/api/v1/projects/{project}/endpoints`` like every other resource. An
invocation is ``POST /api/v1/projects/{project}/endpoints/{name}/invocations`` (the canonical,
project-scoped route) or ``POST /endpoints/{name}/invocations?project=...`` (the short path of
issue 3 and SageMaker's ``/invocations`` contract; ``project`` defaults to ``default``). Both take
``{"records": [{...}, ...]}``, a list of records or one record object and answer
``{"predictions", "probabilities", "classes", "model_version", "inference_ids"}``.
"""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.errors import InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.server.deps import AppState, services
from civicml.serving.capture import CaptureService
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import EndpointInfo, InvocationResult
from civicml.serving.service import EndpointService

router = APIRouter(prefix="/api/v1/projects/{project}/endpoints", tags=["endpoints"])
invocations_router = APIRouter(tags=["endpoints"])
_HOST_LOCK = threading.Lock()

_INVOCATION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {
                                "records": {"type": "array", "items": {"type": "object"}}
                            },
                            "required": ["records"],
                        },
                        {"type": "array", "items": {"type": "object"}},
                        {"type": "object", "description": "One record."},
                    ]
                },
                "example": {"records": [{"age": 41, "income": 1520.5, "region": "north"}]},
            }
        },
    }
}


def model_host(request: Request) -> ModelHost:
    """The app's model host (``app.state.serving``), created on first use when not wired."""
    app_state = request.app.state
    host: ModelHost | None = getattr(app_state, "serving", None)
    if host is None:
        with _HOST_LOCK:
            host = getattr(app_state, "serving", None)
            if host is None:
                state: AppState = app_state.civicml
                host = ModelHost(state.ctx)
                app_state.serving = host
    return host


def endpoint_service(request: Request) -> EndpointService:
    """The endpoint service acting for the caller, on the app's model host."""
    return EndpointService(services(request).ctx, model_host(request))


Svc = Annotated[EndpointService, Depends(endpoint_service)]
Host = Annotated[ModelHost, Depends(model_host)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeployBody(_Body):
    name: str = Field(description="Endpoint name, e.g. 'eligibility'.")
    model: str = Field(description="Registered model name.")
    version: int | str = Field(description="Version number or alias of an Approved version.")
    capture_percent: float = Field(
        default=100.0, ge=0, le=100, description="Share of requests captured, 0-100."
    )
    capture: bool = Field(default=True, description="Whether data capture is on.")


class UpdateBody(_Body):
    version: int | str | None = Field(
        default=None, description="Approved version to serve (number or alias); none: keep."
    )
    model: str | None = Field(default=None, description="Another registered model to serve.")
    capture_percent: float | None = Field(
        default=None, ge=0, le=100, description="New share of requests captured, 0-100."
    )
    capture: bool | None = Field(default=None, description="Turn data capture on or off.")


@router.post("", response_model=EndpointInfo, status_code=201)
def deploy(project: str, body: DeployBody, svc: Svc, response: Response) -> EndpointInfo:
    info = svc.deploy(
        project,
        body.name,
        body.model,
        body.version,
        capture_percent=body.capture_percent,
        capture=body.capture,
    )
    response.headers["Location"] = f"/api/v1/projects/{project}/endpoints/{info.name}"
    return info


@router.get("", response_model=list[EndpointInfo])
def list_endpoints(project: str, svc: Svc) -> list[EndpointInfo]:
    return svc.list(project)


@router.get("/{name}", response_model=EndpointInfo)
def get_endpoint(project: str, name: str, svc: Svc) -> EndpointInfo:
    return svc.get(project, name)


@router.put("/{name}", response_model=EndpointInfo)
def update_endpoint(project: str, name: str, body: UpdateBody, svc: Svc) -> EndpointInfo:
    """Switch to another approved version (loaded before the switch) or change capture."""
    return svc.update(
        project,
        name,
        body.version,
        model_name=body.model,
        capture_percent=body.capture_percent,
        capture=body.capture,
    )


@router.delete("/{name}", status_code=204)
def delete_endpoint(project: str, name: str, svc: Svc) -> None:
    svc.delete(project, name)


@router.post(
    "/{name}/invocations",
    response_model=InvocationResult,
    openapi_extra=_INVOCATION_BODY,
)
async def invoke(project: str, name: str, request: Request, host: Host) -> Response:
    """Predict for one or many records (validated against the model's signature)."""
    return await _invoke(host, project, name, request)


@invocations_router.post(
    "/endpoints/{name}/invocations",
    response_model=InvocationResult,
    openapi_extra=_INVOCATION_BODY,
)
async def invoke_short(
    name: str, request: Request, host: Host, project: str = "default"
) -> Response:
    """The same as ``/api/v1/projects/{project}/endpoints/{name}/invocations``."""
    return await _invoke(host, project, name, request)


async def _invoke(host: ModelHost, project: str, name: str, request: Request) -> Response:
    records = parse_records(await request.body())
    result = await run_in_threadpool(host.invoke, project, name, records)
    return Response(json.dumps(result, separators=(",", ":")), media_type="application/json")


def parse_records(body: bytes) -> Any:
    """The records of an invocation body: ``{"records": [...]}``, ``[...]`` or one ``{...}``."""
    try:
        value = json.loads(body)
    except ValueError as err:
        raise InvalidInputError(
            f"The request body is not valid JSON: {err}.",
            hint='Send {"records": [{"column": value, ...}]}.',
        ) from err
    if isinstance(value, dict) and set(value) == {"records"}:
        value = value["records"]
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        return value
    raise InvalidInputError(
        "The request body must hold records: objects mapping column names to values.",
        hint='Send {"records": [{"column": value, ...}]} or one record {"column": value}.',
    )


class CaptureDatasetBody(_Body):
    dataset: str | None = Field(
        default=None, description="Dataset to add the version to (default '<endpoint>-capture')."
    )


@router.post("/{name}/capture/dataset", response_model=DatasetVersion, status_code=201)
def capture_to_dataset(
    project: str, name: str, body: CaptureDatasetBody, request: Request, host: Host
) -> DatasetVersion:
    """Store the endpoint's captured inputs and predictions as a dataset version (for drift)."""
    capture = CaptureService(services(request).ctx, host.capture)
    return capture.to_dataset(project, name, name=body.dataset)
