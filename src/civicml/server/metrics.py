"""Prometheus metrics: ``GET /metrics`` in the text exposition format (``prometheus-client``).

What a scrape sees, summed over every serving process of the server:

- ``civicml_endpoint_invocations_total{project, endpoint, variant}``: answered invocations;
- ``civicml_endpoint_errors_total{project, endpoint, variant, status="4xx"|"5xx"}``: requests a
  variant refused for their input, or that its model failed (what rollout alarms count);
- ``civicml_endpoint_latency_seconds{project, endpoint, variant}``: a histogram of the model's
  latency (records in to answer ready, SageMaker's ``ModelLatency``), buckets √10 apart from
  0.1 ms to 100 s;
- per live process (label ``pid``): ``civicml_worker_info{worker}``,
  ``civicml_worker_invocations{worker}`` (what that process answered since it started: how the
  load spreads), and the standard ``process_resident_memory_bytes``, ``process_open_fds``, …;
  ``process_cpu_seconds_total`` is summed over every process the server ever ran.

**Nothing on the request path.** The model host already counts every answer in memory
(:class:`civicml.serving.stats.VariantCounters`, a few integer additions under its counter
lock). An exporter in each process copies those cumulative counts into prometheus-client's
multiprocess files (``counter_*.db``, ``histogram_*.db``, ``gauge_liveall_<pid>.db``, memory
mapped, in a directory of the server's own) every :data:`SYNC_S` seconds from a thread of its
own, and once more before it answers a scrape. A scrape reads every process's files with
prometheus-client's ``MultiProcessCollector``, so one scrape sees all workers: its own counts
exactly, the other workers' as of their last copy (at most a second old). A worker that dies
keeps its counts in the total (counters never go down); its ``liveall`` gauges are removed
(``mark_process_dead``) by the supervisor (:mod:`civicml.server.workers`).

**Who may read it** (setting ``server_metrics``): ``token`` (default) — a caller with the
platform permission ``metrics.read`` (``admin``, or a custom role for the scraper's token);
``loopback`` — any client on a loopback address, without a token, unless the request carries a
proxy's forwarding header (a reverse proxy on the same host would otherwise open it to
everyone); ``off`` — no route. Project and endpoint names are the only data in it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from civicml.core.errors import ServiceUnavailableError
from civicml.core.process import process_alive
from civicml.governance.access import Access
from civicml.server.deps import Services, services
from civicml.server.errors import error_body
from civicml.serving.stats import LATENCY_BOUNDS_MS, VariantSample
from civicml.store.context import Context

__all__ = [
    "METRICS_PATH",
    "SYNC_S",
    "MetricsExporter",
    "MetricsLane",
    "exposition",
    "mark_dead",
    "new_metrics_dir",
    "router",
]

log = logging.getLogger("civicml.server")

METRICS_PATH = "/metrics"
#: How often each process copies its counts into its multiprocess files (seconds).
SYNC_S = 1.0
#: Indexes of :data:`LATENCY_BOUNDS_MS` exported as histogram buckets: 0.1 ms … 100 s, √10 apart.
_BUCKETS = tuple(range(10, len(LATENCY_BOUNDS_MS), 5))
_LE = (*(repr(LATENCY_BOUNDS_MS[i] / 1000) for i in _BUCKETS), "+Inf")
_VARIANT = ("project", "endpoint", "variant")
_PREFIX = "civicml-metrics-"
_FORWARDED = (b"forwarded", b"x-forwarded-for", b"x-real-ip")

_HELP = {
    "civicml_endpoint_invocations": "Invocations a variant answered.",
    "civicml_endpoint_errors": "Requests a variant refused for their input (4xx) or whose "
    "model failed (5xx).",
    "civicml_endpoint_latency_seconds": "The model's latency: records received to answer ready.",
    "civicml_worker_info": "A live serving process of this server (value 1).",
    "civicml_worker_invocations": "Invocations this serving process answered since it started.",
}


def _prometheus(module: str) -> Any:
    """A module of prometheus-client's multiprocess mode (untyped there; imported on use)."""
    return importlib.import_module(f"prometheus_client.{module}")


def new_metrics_dir() -> Path:
    """A fresh private directory for one server's multiprocess files: in ``/dev/shm`` where
    writable (memory, no disk writes), else the system temp directory. Directories left by a
    server that is gone (killed before it could remove its own) are removed first."""
    shm = Path("/dev/shm")  # noqa: S108 (a private mkdtemp directory under it)
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    for stale in base.glob(f"{_PREFIX}*"):
        owner = stale.name.removeprefix(_PREFIX).split("-", 1)[0]
        with contextlib.suppress(OSError):
            mine = stale.stat().st_uid == os.getuid()
            if mine and owner.isdigit() and not process_alive(int(owner)):
                shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))


def _by_name(samples: Iterable[VariantSample]) -> dict[tuple[str, str, str], list[Any]]:
    """(project, endpoint, variant) -> [invocations, 4xx, 5xx, latency histogram, latency sum
    in ns]; variants that share names (an endpoint deleted and deployed anew) add up."""
    totals: dict[tuple[str, str, str], list[Any]] = {}
    for s in samples:
        names = (s.project, s.endpoint, s.variant)
        found = totals.get(names)
        if found is None:
            totals[names] = [s.invocations, s.errors_4xx, s.errors_5xx, list(s.latency), 0]
            found = totals[names]
        else:
            found[0] += s.invocations
            found[1] += s.errors_4xx
            found[2] += s.errors_5xx
            found[3] = [a + b for a, b in zip(found[3], s.latency, strict=True)]
        found[4] += s.latency_sum_ns
    return totals


def mark_dead(directory: Path, pid: int) -> None:
    """Drop the live gauges of process ``pid``, which died (its counters stay in the totals)."""
    _prometheus("multiprocess").mark_process_dead(pid, str(directory))


class MetricsExporter:
    """One process's side of ``/metrics``: writes its counts into ``directory``, and renders
    the whole directory (every process's counts) for a scrape.

    Args:
        directory: The server's multiprocess directory (:func:`new_metrics_dir`).
        worker: This process's worker index (a label of its gauges).
        samples: This process's cumulative per-variant counts
            (:meth:`civicml.serving.runtime.ModelHost.variant_samples`).
        owned: Remove ``directory`` at :meth:`close` (a single-process server made it).
    """

    def __init__(
        self,
        directory: Path,
        *,
        worker: int,
        samples: Callable[[], Iterable[VariantSample]],
        owned: bool = False,
    ) -> None:
        from prometheus_client import ProcessCollector

        mmaped = _prometheus("mmap_dict").MmapedDict

        self._dir = directory
        self._worker = str(worker)
        self._samples = samples
        self._owned = owned
        self._lock = threading.Lock()
        self._written: dict[tuple[str, str], float] = {}
        self._process = ProcessCollector(registry=None)
        pid, nonce = os.getpid(), uuid.uuid4().hex[:8]
        # Counters and histograms under a name no later process reuses (a pid may come back);
        # live gauges under the pid alone, which is what mark_process_dead removes.
        self._files: dict[str, Any] = {
            "counter": mmaped(str(directory / f"counter_{pid}_{nonce}.db")),
            "histogram": mmaped(str(directory / f"histogram_{pid}_{nonce}.db")),
            "gauge": mmaped(str(directory / f"gauge_liveall_{pid}.db")),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False
        self._closed = False

    def start(self) -> None:
        """Copy the counts every :data:`SYNC_S` seconds in a background thread (several
        processes: the others' scrapes read them)."""
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="civicml-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, copy the counts a last time and close the files."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(Exception):
            self.sync()
        with self._lock:
            self._closed = True
            for mapped in self._files.values():
                mapped.close()
        if self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _loop(self) -> None:
        while not self._stop.wait(SYNC_S):
            try:
                self.sync()
            except Exception:
                if not self._failed:  # once, not every second
                    log.exception("writing the Prometheus metrics failed; retrying")
                self._failed = True
            else:
                self._failed = False

    # Writing ----------------------------------------------------------------------------------
    def sync(self) -> None:
        """Write this process's counts (cumulative) into its files now (read under the lock, so
        two copies never write an older count after a newer one)."""
        with self._lock:
            if self._closed:
                return
            totals = _by_name(self._samples())
            for names, (calls, e4, e5, latency, sum_ns) in totals.items():
                labels = dict(zip(_VARIANT, names, strict=True))
                self._counter("civicml_endpoint_invocations", labels, calls)
                for status, count in (("4xx", e4), ("5xx", e5)):
                    self._counter("civicml_endpoint_errors", {**labels, "status": status}, count)
                self._histogram("civicml_endpoint_latency_seconds", labels, latency, sum_ns / 1e9)
            answered = sum(t[0] for t in totals.values())
            worker = {"worker": self._worker}
            self._put("gauge", "civicml_worker_info", "civicml_worker_info", worker, 1.0)
            self._put(
                "gauge", "civicml_worker_invocations", "civicml_worker_invocations", worker,
                float(answered),
            )  # fmt: skip
            self._process_metrics()

    def _counter(self, name: str, labels: dict[str, str], value: float) -> None:
        self._put("counter", name, f"{name}_total", labels, float(value))

    def _histogram(
        self, name: str, labels: dict[str, str], latency: list[int], total_s: float
    ) -> None:
        edges = (-1, *_BUCKETS, len(latency) - 1)
        for le, low, high in zip(_LE, edges[:-1], edges[1:], strict=True):
            count = float(sum(latency[low + 1 : high + 1]))
            self._put("histogram", name, f"{name}_bucket", {**labels, "le": le}, count)
        self._put("histogram", name, f"{name}_sum", labels, total_s)

    def _process_metrics(self) -> None:
        for family in self._process.collect():
            kind = "counter" if family.type == "counter" else "gauge"
            for sample in family.samples:
                value = float(sample.value)
                self._put(kind, family.name, sample.name, {}, value, family.documentation)

    def _put(
        self,
        kind: str,
        metric: str,
        sample: str,
        labels: dict[str, str],
        value: float,
        documentation: str | None = None,
    ) -> None:
        key = _prometheus("mmap_dict").mmap_key(
            metric, sample, list(labels), list(labels.values()), documentation or _HELP[metric]
        )
        if self._written.get((kind, key)) == value:
            return
        self._files[kind].write_value(key, value, 0.0)
        self._written[(kind, key)] = value

    # Reading ----------------------------------------------------------------------------------
    def render(self) -> bytes:
        """Every process's metrics in the text exposition format (this one's copied first).

        Raises:
            ServiceUnavailableError: The files could not be read or written.
        """
        from prometheus_client import CollectorRegistry, generate_latest

        try:
            self.sync()
            registry = CollectorRegistry(auto_describe=False)
            _prometheus("multiprocess").MultiProcessCollector(registry, path=str(self._dir))
            return generate_latest(registry)
        except (OSError, ValueError, RuntimeError) as err:
            log.error("collecting the Prometheus metrics failed: %s", type(err).__name__)
            raise ServiceUnavailableError(
                "The server's metrics could not be collected.",
                hint="Try again; the server log says why.",
            ) from None


def content_type() -> str:
    """The media type of :meth:`MetricsExporter.render`'s format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return str(CONTENT_TYPE_LATEST)


def exposition(ctx: Context, exporter: MetricsExporter) -> bytes:
    """The metrics, for ``ctx.principal``, who needs the platform permission ``metrics.read``.

    Raises:
        PermissionDeniedError: The caller lacks ``metrics.read``.
        ServiceUnavailableError: The metrics could not be collected.
    """
    Access(ctx).require_platform("metrics.read")
    return exporter.render()


# REST ---------------------------------------------------------------------------------------------
router = APIRouter(tags=["metrics"])
Svc = Annotated[Services, Depends(services)]


@router.get(
    METRICS_PATH,
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request, svc: Svc) -> Response:
    """Prometheus metrics of every serving process (`metrics.read`; setting `server_metrics`)."""
    body = exposition(svc.ctx, request.app.state.metrics)
    return Response(body, media_type=content_type())


class MetricsLane:
    """ASGI middleware for ``server_metrics = "loopback"``: answers ``GET /metrics`` from a
    loopback client without a token, before authentication; refuses (403) any other client
    and any request a proxy forwarded. Mounted inside the guard (Host allowlist, security
    headers) and only in that mode, so no other request pays for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != METRICS_PATH:
            await self.app(scope, receive, send)
            return
        from civicml.server.auth import is_loopback

        client = scope.get("client")
        forwarded = any(key in _FORWARDED for key, _ in scope["headers"])
        if client is None or not is_loopback(client[0]) or forwarded:
            await _answer(send, 403, _refusal(), "application/json")
            return
        if scope["method"] != "GET":
            await self.app(scope, receive, send)  # the router answers 405
            return
        exporter: MetricsExporter = scope["app"].state.metrics
        try:
            body = await run_in_threadpool(exporter.render)
        except ServiceUnavailableError as err:
            await _answer(send, 503, _json(err.to_body()), "application/json")
            return
        await _answer(send, 200, body, content_type())


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()


def _refusal() -> bytes:
    return _json(
        error_body(
            403,
            'GET /metrics is open to loopback clients only (server_metrics = "loopback"), '
            "and never to a request a proxy forwarded.",
            hint='Scrape from the server\'s host, or set server_metrics = "token" and scrape '
            "with a token that has metrics.read.",
            error="PermissionDeniedError",
        )
    )


async def _answer(send: Send, status: int, body: bytes, media_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
