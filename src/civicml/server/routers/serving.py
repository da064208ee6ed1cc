"""Real-time endpoints: deploy, list, show, switch version, delete, and invocations.

Management lives under ``/api/v1/projects/{project}/endpoints`` like every other resource. An
invocation is ``POST /api/v1/projects/{project}/endpoints/{name}/invocations`` (the canonical,
project-scoped route) or ``POST /endpoints/{name}/invocations?project=...`` (the short path of
issue 3 and SageMaker's ``/invocations`` contract; ``project`` defaults to ``default``). Both take
``{"records": [{...}, ...]}``, a list of records or one record object and answer
``{"predictions", "probabilities", "classes", "model_version", "inference_ids"}``, plus
``"explanations"`` with ``?explain=true``.

Invocations are the hot path, so :class:`InvocationsLane`, a plain ASGI layer that
``create_app`` mounts inside the request guard, answers them before FastAPI's routing and
dependency injection (about half of the per-request cost of a one-row prediction otherwise). The
FastAPI routes below describe the same contract in OpenAPI and answer it where the lane is not
mounted; both go through :func:`answer`, so the behaviour is one.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import threading
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from civicml.core import jsonsafe
from civicml.core.errors import CivicMLError, InvalidInputError
from civicml.core.identity import Principal
from civicml.core.types import Float, PositiveInt64, StrictBool
from civicml.data.schemas import DatasetVersion
from civicml.server.deps import AppState, principal_for_request, services
from civicml.server.errors import error_headers
from civicml.server.paging import Page, page
from civicml.serving.capture import CaptureService
from civicml.serving.runtime import ModelHost
from civicml.serving.schemas import EndpointInfo, InvocationResult
from civicml.serving.service import EndpointService

log = logging.getLogger("civicml.server")
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
    return _host_of(request.app)


def _host_of(app: Any) -> ModelHost:
    app_state = app.state
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
    version: PositiveInt64 | str = Field(
        description="Version number or alias of an Approved version."
    )
    capture_percent: Float = Field(
        default=100.0, ge=0, le=100, description="Share of requests captured, 0-100."
    )
    capture: StrictBool = Field(default=True, description="Whether data capture is on.")


class UpdateBody(_Body):
    version: PositiveInt64 | str | None = Field(
        default=None, description="Approved version to serve (number or alias); none: keep."
    )
    model: str | None = Field(default=None, description="Another registered model to serve.")
    capture_percent: Float | None = Field(
        default=None, ge=0, le=100, description="New share of requests captured, 0-100."
    )
    capture: StrictBool | None = Field(default=None, description="Turn data capture on or off.")


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
def list_endpoints(
    project: str, svc: Svc, paging: Page, request: Request, response: Response
) -> list[EndpointInfo]:
    return page(svc.list(project), paging, request, response)


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


ExplainQuery = Annotated[
    bool,
    Query(
        description="Also answer `explanations`: per record, SHAP attributions in the model's "
        "raw input columns (see the route description)."
    ),
]


@router.post("/{name}/invocations", response_model=InvocationResult, openapi_extra=_INVOCATION_BODY)
async def invoke(
    project: str, name: str, request: Request, host: Host, explain: ExplainQuery = False
) -> Response:
    """Predict for one or many records (validated against the model's signature).

    With `?explain=true` the answer also holds `explanations`, one per record, each a
    `LocalExplanation` (as `civicml.evaluation.explain_local` returns it): `explainer` ("tree"
    or "linear"), `output_space` ("margin": log-odds for logistic regression and LightGBM
    classifiers; "probability" for random forests; "value" for regression), `prediction`,
    `values` (the record as the model read it) and `outputs`, one per explained output — the
    positive class of a binary classifier, every class of a multiclass one, the value of a
    regression — each `{"label", "base_value", "output", "attributions": {column: value}}` with
    `base_value + sum(attributions) == output`. Tree models are explained against their
    training distribution; linear models against a typical record (training medians, most
    frequent categories), so a missing number contributes nothing. Explained requests are
    validated and captured like any other; `explain` other than true/false is a 422.
    """
    body = await answer(
        host, project, name, await request.body(), explain=explain, caller=_caller(request)
    )
    return Response(body, media_type="application/json")


@invocations_router.post(
    "/endpoints/{name}/invocations",
    response_model=InvocationResult,
    openapi_extra=_INVOCATION_BODY,
    description="The same as `/api/v1/projects/{project}/endpoints/{name}/invocations` "
    "(`project` defaults to `default`):\n\n" + inspect.cleandoc(invoke.__doc__ or ""),
)
async def invoke_short(
    name: str,
    request: Request,
    host: Host,
    project: str = "default",
    explain: ExplainQuery = False,
) -> Response:
    """The same as ``/api/v1/projects/{project}/endpoints/{name}/invocations``."""
    body = await answer(
        host, project, name, await request.body(), explain=explain, caller=_caller(request)
    )
    return Response(body, media_type="application/json")


#: Bodies up to this size are parsed on the event loop; larger ones in a worker thread.
INLINE_BODY_BYTES = 64 << 10
_JSON = json.JSONEncoder(separators=(",", ":")).encode  # built once, not per json.dumps call


async def answer(
    host: ModelHost,
    project: str,
    name: str,
    body: bytes,
    *,
    explain: bool,
    caller: Principal | None = None,
) -> bytes:
    """The JSON answer of one invocation.

    Small requests to a model with an inline fast path are answered on the event loop
    (:meth:`ModelHost.invoke_nowait`); everything else — other models, big bodies, explanations,
    input the fast path does not take — in a worker thread. ``caller`` (the request's
    principal) is recorded in captured records.

    Raises:
        CivicMLError: Whatever :meth:`ModelHost.invoke` raises (bad input, unknown endpoint,
            a model answering a non-finite value).
    """
    if len(body) <= INLINE_BODY_BYTES:
        records = parse_records(body)
        result = None if explain else host.invoke_nowait(project, name, records, caller=caller)
        if result is None:
            call = functools.partial(
                host.invoke, project, name, records, explain=explain, caller=caller
            )
            result = await run_in_threadpool(call)
    else:
        call = functools.partial(_parse_and_invoke, host, project, name, body, explain, caller)
        result = await run_in_threadpool(call)
    return _JSON(result).encode()


def _parse_and_invoke(
    host: ModelHost, project: str, name: str, body: bytes, explain: bool, caller: Principal | None
) -> Any:
    return host.invoke(project, name, parse_records(body), explain=explain, caller=caller)


def _caller(request: Request) -> Principal:
    """The request's principal (checked for ``endpoints.invoke``; captured records name it)."""
    state: AppState = request.app.state.civicml
    return principal_for_request(request, state.ctx.principal)


def parse_records(body: bytes) -> Any:
    """The records of an invocation body: ``{"records": [...]}``, ``[...]`` or one ``{...}``.

    Parsed strictly (:func:`civicml.core.jsonsafe.loads`): not JSON, a duplicate key or nesting
    deeper than 64 levels is a 400. Bare ``NaN``/``Infinity`` parse here; the model host refuses
    them naming the column and record.
    """
    value = jsonsafe.loads(body, allow_nan=True, what="invocation body")
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
    metadata: bool = Field(
        default=False,
        description="Add inference_id, inference_time, model_version and caller columns.",
    )


@router.post("/{name}/capture/dataset", response_model=DatasetVersion, status_code=201)
def capture_to_dataset(
    project: str, name: str, body: CaptureDatasetBody, request: Request, host: Host
) -> DatasetVersion:
    """Store the endpoint's captured inputs and predictions as a dataset version (for drift)."""
    capture = CaptureService(services(request).ctx, host.capture)
    return capture.to_dataset(project, name, name=body.dataset, metadata=body.metadata)


_SHORT = re.compile(r"/endpoints/([^/]+)/invocations")
_LONG = re.compile(r"/api/v1/projects/([^/]+)/endpoints/([^/]+)/invocations")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class InvocationsLane:
    """ASGI middleware: answers ``POST`` invocations without FastAPI's routing.

    Mounted by ``create_app`` inside :class:`~civicml.server.guard.GuardMiddleware`, so the Host
    allowlist, the JSON-only rule, the cross-site refusal and the security headers apply as to
    any route. It reads the body, calls :func:`answer` and writes the JSON; a
    :class:`~civicml.core.errors.CivicMLError` becomes the one error body with its status, and
    anything else propagates to the app's last-resort handler (a 500). Every other request
    passes through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        project, name, query = target
        await self._invoke(scope, receive, send, project, name, query)

    async def _invoke(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        project: str,
        name: str,
        query: dict[str, list[str]],
    ) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            explain = parse_explain(query.get("explain"))
            body = await answer(
                _host_of(scope["app"]),
                project,
                name,
                b"".join(chunks),
                explain=explain,
                caller=_caller(Request(scope)),
            )
            status = 200
        except CivicMLError as err:  # as the app's CivicMLError handler answers it
            if err.status >= 500:
                log.error("%s: %s", type(err).__name__, err.message)
            body, status = json.dumps(err.to_body()).encode(), err.status
            extra = [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
        else:
            extra = []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def invocation_target(scope: Scope) -> tuple[str, str] | None:
    """(project, endpoint) of an invocation request, else None (for server/auth.py's scope
    check, which runs before this lane and the routes)."""
    target = _target(scope) if scope["type"] == "http" else None
    return None if target is None else (target[0], target[1])


def _target(scope: Scope) -> tuple[str, str, dict[str, list[str]]] | None:
    """(project, endpoint, query) of an invocation request, else None."""
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.endswith("/invocations"):
        return None
    query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    short = _SHORT.fullmatch(path)
    if short is not None:
        return query.get("project", ["default"])[-1], short.group(1), query
    long = _LONG.fullmatch(path)
    if long is not None:
        return long.group(1), long.group(2), query
    return None


def parse_explain(values: list[str] | None) -> bool:
    """The ``explain`` query parameter as a bool (absent: False).

    Raises:
        InvalidInputError: It is not one of true/false, 1/0, yes/no, on/off.
    """
    if not values:
        return False
    value = values[-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInputError(
        f"Query parameter 'explain' must be true or false, not {values[-1]!r}.",
        hint="Add ?explain=true to get SHAP attributions with the predictions.",
        details=[{"loc": ["query", "explain"], "problem": "not a boolean"}],
    )
