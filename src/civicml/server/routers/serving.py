"""Real-time endpoints: deploy, list, show, switch version, delete, and invocations.

Management lives under ``/api/v1/projects/{project}/endpoints`` like every other resource. An
invocation is ``POST /api/v1/projects/{project}/endpoints/{name}/invocations`` (the canonical,
project-scoped route) or ``POST /endpoints/{name}/invocations?project=...`` (the short path of
issue 3 and SageMaker's ``/invocations`` contract; ``project`` defaults to ``default``). Both take
``{"records": [{...}, ...]}``, a list of records or one record object and answer
``{"predictions", "probabilities", "classes", "model_version", "inference_ids"}``, plus
``"explanations"`` with ``?explain=true``. The header ``civicml-variant: NAME`` (or Azure's
``azureml-model-deployment``) pins the request to one variant; every answer names its variant
in the ``civicml-variant`` response header and the body's ``variant``.

A multi-model endpoint (``mode: "multi-model"``) takes the header ``X-Civicml-Target-Model:
MODEL[/VERSION]``, or the model in the path: ``…/endpoints/{name}/models/{model}/invocations``
(``?version=N`` for another than the newest it holds); the answer names the model in the
``x-civicml-target-model`` response header and the body's ``target_model``. Its models are
listed, added and removed under ``…/endpoints/{name}/models`` without a redeploy.

Variants, the shadow, guarded rollouts and shadow comparison reports live under the endpoint:
``…/variants``, ``…/traffic``, ``…/shadow``, ``…/rollout(s)`` and ``…/shadow/reports``
(docs/serving.md).

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
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from civicml.core import jsonsafe
from civicml.core.errors import BadRequestError, CivicMLError, InvalidInputError
from civicml.core.identity import Principal
from civicml.core.jsonsafe import compact_dumps
from civicml.core.types import Float, PositiveInt64, StrictBool
from civicml.data.schemas import DatasetVersion
from civicml.server.deps import (
    USER_HEADER,
    AppState,
    Services,
    principal_for_request,
    services,
)
from civicml.server.errors import error_headers
from civicml.server.html import html_response
from civicml.server.lanes import read_body, send_json
from civicml.server.paging import Page, page
from civicml.serving.capture import CaptureService
from civicml.serving.multi_route import MAX_TARGET, TARGET_HEADER
from civicml.serving.multimodel import MAX_CACHE_MB, MAX_MODELS, MultiModelService
from civicml.serving.rollout import RolloutService
from civicml.serving.runtime import Invocation, ModelHost
from civicml.serving.schemas import (
    EndpointInfo,
    EndpointMode,
    EndpointModel,
    InvocationResult,
    RolloutInfo,
    RolloutStrategy,
    VariantInfo,
)
from civicml.serving.service import EndpointService
from civicml.serving.shadow_reports import ShadowReport, ShadowReportService
from civicml.serving.variants import VariantService

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
    return model_host_of(request.app)


def model_host_of(app: Any) -> ModelHost:
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


Caller = Annotated[Services, Depends(services)]
Host = Annotated[ModelHost, Depends(model_host)]


def endpoint_service(caller: Caller, host: Host) -> EndpointService:
    """The endpoint service acting for the caller, on the app's model host."""
    return EndpointService(caller.ctx, host)


Svc = Annotated[EndpointService, Depends(endpoint_service)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRefBody(_Body):
    model: str = Field(max_length=128, description="Registered model name.")
    version: PositiveInt64 | str = Field(
        description="Version number or alias of an Approved version (resolved now)."
    )


class DeployBody(_Body):
    name: str = Field(description="Endpoint name, e.g. 'eligibility'.")
    model: str = Field(description="Registered model name.")
    version: PositiveInt64 | str = Field(
        description="Version number or alias of an Approved version."
    )
    mode: EndpointMode = Field(
        default=EndpointMode.SINGLE_MODEL,
        description="'single-model' (variants answer) or 'multi-model' (each request names "
        "its model: X-Civicml-Target-Model: MODEL[/VERSION]).",
    )
    models: list[ModelRefBody] = Field(
        default_factory=list,
        max_length=MAX_MODELS,
        description="A multi-model endpoint's further models (besides model/version).",
    )
    model_cache_mb: Float | None = Field(
        default=None,
        gt=0,
        le=MAX_CACHE_MB,
        description="A multi-model endpoint's cache limit in MB (default: the server's "
        "serving_model_cache_mb).",
    )
    capture_percent: Float = Field(
        default=100.0, ge=0, le=100, description="Share of requests captured, 0-100."
    )
    capture: StrictBool = Field(default=True, description="Whether data capture is on.")
    variant: str | None = Field(
        default=None, max_length=128, description="Name of its one variant (default 'v<N>')."
    )


class UpdateBody(_Body):
    version: PositiveInt64 | str | None = Field(
        default=None, description="Approved version to serve (number or alias); none: keep."
    )
    model: str | None = Field(default=None, description="Another registered model to serve.")
    capture_percent: Float | None = Field(
        default=None, ge=0, le=100, description="New share of requests captured, 0-100."
    )
    capture: StrictBool | None = Field(default=None, description="Turn data capture on or off.")
    strategy: RolloutStrategy | None = Field(
        default=None,
        description="A guarded update: 'all_at_once', 'canary' or 'linear' (each step baked, "
        "automatic rollback on an alarm); none: switch at once.",
    )
    canary_percent: Float | None = Field(
        default=None, gt=0, lt=100, description="Canary size in percent (default 10)."
    )
    linear_steps: PositiveInt64 | None = Field(
        default=None, ge=2, le=20, description="Equal steps of a linear rollout (default 4)."
    )
    bake_s: Float | None = Field(
        default=None,
        ge=0,
        le=30 * 86_400,
        description="Seconds each step is watched for alarms (default 600).",
    )
    alarms: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Alarms on the new variant, e.g. ['p99_ms>50', 'error_rate>0.01', "
        "'5xx_rate>0', 'monitor:income-drift'].",
    )
    variant: str | None = Field(
        default=None, max_length=128, description="Name of the variant of the new version."
    )
    model_cache_mb: Float | None = Field(
        default=None,
        gt=0,
        le=MAX_CACHE_MB,
        description="A multi-model endpoint's new cache limit in MB (applied at once: the "
        "least recently used models are unloaded beyond a smaller one).",
    )


@router.post("", response_model=EndpointInfo, status_code=201)
def deploy(project: str, body: DeployBody, svc: Svc, response: Response) -> EndpointInfo:
    info = svc.deploy(
        project,
        body.name,
        body.model,
        body.version,
        capture_percent=body.capture_percent,
        capture=body.capture,
        variant=body.variant,
        mode=body.mode,
        models=[(m.model, m.version) for m in body.models],
        model_cache_mb=body.model_cache_mb,
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
    """Switch to another approved version (loaded before the switch) or change capture; with a
    `strategy`, start a guarded rollout (answered in `rollout`)."""
    return svc.update(
        project,
        name,
        body.version,
        model_name=body.model,
        capture_percent=body.capture_percent,
        capture=body.capture,
        strategy=body.strategy,
        canary_percent=body.canary_percent,
        linear_steps=body.linear_steps,
        bake_s=body.bake_s,
        alarms=body.alarms,
        variant=body.variant,
        model_cache_mb=body.model_cache_mb,
    )


@router.delete("/{name}", status_code=204)
def delete_endpoint(project: str, name: str, svc: Svc) -> None:
    svc.delete(project, name)


VariantQuery = Annotated[
    str | None,
    Query(
        max_length=128,
        description="Pin the request to this variant (as the civicml-variant header does; "
        "the header wins when both are given).",
    ),
]
ExplainQuery = Annotated[
    bool,
    Query(
        description="Also answer `explanations`: per record, SHAP attributions in the model's "
        "raw input columns (see the route description)."
    ),
]
TargetHeader = Annotated[
    str | None,
    Header(
        alias=TARGET_HEADER,
        description="A multi-model endpoint: the model to answer, MODEL or MODEL/VERSION "
        f"(at most {MAX_TARGET} characters; letters, digits, '.', '_', '-').",
    ),
]


@router.post("/{name}/invocations", response_model=InvocationResult, openapi_extra=_INVOCATION_BODY)
async def invoke(
    project: str,
    name: str,
    request: Request,
    host: Host,
    explain: ExplainQuery = False,
    variant: VariantQuery = None,
    target: TargetHeader = None,
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

    A multi-model endpoint answers with the model the `X-Civicml-Target-Model` header names
    (`MODEL` or `MODEL/VERSION`; a missing or malformed one is a 400, an unknown one a 404),
    loaded on first use; the `x-civicml-target-model` response header and `target_model` name it.
    """
    return await _respond(request, host, project, name, explain, variant, target)


async def _respond(
    request: Request,
    host: ModelHost,
    project: str,
    name: str,
    explain: bool,
    variant: str | None,
    target: str | None,
) -> Response:
    body, answered, model = await answer(
        host,
        project,
        name,
        await request.body(),
        explain=explain,
        caller=_caller(request),
        variant=pinned_variant(
            request.headers.get(VARIANT_HEADER), request.headers.get(AZURE), variant
        ),
        target=target,
    )
    headers = {VARIANT_HEADER: answered}
    if model is not None:
        headers[TARGET_HEADER] = model
    return Response(body, media_type="application/json", headers=headers)


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
    variant: VariantQuery = None,
    target: TargetHeader = None,
) -> Response:
    """The same as ``/api/v1/projects/{project}/endpoints/{name}/invocations``."""
    return await _respond(request, host, project, name, explain, variant, target)


ModelPath = Annotated[
    str,
    PathParam(min_length=1, max_length=128, description="The model to answer, e.g. 'eligibility'."),
]
ModelVersionQuery = Annotated[
    str | None,
    Query(
        max_length=128,
        description="Its version (a number or the alias it was added by); default: the newest "
        "the endpoint holds.",
    ),
]


@router.post(
    "/{name}/models/{model}/invocations",
    response_model=InvocationResult,
    openapi_extra=_INVOCATION_BODY,
)
async def invoke_model(
    project: str,
    name: str,
    model: ModelPath,
    request: Request,
    host: Host,
    explain: ExplainQuery = False,
    version: ModelVersionQuery = None,
    target: TargetHeader = None,
) -> Response:
    """A multi-model endpoint's invocation with the model in the path (as the
    `X-Civicml-Target-Model` header names it; both given must agree)."""
    chosen = path_target(model, version, target)
    return await _respond(request, host, project, name, explain, None, chosen)


@invocations_router.post(
    "/endpoints/{name}/models/{model}/invocations",
    response_model=InvocationResult,
    openapi_extra=_INVOCATION_BODY,
    description="The same as `/api/v1/projects/{project}/endpoints/{name}/models/{model}/"
    "invocations` (`project` defaults to `default`).",
)
async def invoke_model_short(
    name: str,
    model: ModelPath,
    request: Request,
    host: Host,
    project: str = "default",
    explain: ExplainQuery = False,
    version: ModelVersionQuery = None,
    target: TargetHeader = None,
) -> Response:
    """The same as ``/api/v1/projects/{project}/endpoints/{name}/models/{model}/invocations``."""
    chosen = path_target(model, version, target)
    return await _respond(request, host, project, name, explain, None, chosen)


def path_target(model: str, version: str | None, header: str | None) -> str:
    """The target of a request naming its model in the path (and ``?version=``).

    Raises:
        BadRequestError: The ``X-Civicml-Target-Model`` header names another model.
    """
    target = model if not version else f"{model}/{version}"
    if header is not None and header.strip() and header.strip().lower() != target.lower():
        raise BadRequestError(
            f"The path names model {target[:MAX_TARGET]!r} and the {TARGET_HEADER} header "
            "another one.",
            hint="Name the model once: in the path or in the header.",
            details=[{"header": TARGET_HEADER, "problem": "disagrees with the path"}],
        )
    return target


#: Bodies up to this size are parsed on the event loop; larger ones in a worker thread.
INLINE_BODY_BYTES = 64 << 10
_JSON = json.JSONEncoder(separators=(",", ":")).encode  # built once, not per json.dumps call
#: The request header that pins a variant, and the response header that names it.
VARIANT_HEADER = "civicml-variant"
#: Azure ML's name for the same request header (a deployment of an online endpoint).
AZURE = "azureml-model-deployment"
_VARIANT_KEYS = (VARIANT_HEADER.encode(), AZURE.encode())


def pinned_variant(*values: str | None) -> str | None:
    """The variant a request pins: the first non-empty value (header ``civicml-variant``, then
    ``azureml-model-deployment``, then the ``variant`` query parameter), stripped; None when
    none is given."""
    for value in values:
        if value is not None and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class Parsed:
    """The records of an invocation body, parsed by :func:`answer_now` for a worker thread."""

    records: Any


Answer = tuple[bytes, str, str | None]


def answer_now(
    host: ModelHost,
    project: str,
    name: str,
    body: bytes,
    *,
    explain: bool,
    caller: Principal | None = None,
    variant: str | None = None,
    target: str | None = None,
) -> Answer | Parsed | None:
    """:func:`answer`'s part that never waits: the answer when the model host gives it on
    the calling thread (:meth:`ModelHost.invoke_nowait`: a small request to a model with an
    inline fast path); else the body's records (:class:`Parsed`) when this parsed them, or
    None (explanations and big bodies are parsed in the worker thread). Nothing is predicted,
    counted or captured unless it answers.

    Raises:
        CivicMLError: As :func:`answer`.
    """
    if explain or len(body) > INLINE_BODY_BYTES:
        return None
    if target is not None and not target.strip():
        target = None  # an empty header names nothing
    records = parse_records(body)
    result = host.invoke_nowait(
        project, name, records, caller=caller, variant=variant, target=target, body=body
    )
    if result is None:
        return Parsed(records)
    return _answer_json(result), result["variant"], result.get("target_model")


async def answer(
    host: ModelHost,
    project: str,
    name: str,
    body: bytes,
    *,
    explain: bool,
    caller: Principal | None = None,
    variant: str | None = None,
    target: str | None = None,
    parsed: Parsed | None = None,
) -> Answer:
    """The JSON answer of one invocation, the variant that gave it and (a multi-model
    endpoint) the target model that answered.

    Small requests to a model with an inline fast path are answered on the event loop
    (:func:`answer_now`); everything else — other models, big bodies, explanations, input the
    fast path does not take — in a worker thread. ``caller`` (the request's principal) is
    recorded in captured records; ``variant`` pins the request to a variant; ``target``
    names the model of a multi-model endpoint; ``parsed``: what :func:`answer_now` gave for
    this body already (the direct lane asked it first).

    Raises:
        CivicMLError: Whatever :meth:`ModelHost.invoke` raises (bad input, unknown endpoint
            or variant, a model answering a non-finite value).
    """
    if target is not None and not target.strip():
        target = None  # an empty header names nothing
    now: Answer | Parsed | None = parsed
    if now is None:
        now = answer_now(
            host, project, name, body, explain=explain, caller=caller, variant=variant,
            target=target,
        )  # fmt: skip
    if isinstance(now, tuple):
        return now
    if now is not None:
        call = functools.partial(
            host.invoke,
            project,
            name,
            now.records,
            explain=explain,
            caller=caller,
            variant=variant,
            target=target,
        )
    else:
        call = functools.partial(
            _parse_and_invoke, host, project, name, body, explain, caller, variant, target
        )
    result: Invocation = await run_in_threadpool(call)
    if result is None:  # pragma: no cover - invoke always answers
        raise RuntimeError("the model host gave no answer")
    return _answer_json(result), result["variant"], result.get("target_model")


_PLAIN_ANSWER = ("predictions", "probabilities", "classes", "model_version", "variant",
                 "inference_ids")  # fmt: skip
_ANSWER_PARTS: dict[tuple[Any, ...], str] = {}


def _answer_json(result: Invocation) -> bytes:
    """``_JSON(result)``, byte for byte; for a plain answer the part every answer of one model
    version and variant shares (classes, version, variant) is encoded once (a small cache), and
    the rest by :func:`~civicml.core.jsonsafe.compact_dumps` (the host has refused non-finite
    outputs already, so its strictness never refuses an answer)."""
    if tuple(result) != _PLAIN_ANSWER:
        return _JSON(result).encode()
    classes = result["classes"]
    key = (None if classes is None else tuple(classes), result["model_version"], result["variant"])
    shared = _ANSWER_PARTS.get(key)
    if shared is None:
        encoded = _JSON(
            {
                "classes": classes,
                "model_version": result["model_version"],
                "variant": result["variant"],
            }
        )
        shared = "," + encoded[1:-1]
        if len(_ANSWER_PARTS) >= 256:
            _ANSWER_PARTS.clear()
        _ANSWER_PARTS[key] = shared
    return "".join(
        ('{"predictions":', compact_dumps(result["predictions"]), ',"probabilities":',
         compact_dumps(result["probabilities"]), shared, ',"inference_ids":',
         compact_dumps(result["inference_ids"]), "}")
    ).encode()  # fmt: skip


def _parse_and_invoke(
    host: ModelHost,
    project: str,
    name: str,
    body: bytes,
    explain: bool,
    caller: Principal | None,
    variant: str | None,
    target: str | None,
) -> Any:
    return host.invoke(
        project,
        name,
        parse_records(body),
        explain=explain,
        caller=caller,
        variant=variant,
        target=target,
    )


def lane_caller(scope: Scope) -> Principal:
    """:func:`_caller` for the invocations lane: without authentication and without an
    ``X-CivicML-User`` header (the common case on loopback) the server's own principal, found
    without building a request object; anything else as :func:`_caller`."""
    app = scope["app"]
    if app.state.settings.auth == "none" and _header(scope, _USER_KEY) is None:
        state: AppState = app.state.civicml
        return state.ctx.principal
    return _caller(Request(scope))


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
    project: str, name: str, body: CaptureDatasetBody, caller: Caller, host: Host
) -> DatasetVersion:
    """Store the endpoint's captured inputs and predictions as a dataset version (for drift)."""
    capture = CaptureService(caller.ctx, host.capture)
    return capture.to_dataset(project, name, name=body.dataset, metadata=body.metadata)


# Variants, shadow, rollouts and shadow reports (docs/serving.md) ------------------------------
def _variants(caller: Caller, host: Host) -> VariantService:
    return VariantService(caller.ctx, host)


def _rollouts(caller: Caller, host: Host) -> RolloutService:
    return RolloutService(caller.ctx, host)


def _shadow_reports(caller: Caller, host: Host) -> ShadowReportService:
    return ShadowReportService(caller.ctx, host)


Variants = Annotated[VariantService, Depends(_variants)]
Rollouts = Annotated[RolloutService, Depends(_rollouts)]
ShadowReports = Annotated[ShadowReportService, Depends(_shadow_reports)]
VariantName = Annotated[
    str, PathParam(min_length=1, max_length=128, description="Variant name, e.g. 'green'.")
]
ReportId = Annotated[str, PathParam(min_length=1, max_length=64, description="Shadow report id.")]


class VariantBody(_Body):
    model: str | None = Field(
        default=None, max_length=128, description="Registered model (default: the endpoint's)."
    )
    version: PositiveInt64 | str = Field(description="Approved version (number or alias).")
    weight: Float = Field(
        default=0.0,
        ge=0,
        le=1e6,
        description="Traffic weight (share = weight / sum of live weights); 0: pinned requests "
        "only.",
    )


class TrafficBody(_Body):
    weights: dict[str, Float] = Field(
        min_length=1,
        max_length=10,
        description="New weights of live variants by name, e.g. {'blue': 90, 'green': 10}; "
        "variants not named keep theirs.",
    )


class ShadowBody(_Body):
    model: str | None = Field(
        default=None, max_length=128, description="Registered model (default: the endpoint's)."
    )
    version: PositiveInt64 | str = Field(description="Approved version (number or alias).")
    percent: Float = Field(
        default=100.0, gt=0, le=100, description="Share of live requests copied to it, 0-100."
    )
    name: str | None = Field(
        default=None, max_length=128, description="Variant name (default 'v<N>-shadow')."
    )


class CancelBody(_Body):
    reason: str | None = Field(
        default=None, max_length=500, description="Why, for the audit trail and the rollout."
    )


class ShadowReportBody(_Body):
    shadow: str | None = Field(
        default=None,
        max_length=128,
        description="The shadow variant to compare (default: the endpoint's shadow now).",
    )
    tolerance: Float = Field(
        default=0.01,
        ge=0,
        le=1e9,
        description="Regression: values agree within tolerance * max(1, |live|).",
    )
    min_pairs: PositiveInt64 = Field(
        default=100, le=1_000_000_000, description="Fewest pairs a 'promote' needs."
    )
    min_agreement: Float = Field(
        default=0.95, ge=0, le=1, description="Lowest agreement rate a 'promote' accepts."
    )
    max_latency_increase: Float = Field(
        default=0.2,
        ge=0,
        le=1000,
        description="Highest relative p99 latency increase a 'promote' accepts (0.2: 20%).",
    )


def _current_model(svc: EndpointService, project: str, name: str, model: str | None) -> str:
    return model if model is not None else svc.get(project, name).model_name


@router.get("/{name}/variants", response_model=list[VariantInfo])
def list_variants(project: str, name: str, variants: Variants) -> list[VariantInfo]:
    """The endpoint's variants: live ones (by name) with weight and share, then the shadow."""
    return variants.list(project, name)


@router.put("/{name}/variants/{variant}", response_model=EndpointInfo)
def put_variant(
    project: str, name: str, variant: VariantName, body: VariantBody, variants: Variants, svc: Svc
) -> EndpointInfo:
    """Add a live variant serving an approved version (or switch that variant to it), loaded
    before the change; weight 0 (the default) answers only requests that pin it."""
    model = _current_model(svc, project, name, body.model)
    return variants.put(project, name, variant, model, body.version, weight=body.weight)


@router.delete("/{name}/variants/{variant}", response_model=EndpointInfo)
def delete_variant(
    project: str, name: str, variant: VariantName, variants: Variants
) -> EndpointInfo:
    """Remove a variant (not the last live one with weight)."""
    return variants.remove(project, name, variant)


@router.put("/{name}/traffic", response_model=EndpointInfo)
def set_traffic(project: str, name: str, body: TrafficBody, variants: Variants) -> EndpointInfo:
    """Change the traffic weights of live variants, without a redeploy or a failed request."""
    return variants.set_weights(project, name, body.weights)


@router.put("/{name}/shadow", response_model=EndpointInfo)
def set_shadow(
    project: str, name: str, body: ShadowBody, variants: Variants, svc: Svc
) -> EndpointInfo:
    """Make an approved version the endpoint's shadow: a sampled copy of live requests, its
    answers captured and never returned (capture must be on)."""
    model = _current_model(svc, project, name, body.model)
    return variants.set_shadow(
        project, name, model, body.version, percent=body.percent, name=body.name
    )


@router.delete("/{name}/shadow", response_model=EndpointInfo)
def delete_shadow(project: str, name: str, variants: Variants) -> EndpointInfo:
    """Stop shadowing and remove the shadow variant."""
    return variants.remove_shadow(project, name)


@router.get("/{name}/rollout", response_model=RolloutInfo)
def get_rollout(project: str, name: str, rollouts: Rollouts) -> RolloutInfo:
    """The endpoint's latest guarded update, its alarms read now."""
    return rollouts.get(project, name)


@router.get("/{name}/rollouts", response_model=list[RolloutInfo])
def list_rollouts(
    project: str, name: str, rollouts: Rollouts, paging: Page, request: Request, response: Response
) -> list[RolloutInfo]:
    """Every guarded update of the endpoint, newest first."""
    return page(rollouts.list(project, name), paging, request, response)


@router.post("/{name}/rollout/tick", response_model=RolloutInfo)
def tick_rollout(project: str, name: str, rollouts: Rollouts) -> RolloutInfo:
    """Advance the rollout now: roll back on an alarm, else the next step once baked
    (idempotent; the server also ticks every rollout_interval_s)."""
    return rollouts.tick(project, name)


@router.post("/{name}/rollout/cancel", response_model=RolloutInfo)
def cancel_rollout(project: str, name: str, body: CancelBody, rollouts: Rollouts) -> RolloutInfo:
    """Stop the rollout in progress and send all traffic back to the old variants."""
    return rollouts.cancel(project, name, reason=body.reason)


@router.post("/{name}/shadow/reports", response_model=ShadowReport, status_code=201)
def create_shadow_report(
    project: str, name: str, body: ShadowReportBody, reports: ShadowReports, response: Response
) -> ShadowReport:
    """Compare the shadow's captured answers with the live ones and store the report (JSON +
    HTML) with its recommendation (needs endpoints.write and datasets.read)."""
    report = reports.create(
        project,
        name,
        shadow_variant=body.shadow,
        tolerance=body.tolerance,
        min_pairs=body.min_pairs,
        min_agreement=body.min_agreement,
        max_latency_increase=body.max_latency_increase,
    )
    response.headers["Location"] = (
        f"/api/v1/projects/{project}/endpoints/{name}/shadow/reports/{report.id}"
    )
    return report


@router.get("/{name}/shadow/reports", response_model=list[ShadowReport])
def list_shadow_reports(
    project: str,
    name: str,
    reports: ShadowReports,
    paging: Page,
    request: Request,
    response: Response,
) -> list[ShadowReport]:
    """The endpoint's shadow reports, newest first."""
    return page(reports.list(project, name), paging, request, response)


@router.get("/{name}/shadow/reports/{report_id}", response_model=ShadowReport)
def get_shadow_report(
    project: str, name: str, report_id: ReportId, reports: ShadowReports
) -> ShadowReport:
    """One shadow report: its recommendation in brief and its files."""
    return reports.get(project, name, report_id)


@router.get("/{name}/shadow/reports/{report_id}/html", response_class=Response)
def shadow_report_html(
    project: str, name: str, report_id: ReportId, reports: ShadowReports
) -> Response:
    """The self-contained HTML report (inline CSS and SVG; no scripts, nothing fetched)."""
    with reports.open_file(project, name, report_id, "report.html") as handle:
        data = handle.read()
    return html_response(data)


@router.get("/{name}/shadow/reports/{report_id}/json", response_class=Response)
def shadow_report_json(
    project: str, name: str, report_id: ReportId, reports: ShadowReports
) -> Response:
    """The whole comparison as stored (agreement, score differences, latency, reasons)."""
    with reports.open_file(project, name, report_id, "report.json") as handle:
        data = handle.read()
    return Response(data, media_type="application/json")


# Multi-model endpoints (docs/serving.md#multi-model-endpoints) ---------------------------------
def _multi(caller: Caller, host: Host) -> MultiModelService:
    return MultiModelService(caller.ctx, host)


MultiModels = Annotated[MultiModelService, Depends(_multi)]


class AddModelBody(_Body):
    model: str = Field(max_length=128, description="Registered model name.")
    version: PositiveInt64 | str = Field(
        description="Version number or alias of an Approved version (resolved now)."
    )


@router.get("/{name}/models", response_model=list[EndpointModel])
def list_models(project: str, name: str, multi: MultiModels) -> list[EndpointModel]:
    """A multi-model endpoint's models, by name, newest version first."""
    return multi.list(project, name)


@router.post("/{name}/models", response_model=EndpointInfo, status_code=201)
def add_model(
    project: str, name: str, body: AddModelBody, multi: MultiModels, response: Response
) -> EndpointInfo:
    """Serve one more Approved version from a multi-model endpoint, without a redeploy (checked
    now, loaded when a request first names it)."""
    info = multi.add(project, name, body.model, body.version)
    response.headers["Location"] = f"/api/v1/projects/{project}/endpoints/{name}/models"
    return info


@router.delete("/{name}/models/{model}", response_model=EndpointInfo)
def remove_model(
    project: str, name: str, model: ModelPath, multi: MultiModels, version: ModelVersionQuery = None
) -> EndpointInfo:
    """Stop serving a model (every version held, or `?version=`) from a multi-model endpoint;
    requests in flight finish on it."""
    return multi.remove(project, name, model, version)


_SHORT = re.compile(r"/endpoints/([^/]+)/invocations")
_LONG = re.compile(r"/api/v1/projects/([^/]+)/endpoints/([^/]+)/invocations")
_SHORT_MODEL = re.compile(r"/endpoints/([^/]+)/models/([^/]+)/invocations")
_LONG_MODEL = re.compile(r"/api/v1/projects/([^/]+)/endpoints/([^/]+)/models/([^/]+)/invocations")
_TARGET_KEY = TARGET_HEADER.encode()
_USER_KEY = USER_HEADER.encode()
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
        target = invocation_target_of(scope) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        project, name, query, model = target
        await self._invoke(scope, receive, send, project, name, query, model)

    async def _invoke(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        project: str,
        name: str,
        query: dict[str, list[str]],
        model: str | None,
    ) -> None:
        raw = await read_body(receive)
        if raw is None:
            return  # the client went away; nobody to answer
        parsed = scope.pop(PARSED_KEY, None)
        try:
            explain, pinned, target = invocation_options(scope, query, model)
            answered = await answer(
                model_host_of(scope["app"]),
                project,
                name,
                raw,
                explain=explain,
                caller=lane_caller(scope),
                variant=pinned,
                target=target,
                parsed=parsed if isinstance(parsed, Parsed) else None,
            )
        except CivicMLError as err:
            status, body, extra = error_answer(err)
        else:
            status, body, extra = 200, answered[0], answer_headers(answered)
        await send_json(send, status, body, extra)


#: Where the direct lane leaves the records it parsed for a request it hands to the ASGI app.
PARSED_KEY = "civicml.parsed"


def invocation_options(
    scope: Scope, query: dict[str, list[str]], model: str | None
) -> tuple[bool, str | None, str | None]:
    """(explain, pinned variant, target model) of an invocation request.

    Raises:
        InvalidInputError: ``explain`` is not a boolean.
        BadRequestError: The path names one model and the target header another.
    """
    explain = parse_explain(query.get("explain"))
    header = _header(scope, _TARGET_KEY)
    if model is not None:
        version = query.get("version")
        return explain, None, path_target(model, version[-1] if version else None, header)
    return explain, _pinned(scope, query.get("variant")), header


def answer_headers(answered: Answer) -> list[tuple[bytes, bytes]]:
    """The headers of an invocation's answer besides its type and length: the variant that
    answered, and the target model of a multi-model endpoint."""
    extra = [(b"civicml-variant", answered[1].encode())]
    if answered[2] is not None:
        extra.append((_TARGET_KEY, answered[2].encode()))
    return extra


def error_answer(err: CivicMLError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(status, body, headers) of an invocation refused with ``err``, as the app's
    CivicMLError handler answers it (a 5xx is logged)."""
    if err.status >= 500:
        log.error("%s: %s", type(err).__name__, err.message)
    extra = [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
    return err.status, json.dumps(err.to_body()).encode(), extra


#: Other ``POST`` paths answered by a lane of their own inside the guard, which
#: :class:`InvocationsFirstApp` sends there as it sends invocations (the metric batches of the
#: remote SDK: ``routers/tracking.py``, ``BatchesLane``).
LANE_PATHS = frozenset({"/api/v1/metrics/batches"})


class InvocationsFirstApp(FastAPI):
    """The server's FastAPI app, with invocations sent straight to its own middleware.

    FastAPI wraps every request in layers the invocation lane does not use: a telemetry switch
    read from the environment on each request, a body-size layer (the guard limits bodies) and
    Starlette's exception layers. A ``POST …/invocations`` request enters the app's middleware
    chain at the guard instead (the same instances: guard, metrics lane, authentication, the
    invocation lane, so failure counts and caches are shared), under the app's last-resort
    error handler (a 500 with the one error body, as for any route); so does a request for
    one of :data:`LANE_PATHS`. Everything else, and an app without a guard, goes through
    FastAPI as usual.
    """

    _invocation_stack: ASGIApp | None = None
    _stack_built = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and (scope["path"].endswith("/invocations") or scope["path"] in LANE_PATHS)
        ):
            if not self._stack_built:
                self._invocation_stack = self._build_invocation_stack()
                self._stack_built = True
            stack = self._invocation_stack
            if stack is not None:
                if self.root_path:
                    scope["root_path"] = self.root_path
                scope["app"] = self
                await stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def guard(self) -> Any:
        """The app's request guard (``GuardMiddleware``) in its built middleware stack, or
        None when it has none."""
        from civicml.server.guard import GuardMiddleware

        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        layer: Any = self.middleware_stack
        while layer is not None and not isinstance(layer, GuardMiddleware):
            layer = getattr(layer, "app", None)
        return layer

    def _build_invocation_stack(self) -> ASGIApp | None:
        from starlette.middleware.errors import ServerErrorMiddleware

        layer = self.guard()
        if layer is None:
            return None
        handler = self.exception_handlers.get(Exception) or self.exception_handlers.get(500)
        return ServerErrorMiddleware(layer, handler=handler, debug=self.debug)


def _pinned(scope: Scope, query: list[str] | None) -> str | None:
    """The variant the request pins: header ``civicml-variant``, then Azure's name, then the
    ``variant`` query parameter."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in _VARIANT_KEYS:
            found[key] = value.decode("latin-1")
    if not found and not query:
        return None
    return pinned_variant(*(found.get(k) for k in _VARIANT_KEYS), query[-1] if query else None)


def _header(scope: Scope, key: bytes) -> str | None:
    """The first value of request header ``key`` (lower-case bytes), decoded as latin-1."""
    for name, value in scope["headers"]:
        if name == key:
            return str(value.decode("latin-1"))
    return None


def invocation_target(scope: Scope) -> tuple[str, str] | None:
    """(project, endpoint) of an invocation request, else None (for server/auth.py's scope
    check, which runs before this lane and the routes)."""
    target = invocation_target_of(scope) if scope["type"] == "http" else None
    return None if target is None else (target[0], target[1])


def invocation_target_of(scope: Scope) -> tuple[str, str, dict[str, list[str]], str | None] | None:
    """(project, endpoint, query, model named in the path or None) of an invocation request,
    else None."""
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.endswith("/invocations"):
        return None
    query = _query(scope["query_string"])
    short = _SHORT.fullmatch(path)
    if short is not None:
        return query.get("project", ["default"])[-1], short.group(1), query, None
    long = _LONG.fullmatch(path)
    if long is not None:
        return long.group(1), long.group(2), query, None
    short = _SHORT_MODEL.fullmatch(path)
    if short is not None:
        return query.get("project", ["default"])[-1], short.group(1), query, short.group(2)
    long = _LONG_MODEL.fullmatch(path)
    if long is not None:
        return long.group(1), long.group(2), query, long.group(3)
    return None


_QUERIES: dict[bytes, dict[str, list[str]]] = {}
_QUERIES_MAX = 256


def _query(raw: bytes) -> dict[str, list[str]]:
    """The parsed query string, from a small cache: clients send the same few query strings
    (``?project=…``) request after request. Callers only read the answer."""
    found = _QUERIES.get(raw)
    if found is None:
        found = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
        if len(raw) <= 1024:
            if len(_QUERIES) >= _QUERIES_MAX:
                _QUERIES.clear()
            _QUERIES[raw] = found
    return found


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
