"""The FastAPI application: ``create_app(settings)`` and ``serve()``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import civicml
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.governance.audit import AuditTrail
from civicml.monitors.hook import monitor_alarm
from civicml.monitors.runner import MonitorLoop
from civicml.pipelines.scheduler import Scheduler
from civicml.sdk.embedded import open_context
from civicml.server.auth import AuthMiddleware, check_bind
from civicml.server.bodies import JSONRoute, strict_json
from civicml.server.deps import AppState
from civicml.server.errors import install_error_handlers
from civicml.server.guard import BodyLimits, GuardMiddleware
from civicml.server.metrics import MetricsExporter, MetricsLane, new_metrics_dir
from civicml.server.metrics import router as metrics_router
from civicml.server.routers import (
    alerts,
    batch,
    catalog,
    costs,
    data,
    data_checks,
    evaluation,
    governance,
    keys,
    monitoring,
    monitors,
    oversight,
    packages,
    pipelines,
    privacy,
    projects,
    registry,
    schedules,
    serving,
    sources,
    tokens,
    tracking,
)
from civicml.server.routers import health as health_routes
from civicml.server.transport import server_config, tls_files
from civicml.server.workers import Supervisor, Worker
from civicml.serving.batch import BatchService
from civicml.serving.capture import CaptureWriter
from civicml.serving.rollout import RolloutTicker, set_monitor_status
from civicml.serving.runtime import ModelHost
from civicml.store.context import Context
from civicml.tracking.service import TrackingService
from civicml.tracking.writer import MetricWriter

__all__ = ["create_app", "freeze_startup_objects", "serve", "tls_files"]

log = logging.getLogger("civicml.server")
RECOVERY_INTERVAL_S = 60.0


def create_app(
    settings: Settings,
    principal: Principal | None = None,
    *,
    worker: Worker | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the API app on the stores named by ``settings``.

    The database is migrated and crash leftovers are recovered when the app starts; abandoned runs
    are looked for again every minute while it runs.

    Args:
        settings: Where the stores are, and every server setting.
        principal: Who the server acts as by default (None: from ``settings``).
        worker: Which serving process this app runs in (``civicml server --workers N``,
            :mod:`civicml.server.workers`); None: the only one.
        freeze_gc: Once started, move every object alive to the garbage collector's permanent
            generation (:func:`freeze_startup_objects`; what ``civicml server`` does — not
            for apps that come and go in one process, such as tests).
    """
    worker = worker or Worker()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await run_in_threadpool(open_context, settings, principal)
        set_monitor_status(monitor_alarm)  # monitor:NAME rollout alarms (docs/monitors.md)
        writer = MetricWriter(
            TrackingService(ctx).log_metric_batches,
            interval=settings.metrics_flush_interval_ms / 1000,
        )
        app.state.civicml = AppState(ctx=ctx, writer=writer)
        # Captured requests are formatted and written by a process of the writer's own, handed
        # over from this loop (docs/serving.md, Data capture).
        capture = CaptureWriter(ctx, format_process=settings.serving_capture_format != "thread")
        capture.attach_loop()
        app.state.serving = ModelHost(ctx, capture=capture)
        # Shadow copies a fast-path model answers in microseconds are answered on this loop,
        # between requests, not in a thread (docs/serving.md, Shadow tests).
        app.state.serving.answer_shadow_on(asyncio.get_running_loop())
        # GET /metrics: this process's counts in the server's multiprocess directory.
        app.state.metrics = MetricsExporter(
            worker.metrics_dir or new_metrics_dir(),
            worker=worker.index,
            samples=app.state.serving.variant_samples,
            owned=worker.metrics_dir is None,
        )
        if worker.count > 1:  # the other workers' scrapes read this one's counts
            app.state.metrics.start()
        # Loops that must run once per server run in the primary worker only (worker 0 of
        # civicml server --workers N; the only one otherwise).
        primary = worker.primary
        task = asyncio.create_task(_recover_loop(ctx)) if primary else None
        # Cron schedules and event triggers (setting scheduler_enabled; docs/pipelines.md).
        # Due monitors run in the scheduler's loop (setting monitors_enabled; docs/monitors.md),
        # reading this process's capture spool first.
        loop = MonitorLoop(ctx, writer=app.state.serving.capture)
        scheduler = (
            Scheduler(ctx, monitors=loop if settings.monitors_enabled else None)
            if settings.scheduler_enabled and primary
            else None
        )
        if scheduler is not None:
            scheduler.start()
        # Guarded endpoint rollouts (setting rollout_enabled; docs/serving.md).
        ticker = (
            RolloutTicker(ctx, app.state.serving) if settings.rollout_enabled and primary else None
        )
        if ticker is not None:
            ticker.start()
        if freeze_gc:
            freeze_startup_objects()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if ticker is not None:
                await run_in_threadpool(ticker.stop)
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop)
            await run_in_threadpool(app.state.serving.close)
            await run_in_threadpool(app.state.metrics.close)
            await run_in_threadpool(writer.close)
            await run_in_threadpool(AuditTrail(ctx).flush)
            ctx.db.close()

    app = serving.InvocationsFirstApp(
        title="civicml",
        version=civicml.__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        description="Self-hosted MLOps for the public sector: tracking, registry, "
        "lineage and a tamper-evident audit trail.",
    )
    app.state.settings = settings
    app.router.route_class = JSONRoute  # every JSON body goes through the strict parser
    install_error_handlers(app)

    @app.get("/api/v1/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": civicml.__version__}

    routers = (
        # First: invocations are the hot path, and routes are matched in order.
        serving.invocations_router,
        projects.router,
        tracking.router,
        registry.router,
        data.router,
        data_checks.router,
        monitoring.router,
        evaluation.router,
        oversight.router,
        packages.router,
        pipelines.router,
        schedules.router,
        alerts.router,
        monitors.router,
        sources.router,
        batch.router,
        costs.router,
        catalog.router,
        privacy.router,
        serving.router,
        governance.router,
        tokens.router,
        keys.router,
        health_routes.router,
        *([metrics_router] if settings.server_metrics != "off" else []),
    )
    strict_json(routers)
    for router in routers:
        app.include_router(router)
    # Invocations skip FastAPI's routing (same contract, see routers/serving.py); added before
    # the guard, so the guard wraps it.
    app.add_middleware(serving.InvocationsLane)
    # So do metric batches, the remote SDK's one request per short run (routers/tracking.py).
    app.add_middleware(tracking.BatchesLane)
    # Authentication (setting auth) wraps the lane and every route: nothing bypasses it. With
    # auth = "none" (loopback only) and no OIDC issuer the layer would pass every request
    # through untouched, so it is left out: one coroutine less per request.
    if settings.auth != "none" or settings.oidc_issuer is not None:
        app.add_middleware(AuthMiddleware, settings=settings)
    if settings.server_metrics == "loopback":  # GET /metrics for loopback clients, no token
        app.add_middleware(MetricsLane)
    app.add_middleware(
        GuardMiddleware,
        allowed_hosts=settings.server_allowed_hosts,
        binary_upload_paths=UPLOAD_PATHS,
        invocation_paths=INVOCATION_PATHS,
        limits=BodyLimits(
            json=settings.server_max_body_bytes,
            invocation=settings.server_max_invocation_bytes,
            upload=settings.server_max_upload_bytes,
            body_timeout_s=settings.server_body_timeout_s,
        ),
    )
    return app


#: Routes that take raw bytes (``application/octet-stream``), up to ``server_max_upload_bytes``.
UPLOAD_PATHS = (
    r"/api/v1/runs/[^/]+/artifacts/.+",
    r"/api/v1/projects/[^/]+/blobs",
    r"/api/v1/projects/[^/]+/models/import",
    r"/api/v1/projects/[^/]+/datasets/[^/]+/versions",
    r"/api/v1/projects/[^/]+/endpoints/[^/]+/ground-truth/file",
)
#: Invocation routes, whose bodies may be up to ``server_max_invocation_bytes``.
INVOCATION_PATHS = (
    r"/endpoints/[^/]+/invocations",
    r"/api/v1/projects/[^/]+/endpoints/[^/]+/invocations",
)


def freeze_startup_objects() -> None:
    """Collect, then freeze what is left (:func:`gc.freeze`): the modules, the app, the stores —
    hundreds of thousands of objects that live as long as the server — are never examined by a
    collection again. Without it every full collection walks them all: a pause of about 200 ms
    every ~20,000 invocations, which every request in flight waits out."""
    gc.collect()
    gc.freeze()
    log.debug("froze %d start-up objects", gc.get_freeze_count())


def recover_abandoned_work(ctx: Context) -> tuple[list[str], list[str]]:
    """Runs whose process died marked ``killed``, and batch jobs whose process died marked
    ``failed`` (what the primary server process does at start and every minute); their ids."""
    return TrackingService(ctx).recover_abandoned(), BatchService(ctx).recover_abandoned()


async def _recover_loop(ctx: Context) -> None:
    while True:  # at start (a batch job of a server that died), then every interval
        try:
            killed, failed = await run_in_threadpool(recover_abandoned_work, ctx)
        except Exception:
            log.exception("abandoned-run recovery failed")
        else:
            if killed:
                log.info("marked %d abandoned run(s) killed", len(killed))
            if failed:
                log.info("marked %d abandoned batch job(s) failed", len(failed))
        await asyncio.sleep(RECOVERY_INTERVAL_S)


def serve(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info"
) -> None:
    """Run the server with the head and keep-alive timeouts and the connection limit of
    ``settings`` (see server/transport.py; TCP_NODELAY on every connection): one process, or
    ``settings.server_workers`` processes under a supervisor (server/workers.py).

    Raises:
        SystemExit: 3 when the port cannot be bound or the app fails to start.
    """
    check_bind(host, settings)  # auth = "none" only on loopback
    if settings.server_workers > 1:
        supervisor = Supervisor(
            settings, host=host, port=port, log_level=log_level, workers=settings.server_workers
        )
        code = supervisor.run()
        if code:
            raise SystemExit(code)
        return
    import uvicorn

    app = create_app(settings, freeze_gc=True)
    server = uvicorn.Server(server_config(app, settings, host=host, port=port, log_level=log_level))
    server.run()
    if not server.started:  # as uvicorn.run: the port was taken, the app failed to start
        raise SystemExit(3)
