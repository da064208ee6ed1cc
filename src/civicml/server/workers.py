"""Several serving processes on one port: ``civicml server --workers N`` (``server_workers``).

Python runs one thread of Python at a time, so one process uses about one core. With
``--workers N`` a :class:`Supervisor` binds the port itself (:func:`bind_sockets`: listeners
made with ``IPPROTO_TCP``, so TCP_NODELAY holds on every accepted connection — uvicorn's own
``--workers`` loses it, uvicorn#3149 — and the protocol sets it again per connection), then
starts N worker processes (``spawn``: a fresh interpreter each, nothing inherited from the
supervisor but the listeners). Each worker runs the whole app under uvicorn
(``uvicorn.Server(config).run(sockets=…)``) with the same transport as one process: head and
keep-alive timeouts, connection limit, TLS.

On Linux every worker has listeners of its own in one ``SO_REUSEPORT`` group, and the kernel
spreads new connections evenly over them. With one shared accept queue (the other systems) the
worker that wakes first takes a connection, and a burst of kept-alive connections — a load
balancer's pool — often all land on one worker while the others idle. The supervisor keeps
every listener open for the life of the server: while a worker restarts, connections the kernel
gives to its listener wait for the new worker (a few seconds) and are not lost.

**What runs once.** Worker 0 is the *primary*: only it runs the loops that must run once per
server — the pipeline scheduler (which also drives the alert loop), the rollout ticker and the
abandoned-run recovery (``create_app(…, worker=Worker(0, …))``). Every worker hosts every
endpoint: each reads route changes from the database within two seconds, counts its answers in
memory and flushes them under a key of its own (``endpoint_variant_stats.source``: host, pid and
a random suffix), and writes data capture to spool files named by its pid (a dead worker's are
claimed by one live process, :func:`civicml.serving.capture.claim_spool`).

**Supervision.** A worker that dies is started again (after 1, 2, 4 … 30 seconds when it keeps
dying before it is ready); a worker that cannot start the first time stops the server (exit 3,
as one process does). SIGTERM, SIGINT or SIGHUP to the supervisor stops every worker gracefully
(uvicorn's graceful shutdown: requests in flight finish), then kills what is left after
:data:`STOP_TIMEOUT_S`. A worker whose supervisor is gone stops by itself.

**Metrics.** The supervisor makes the server's multiprocess directory for ``GET /metrics``
(:func:`civicml.server.metrics.new_metrics_dir`), marks a dead worker's live gauges dead, and
removes the directory when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from civicml.core.settings import Settings
from civicml.server.transport import bind_sockets

__all__ = ["STARTUP_FAILED", "STOP_TIMEOUT_S", "Supervisor", "Worker"]

log = logging.getLogger("civicml.server")

#: Exit code when the server (or a worker, the first time) could not start, as uvicorn's.
STARTUP_FAILED = 3
#: How long the workers get to finish gracefully once the supervisor is told to stop.
STOP_TIMEOUT_S = 30.0
_RESTART_MAX_S = 30.0
_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Worker:
    """Which serving process an app runs in.

    Args:
        index: 0 for the primary, which runs the once-per-server background loops.
        count: How many workers the server runs.
        metrics_dir: The server's multiprocess directory for ``GET /metrics`` (None: a single
            process makes its own).
    """

    index: int = 0
    count: int = 1
    metrics_dir: Path | None = None

    @property
    def primary(self) -> bool:
        """Whether this process runs the loops that must run once per server."""
        return self.index == 0


@dataclass(frozen=True)
class _Spec:
    """What a worker process needs to start (pickled to it)."""

    settings: Settings
    host: str
    port: int
    log_level: str
    worker: Worker


def _run_worker(spec: _Spec, sockets: list[socket.socket], ready: Any) -> None:
    """A worker process: the app under uvicorn on the supervisor's listeners."""
    import uvicorn

    from civicml.server.app import create_app
    from civicml.server.transport import server_config

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                ready.set()

    parent = os.getppid()
    app = create_app(spec.settings, worker=spec.worker, freeze_gc=True)
    config = server_config(
        app, spec.settings, host=spec.host, port=spec.port, log_level=spec.log_level
    )
    server = ReadyServer(config)
    threading.Thread(
        target=_watch_parent, args=(server, parent), name="civicml-parent-watch", daemon=True
    ).start()
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILED)


def _watch_parent(server: Any, parent: int) -> None:
    """Stop the worker when its supervisor is gone (killed without a chance to stop it)."""
    while not server.should_exit:
        time.sleep(1.0)
        if os.getppid() != parent:
            log.warning("the civicml server supervisor is gone; worker %d stops", os.getpid())
            server.should_exit = True


@dataclass
class _Slot:
    index: int
    sockets: list[socket.socket]
    process: Any = None
    ready: Any = None
    was_ready: bool = False  # some process of this slot became ready once
    failures: int = 0  # deaths before ready, in a row
    start_at: float = 0.0
    starts: int = 0


class Supervisor:
    """Runs ``workers`` serving processes on ``host:port`` until told to stop.

    Args:
        settings: The server's settings (each worker opens its own stores with them).
        host: Interface to listen on.
        port: TCP port.
        log_level: uvicorn's log level in the workers.
        workers: How many worker processes (2 or more).
    """

    def __init__(
        self, settings: Settings, *, host: str, port: int, log_level: str, workers: int
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._log_level = log_level
        self._count = workers
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._metrics_dir: Path | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to stop every worker and return (thread- and signal-safe)."""
        self._stop.set()

    def run(self) -> int:
        """Serve until SIGTERM, SIGINT or SIGHUP (or :meth:`stop`); the exit code: 0, or
        :data:`STARTUP_FAILED` when the port cannot be bound or a worker could not start."""
        from civicml.server.metrics import new_metrics_dir

        try:
            listeners = bind_sockets(self._host, self._port, copies=self._count)
        except OSError as err:
            log.error(
                "civicml server cannot listen on %s port %d: %s",
                self._host,
                self._port,
                err.strerror or type(err).__name__,
            )
            return STARTUP_FAILED
        self._metrics_dir = new_metrics_dir()
        slots = [_Slot(i, listeners[i]) for i in range(self._count)]
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, lambda *_: self._stop.set()) for sig in handled}
        try:
            for slot in slots:
                self._start(slot)
            return self._supervise(slots)
        finally:
            self._stop_all(slots)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in {id(s): s for slot in slots for s in slot.sockets}.values():
                sock.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _start(self, slot: _Slot) -> None:
        worker = Worker(slot.index, self._count, self._metrics_dir)
        spec = _Spec(self._settings, self._host, self._port, self._log_level, worker)
        slot.ready = self._context.Event()
        process = self._context.Process(
            target=_run_worker,
            args=(spec, slot.sockets, slot.ready),
            name=f"civicml-worker-{slot.index}",
        )
        process.start()
        slot.process = process
        slot.starts += 1

    def _supervise(self, slots: list[_Slot]) -> int:
        while not self._stop.is_set():
            wait([s.process.sentinel for s in slots if s.process is not None], timeout=_POLL_S)
            now = time.monotonic()
            for slot in slots:
                process = slot.process
                if process is not None and slot.ready.is_set():
                    slot.was_ready, slot.failures = True, 0
                if process is not None and process.exitcode is not None and not self._stop.is_set():
                    if not slot.was_ready and slot.starts == 1:
                        log.error(
                            "civicml server worker %d could not start (exit code %s); stopping",
                            slot.index,
                            process.exitcode,
                        )
                        return STARTUP_FAILED
                    self._buried(slot, now)
                if slot.process is None and now >= slot.start_at and not self._stop.is_set():
                    self._start(slot)
        return 0

    def _buried(self, slot: _Slot, now: float) -> None:
        """Account for a worker that exited; its slot starts a new one after a delay."""
        from civicml.server.metrics import mark_dead

        process = slot.process
        ready = slot.ready.is_set()
        code = process.exitcode
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        slot.failures = 0 if ready else slot.failures + 1
        delay = 0.0 if ready else min(_RESTART_MAX_S, 2.0 ** (slot.failures - 1))
        log.warning(
            "civicml server worker %d (pid %d) ended with %s; starting it again%s",
            slot.index,
            process.pid,
            how,
            f" in {delay:.0f} s" if delay else "",
        )
        if self._metrics_dir is not None:
            mark_dead(self._metrics_dir, process.pid)
        process.close()
        slot.process, slot.start_at = None, now + delay

    def _stop_all(self, slots: list[_Slot]) -> None:
        """SIGTERM to every worker (graceful), then SIGKILL after :data:`STOP_TIMEOUT_S`."""
        running = [s.process for s in slots if s.process is not None]
        for process in running:
            if process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in running:
            if process.exitcode is None:
                log.warning("civicml server worker pid %d did not stop; killing it", process.pid)
                process.kill()
                process.join(5)
