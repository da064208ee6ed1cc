"""Where work runs: threads in this process, or tasks on a Ray cluster (``compute`` setting).

Pipelines (independent steps), tuning (trials) and batch prediction (chunks) hand work to an
:class:`Executor` and wait on the :class:`concurrent.futures.Future` it returns, so each of them
is written once for both:

* ``compute = "local"`` (the default) — :class:`LocalExecutor`, a thread pool in this process.
* ``compute = "ray"`` — :class:`RayExecutor` on a local cluster: the one ``ray start`` runs on
  this machine (``address="auto"``), else a new one started for this process.
* ``compute = "ray://head:10001"`` — a remote cluster through the Ray client.

The coordinator keeps the bookkeeping (runs, step states, the Optuna study); a task gets plain
data plus the function to call, and a worker reaches the stores itself from the settings (see
``civicml.store.context.worker_context``). Ray pickles the function with cloudpickle — that is
the user's code, shipped by the user; values between steps still travel through the artifact
store as JSON or Parquet.

Ray is an optional extra (``pip install 'civicml[ray]'``); without it a Ray setting fails with
:class:`~civicml.core.errors.ConfigurationError` when work is first handed out.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import threading
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from civicml.core.errors import ConfigurationError

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "check_compute",
    "executor_for",
    "import_ray",
    "worker_info",
]

RAY_HINT = "pip install 'civicml[ray]'"
_LOCK = threading.Lock()


def check_compute(value: str) -> str:
    """``local``, ``ray`` or ``ray://host:port``; raises ValueError naming the value otherwise."""
    text = value.strip()
    if text.lower() in ("local", "ray"):
        return text.lower()
    if text.lower().startswith("ray://"):
        rest = text[len("ray://") :]
        host, sep, port = rest.rpartition(":")
        if sep and host and port.isdigit() and "/" not in rest:
            return "ray://" + rest
    raise ValueError(
        f"{value!r} is not a compute backend; use 'local' (threads in this process), 'ray' (a "
        "local Ray cluster) or 'ray://host:port' (a Ray cluster through the Ray client)"
    )


class Executor(Protocol):
    """Runs functions somewhere and hands back futures."""

    #: Whether the work leaves this process (arguments and results must be plain data).
    remote: bool
    #: ``local`` or ``ray``.
    name: str

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Start ``fn(*args, **kwargs)``; its future holds the result or the exception."""
        ...

    def wait_any(self, futures: Collection[Future[Any]]) -> set[Future[Any]]:
        """Block until at least one of ``futures`` is done; the done ones."""
        ...

    def close(self) -> None:
        """Wait for what runs and release the executor."""
        ...


class LocalExecutor:
    """Threads in this process (``compute = "local"``)."""

    remote = False
    name = "local"

    def __init__(self, max_workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="civicml-work")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._pool.submit(fn, *args, **kwargs)

    def wait_any(self, futures: Collection[Future[Any]]) -> set[Future[Any]]:
        return wait(futures, return_when=FIRST_COMPLETED).done

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def import_ray() -> Any:
    """The ``ray`` module, or the error that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ConfigurationError(
            "CIVICML_COMPUTE=ray needs Ray: pip install 'civicml[ray]'",
            hint=f"Install the extra ({RAY_HINT}), or set compute = 'local' to run in this "
            "process.",
        ) from err
    return ray


_IN_TASK = threading.local()


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What every Ray task runs: the function shipped with it."""
    _IN_TASK.ray = True
    try:
        return fn(*args, **kwargs)
    finally:
        _IN_TASK.ray = False


@functools.cache
def _remote_call(ray: Any) -> Any:
    return ray.remote(_call)


class _RayFuture(Future[Any]):
    """A task's result; ``result()`` is ``ray.get``, which inside a Ray task lends the waiting
    task's CPU back to the cluster while it blocks (nested work cannot starve)."""

    def __init__(self, ray: Any, ref: Any) -> None:
        super().__init__()
        self._ray = ray
        self.ref = ref
        ref.future().add_done_callback(self._settle)

    def _settle(self, done: Future[Any]) -> None:
        error = done.exception()
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(done.result())

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._ray.get(self.ref, timeout=timeout)  # blocks the Ray way; settles this future
        return super().result(timeout=None if self.done() else timeout)


class RayExecutor:
    """Tasks on a Ray cluster (``compute = "ray"`` or ``"ray://host:port"``).

    Connects on first use, once per process: inside a Ray worker the worker's own connection is
    used, so a step running on the cluster can hand out trials or chunks in turn.

    Args:
        address: ``"ray"`` (a cluster running on this machine, else a new local one) or
            ``"ray://host:port"`` (the Ray client).
        num_cpus: CPUs each task reserves.
    """

    remote = True
    name = "ray"

    def __init__(self, address: str = "ray", *, num_cpus: float = 1) -> None:
        self._ray = import_ray()
        self._num_cpus = num_cpus
        connect(self._ray, address)
        self._task = _remote_call(self._ray).options(num_cpus=num_cpus)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        ref = self._task.remote(fn, args, kwargs)
        return _RayFuture(self._ray, ref)

    def wait_any(self, futures: Collection[Future[Any]]) -> set[Future[Any]]:
        """``ray.wait``: inside a Ray task (a pipeline step handing out trials or chunks) the
        waiting task lends its CPU back to the cluster, so a 1-CPU cluster cannot deadlock."""
        by_ref = {f.ref: f for f in futures if isinstance(f, _RayFuture)}
        ready, _ = self._ray.wait(list(by_ref), num_returns=1)
        return {by_ref[ref] for ref in ready}

    def close(self) -> None:
        """Nothing to release: the connection stays for the process's next executor."""

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(ray: Any, address: str) -> None:
    """Connect this process to the cluster ``address`` names, unless it already is."""
    with _LOCK:
        if ray.is_initialized():
            return
        common = {"logging_level": "WARNING", "log_to_driver": True}
        if address.startswith("ray://"):
            try:
                ray.init(address=address, **common)
            except ImportError as err:  # the client needs grpcio
                raise ConfigurationError(
                    f"CIVICML_COMPUTE={address} needs the Ray client: pip install 'civicml[ray]'",
                    hint="The 'ray' extra installs ray[client]; or run on the cluster with "
                    "compute = 'ray'.",
                ) from err
            except ConnectionError as err:
                raise ConfigurationError(
                    f"No Ray cluster answers at {address}: {err}",
                    hint="Start it with 'ray start --head --ray-client-server-port=10001', or "
                    "check the address.",
                ) from err
            return
        try:
            ray.init(address="auto", **common)
        except ConnectionError as err:
            if os.environ.get("RAY_ADDRESS"):  # a cluster was named: never start another
                raise ConfigurationError(
                    f"No Ray cluster answers at RAY_ADDRESS={os.environ['RAY_ADDRESS']}: {err}",
                    hint="Start it ('ray start --head'), or unset RAY_ADDRESS to have civicml "
                    "start a local cluster for this process.",
                ) from err
            ray.init(include_dashboard=False, **common)  # none on this machine: start one


def executor_for(compute: str, *, max_workers: int = 4) -> LocalExecutor | RayExecutor:
    """The executor the ``compute`` setting names."""
    if compute == "local":
        return LocalExecutor(max_workers)
    return RayExecutor(compute)


def worker_info() -> dict[str, Any]:
    """Where this code runs: ``executor`` (local or ray), ``host``, ``pid`` and, on Ray, the
    ``node_id`` — recorded on runs so each step and trial says where it ran."""
    info: dict[str, Any] = {"executor": "local", "host": socket.gethostname(), "pid": os.getpid()}
    if getattr(_IN_TASK, "ray", False):
        ray = sys.modules["ray"]
        info["executor"] = "ray"
        with contextlib.suppress(Exception):  # the node id is provenance, never a failure
            info["node_id"] = ray.get_runtime_context().get_node_id()
    return info
