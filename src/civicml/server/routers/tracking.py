"""Runs: params, tags, metrics, artifacts, status, search."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from civicml.core import jsonsafe
from civicml.core.errors import CivicMLError
from civicml.core.types import INT64_MAX, NonNegativeInt32, NonNegativeInt64, StrictInt
from civicml.server.bodies import upload_body
from civicml.server.deps import Services, caller_services, services
from civicml.server.errors import error_headers, validation_body
from civicml.server.lanes import read_body, send_json
from civicml.server.paging import Page, page
from civicml.store.faults import classify
from civicml.store.schemas import ArtifactInfo
from civicml.tracking.schemas import (
    MAX_BATCHES_PER_REQUEST,
    MAX_HISTORY_PAGE,
    MAX_KEYS_PER_REQUEST,
    MAX_RUNS_PAGE,
    MAX_VALUES_PER_REQUEST,
    MetricBatchResult,
    MetricHistory,
    MetricValue,
    Run,
    RunPage,
    RunStatus,
)
from civicml.tracking.service import MetricBatch, NewRun

__all__ = ["BATCHES_PATH", "BatchesLane", "router"]

log = logging.getLogger("civicml.server")
router = APIRouter(prefix="/api/v1", tags=["runs"])
Svc = Annotated[Services, Depends(caller_services)]

_RUN_ID = Field(min_length=1, max_length=64, description="Run id.")
_BATCH_ID = Field(
    default=None,
    min_length=1,
    max_length=64,
    description="Client batch id: a retry with it is stored once; the same id with other "
    "values is a 409.",
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Body):
    experiment: str = Field(default="default", description="Experiment (created when missing).")
    name: str | None = Field(default=None, description="Run name (generated when omitted).")
    params: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_KEYS_PER_REQUEST,
        description=f"Initial parameters (at most {MAX_KEYS_PER_REQUEST}).",
    )
    tags: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_KEYS_PER_REQUEST,
        description=f"Initial tags (at most {MAX_KEYS_PER_REQUEST}).",
    )
    host: str | None = Field(
        default=None, max_length=256, description="Host of the process doing the work."
    )
    pid: NonNegativeInt32 | None = Field(default=None, description="Its process id.")
    pid_start: NonNegativeInt64 | None = Field(
        default=None, description="Its start tick (tells reuse apart)."
    )


class RunSearch(_Body):
    filter: str | None = Field(default=None, description='e.g. "metrics.auc > 0.8".')
    order_by: list[str] = Field(default_factory=list, description="e.g. ['metrics.auc DESC'].")
    experiments: list[str] | None = Field(default=None, description="Limit to experiments.")
    max_results: StrictInt = Field(
        default=100, ge=1, le=MAX_RUNS_PAGE, description=f"Page size (1-{MAX_RUNS_PAGE:,})."
    )
    offset: NonNegativeInt64 = Field(
        default=0, description="Rows to skip (the next_offset of the previous page)."
    )


class ParamsBody(_Body):
    params: dict[str, Any] = Field(
        max_length=MAX_KEYS_PER_REQUEST,
        description=f"Parameters to record, immutable once set (at most {MAX_KEYS_PER_REQUEST}).",
    )


class TagsBody(_Body):
    tags: dict[str, Any] = Field(
        max_length=MAX_KEYS_PER_REQUEST,
        description=f"Tags to set (at most {MAX_KEYS_PER_REQUEST}).",
    )


class MetricsBody(_Body):
    metrics: list[MetricValue] = Field(
        max_length=MAX_VALUES_PER_REQUEST,
        description=f"Values (at most {MAX_VALUES_PER_REQUEST:,}).",
    )
    batch_id: str | None = _BATCH_ID


class NewRunBody(_Body):
    project: str = Field(max_length=128, description="Project of the new run.")
    experiment: str = Field(
        max_length=128, description="Its experiment (must exist: start one run there first)."
    )
    name: str | None = Field(default=None, description="Run name (generated when omitted).")
    params: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_KEYS_PER_REQUEST,
        description=f"Initial parameters (at most {MAX_KEYS_PER_REQUEST}).",
    )
    tags: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_KEYS_PER_REQUEST,
        description=f"Initial tags (at most {MAX_KEYS_PER_REQUEST}).",
    )
    host: str | None = Field(
        default=None, max_length=256, description="Host of the process doing the work."
    )
    pid: NonNegativeInt32 | None = Field(default=None, description="Its process id.")
    pid_start: NonNegativeInt64 | None = Field(
        default=None, description="Its start tick (tells reuse apart)."
    )


class BatchItem(_Body):
    run_id: str = _RUN_ID
    create: NewRunBody | None = Field(
        default=None,
        description="Create the run first, with run_id (32 lowercase hexadecimal characters, "
        "chosen by the client), as POST /projects/{project}/runs would.",
    )
    metrics: list[MetricValue] = Field(
        default_factory=list, max_length=MAX_VALUES_PER_REQUEST, description="Values for that run."
    )
    batch_id: str | None = _BATCH_ID
    params: dict[str, Any] | None = Field(
        default=None,
        max_length=MAX_KEYS_PER_REQUEST,
        description="Parameters to record after the values, immutable once set (at most "
        f"{MAX_KEYS_PER_REQUEST}).",
    )
    end: RunStatus | None = Field(
        default=None,
        description="End the run with this status (finished, failed, killed) after the values "
        "and parameters, in the same transaction.",
    )


class BatchesBody(_Body):
    batches: list[BatchItem] = Field(
        max_length=MAX_BATCHES_PER_REQUEST,
        description=f"Batches, any runs (at most {MAX_BATCHES_PER_REQUEST:,}, with at most "
        f"{MAX_VALUES_PER_REQUEST:,} values in all).",
    )

    @model_validator(mode="after")
    def _bounded(self) -> BatchesBody:
        total = sum(len(b.metrics) for b in self.batches)
        if total > MAX_VALUES_PER_REQUEST:
            raise ValueError(
                f"the batches hold {total:,} values in all; at most {MAX_VALUES_PER_REQUEST:,} "
                "fit in one request: send the rest in another"
            )
        return self


class BatchOutcome(BaseModel):
    ok: bool = Field(description="Whether this batch was accepted.")
    stored: int = Field(default=0, description="Values stored.")
    duplicate: bool = Field(default=False, description="Batch id seen before.")
    error: dict[str, Any] | None = Field(default=None, description="Error body when not ok.")
    run: Run | None = Field(default=None, description="The run as it ended, when 'end' was set.")


class InputBody(_Body):
    kind: str = Field(description="Kind of entity used, e.g. 'dataset_version'.")
    ref: str = Field(description="Its id.")


class EndBody(_Body):
    status: RunStatus = Field(default=RunStatus.FINISHED, description="finished, failed, killed.")


@router.post("/projects/{project}/runs", response_model=Run, status_code=201)
def create_run(project: str, body: RunCreate, svc: Svc, response: Response) -> Run:
    run = svc.tracking.create_run(
        project,
        experiment=body.experiment,
        name=body.name,
        params=body.params,
        tags=body.tags,
        host=body.host,
        pid=body.pid,
        pid_start=body.pid_start,
    )
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    return run


@router.get("/projects/{project}/runs", response_model=RunPage)
def list_runs(
    project: str,
    svc: Svc,
    filter: str | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    experiment: Annotated[list[str] | None, Query()] = None,
    max_results: Annotated[int, Query(ge=1, le=MAX_RUNS_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> RunPage:
    """One page of runs (``next_offset`` fetches the next); ``warnings`` name filter or order
    keys that no run has."""
    return svc.tracking.search(
        project,
        experiments=experiment,
        filter=filter,
        order_by=order_by,
        max_results=max_results,
        offset=offset,
    )


@router.post("/projects/{project}/runs/search", response_model=RunPage)
async def search_runs(project: str, body: RunSearch, svc: Svc) -> Response:
    """As ``GET …/runs``, with the query in a JSON body."""
    found = await run_in_threadpool(
        svc.tracking.search,
        project,
        experiments=body.experiments,
        filter=body.filter,
        order_by=body.order_by,
        max_results=body.max_results,
        offset=body.offset,
    )
    # Serialised once, here: the page was built from checked rows (FastAPI would validate the
    # model again in another worker thread before serialising it).
    return Response(found.model_dump_json(), media_type="application/json")


@router.get("/runs/{run_id}", response_model=Run)
def get_run(run_id: str, svc: Svc) -> Run:
    return svc.tracking.get_run(run_id)


@router.post("/runs/{run_id}/params", status_code=204)
def log_params(run_id: str, body: ParamsBody, svc: Svc) -> None:
    svc.tracking.log_params(run_id, body.params)


@router.post("/runs/{run_id}/tags", status_code=204)
def set_tags(run_id: str, body: TagsBody, svc: Svc) -> None:
    svc.tracking.set_tags(run_id, body.tags)


@router.delete("/runs/{run_id}/tags/{key:path}", status_code=204)
def delete_tag(run_id: str, key: str, svc: Svc) -> None:
    svc.tracking.delete_tag(run_id, key)


@router.post(
    "/runs/{run_id}/metrics", response_model=MetricBatchResult, response_model_exclude={"run"}
)
def log_metrics(run_id: str, body: MetricsBody, svc: Svc) -> MetricBatchResult:
    """Durable when answered; concurrent requests share one commit (group commit)."""
    svc.tracking.check_may_log(run_id)  # the group commit acts as the server, not the caller
    result = svc.writer.submit(run_id, body.metrics, synchronous=True, batch_id=body.batch_id)
    return result or MetricBatchResult(stored=0)


@router.post("/metrics/batches", response_model=list[BatchOutcome])
async def log_metric_batches(body: BatchesBody, svc: Svc) -> Response:
    """Many runs' batches in one transaction (what the remote SDK's buffer sends): a run's
    creation, metric values, parameters and its end, each optional."""
    outcomes = await run_in_threadpool(_store_batches, body, svc)
    return Response(_OUTCOMES.dump_json(outcomes), media_type="application/json")


_OUTCOMES = TypeAdapter(list[BatchOutcome])
#: The path :class:`BatchesLane` answers.
BATCHES_PATH = "/api/v1/metrics/batches"


class BatchesLane:
    """ASGI middleware: answers ``POST /api/v1/metrics/batches`` without FastAPI's routing.

    The remote SDK sends a short run (its creation, parameters, metrics and end) as one such
    request, so the cost of this request is the cost of a run; FastAPI's routing, dependency
    solving and response layers were most of it. Mounted by ``create_app`` inside the guard
    (Host allowlist, JSON only, body limit and deadline, security headers) and the
    authentication layer, so both apply as to any route. The body goes through the strict
    parser and the model of the route (:class:`BatchesBody`), the caller is the route's
    (:func:`~civicml.server.deps.services`) and the service checks permissions as for the
    route. Errors are answered as the app's handlers answer them: a CivicMLError with its body
    and status, a validation failure with the 422 of every route, a store fault with its typed
    answer; anything else propagates to the last-resort handler (500). Every other request
    passes through untouched. The route stays, for the OpenAPI document and apps built
    without this layer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != BATCHES_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        if raw is None:
            return  # the client went away; nobody to answer
        headers: list[tuple[bytes, bytes]] = []
        try:
            body = _batches_body(raw)
            svc = services(Request(scope))
            outcomes = await run_in_threadpool(_store_batches, body, svc)
            payload, status = _OUTCOMES.dump_json(outcomes), 200
        except _Invalid as invalid:
            payload, status = json.dumps(invalid.body).encode(), 422
        except (CivicMLError, OSError, SQLAlchemyError) as raised:
            err = raised if isinstance(raised, CivicMLError) else classify(raised)
            if err is None:
                raise  # a bug: the last-resort handler logs it (without SQL) and answers 500
            if err.status >= 500:
                log.error("%s: %s", type(err).__name__, err.message)
            payload, status = json.dumps(err.to_body()).encode(), err.status
            headers = [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
        await send_json(send, status, payload, headers)


class _Invalid(Exception):
    """The body failed validation: :attr:`body` is the 422 answer."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["message"])
        self.body = body


def _batches_body(raw: bytes) -> BatchesBody:
    """The request body as the route reads it: strict JSON (bare NaN allowed: metric values),
    then :class:`BatchesBody`, each error located under ``body`` as FastAPI locates it."""
    if not raw:
        raise _Invalid(
            validation_body([{"loc": ("body",), "msg": "Field required", "type": "missing"}])
        )
    parsed = jsonsafe.loads(raw, allow_nan=True)
    try:
        return BatchesBody.model_validate(parsed)
    except ValidationError as err:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        raise _Invalid(validation_body(errors)) from None


def _store_batches(body: BatchesBody, svc: Services) -> list[BatchOutcome]:
    refused: dict[int, CivicMLError] = {}
    batches: list[MetricBatch] = []
    for n, b in enumerate(body.batches):
        try:
            create = None if b.create is None else _new_run(svc, b.create)
        except CivicMLError as err:
            refused[n] = err
            continue
        end = None if b.end is None else b.end.value
        batches.append(
            MetricBatch(b.run_id, b.metrics, b.batch_id, params=b.params, end=end, create=create)
        )
    stored = iter(svc.tracking.log_metric_batches(batches))
    results = [refused[n] if n in refused else next(stored) for n in range(len(body.batches))]
    return [
        BatchOutcome(ok=False, error=r.to_body())
        if isinstance(r, CivicMLError)
        else BatchOutcome(ok=True, stored=r.stored, duplicate=r.duplicate, run=r.run)
        for r in results
    ]


def _new_run(svc: Services, body: NewRunBody) -> NewRun:
    return svc.tracking.prepare_run(
        body.project,
        experiment=body.experiment,
        name=body.name,
        params=body.params,
        tags=body.tags,
        host=body.host,
        pid=body.pid,
        pid_start=body.pid_start,
    )


@router.get("/runs/{run_id}/metrics/{key:path}", response_model=MetricHistory)
def metric_history(
    run_id: str,
    key: str,
    svc: Svc,
    after: Annotated[
        str | None,
        Query(max_length=80, description="The next_cursor of the previous page."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_HISTORY_PAGE, description="Page size.")
    ] = MAX_HISTORY_PAGE,
) -> MetricHistory:
    """One page of a metric's values by step, then time; ``next_cursor`` fetches the next."""
    return svc.tracking.metric_history_page(run_id, key, after=after, limit=limit)


@router.post("/runs/{run_id}/inputs", status_code=204)
def log_input(run_id: str, body: InputBody, svc: Svc) -> None:
    """Record an input of the run (lineage: the entity contributed to the run)."""
    svc.tracking.log_input(run_id, body.kind, body.ref)


@router.post("/runs/{run_id}/heartbeat", status_code=204)
def heartbeat(run_id: str, svc: Svc) -> None:
    svc.tracking.heartbeat(run_id)


@router.post("/runs/{run_id}/end", response_model=Run)
def end_run(run_id: str, body: EndBody, svc: Svc) -> Run:
    return svc.tracking.end_run(run_id, body.status)


@router.put("/runs/{run_id}/artifacts/{path:path}", response_model=ArtifactInfo, status_code=201)
async def upload_artifact(run_id: str, path: str, request: Request, svc: Svc) -> ArtifactInfo:
    """Upload raw bytes (``application/octet-stream``) as the run's artifact ``path``."""
    async with upload_body(request) as spool:  # streamed to disk, bounded by the guard
        return await run_in_threadpool(svc.tracking.log_artifact, run_id, path, spool)


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactInfo])
def list_artifacts(
    run_id: str,
    svc: Svc,
    paging: Page,
    request: Request,
    response: Response,
    prefix: str | None = None,
) -> list[ArtifactInfo]:
    return page(svc.tracking.list_artifacts(run_id, prefix), paging, request, response)


@router.get("/runs/{run_id}/artifacts/{path:path}")
def download_artifact(run_id: str, path: str, svc: Svc) -> StreamingResponse:
    """The artifact's bytes, verified against their SHA-256 before the first byte is sent."""
    info, handle = svc.tracking.open_artifact(run_id, path)

    def chunks() -> Any:
        with handle:
            while block := handle.read(1 << 20):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "ETag": f'"sha256:{info.digest}"',
            "Content-Length": str(info.size),
            "X-Content-SHA256": info.digest,
        },
    )


@router.post("/projects/{project}/blobs", status_code=201)
async def upload_blob(project: str, request: Request, svc: Svc) -> dict[str, str]:
    """Store bytes content-addressed (for registering a model without a run); returns the digest."""
    await run_in_threadpool(svc.projects.get, project, "models.write")
    async with upload_body(request) as spool:  # streamed to disk, bounded by the guard
        stored = await run_in_threadpool(svc.registry.store_blob, project, spool)
    return {"digest": stored.digest, "size": str(stored.size)}
