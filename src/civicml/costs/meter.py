"""Measuring one piece of work: wall time, CPU seconds, peak memory and GPU-seconds.

``with measure() as m: ...`` measures what the calling thread does until the block ends; the
pipeline step runner, ``cm.train.*`` and each tuning trial wrap their work in it and record
``m.usage`` on their run. What each figure means, and why it is measured this way:

- **CPU seconds** are the calling thread's own CPU clock (``CLOCK_THREAD_CPUTIME_ID``), not the
  process's: independent pipeline steps and parallel tuning trials run in threads of one
  process, and each must be charged only its own work. A training script (script mode) runs in
  a subprocess whose exact CPU time and peak memory come from ``wait4`` when it ends
  (:meth:`Measurement.add_subprocess`). Native thread pools a library starts (LightGBM or a
  forest with ``n_jobs=-1``, multi-threaded BLAS) are not in the thread's clock: civicml's
  built-in algorithms default to ``n_jobs=1``, so built-in training is measured in full;
  multi-threaded training measured exactly belongs in script mode.
- **Memory**: the process's resident memory, sampled (``/proc/self/statm``) every
  :data:`SAMPLE_INTERVAL_S` while any work is measured, and at the start and end of each piece.
  ``peak_memory_bytes`` is the process's peak while the work ran (plus a script's own peak);
  ``memory_gb_s`` integrates resident GB over time, shared equally among the pieces of work
  measured at the same moment, so concurrent steps are not each charged the whole process.
- **GPU-seconds**: with ``nvidia-ml-py`` installed and a device present, each sample asks NVML
  which devices hold a compute context of this process (or of a watched script subprocess);
  each such device counts one GPU-second per second, shared like memory. Without NVML the
  figure is 0 and nothing is loaded.
- **Nesting**: a measurement started inside another on the same thread pauses the outer one
  until it ends, so the outer one is charged only its own part and a project's total never
  counts the same second twice.

The cost: two clock reads, one ``statm`` read and a lock at each start and end (microseconds),
and one background sampler thread that sleeps whenever nothing is measured.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "SAMPLE_INTERVAL_S",
    "GpuReader",
    "Measurement",
    "Meter",
    "Usage",
    "current",
    "measure",
]

#: How often the sampler reads resident memory (and GPU use) while work is measured.
SAMPLE_INTERVAL_S = 0.2
_GB = 1e9


@dataclass(frozen=True, slots=True)
class Usage:
    """What a piece of work used. Adding two sums every figure but the peak (the larger)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_memory_bytes: int = 0
    memory_gb_s: float = 0.0
    gpu_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            wall_s=self.wall_s + other.wall_s,
            cpu_s=self.cpu_s + other.cpu_s,
            peak_memory_bytes=max(self.peak_memory_bytes, other.peak_memory_bytes),
            memory_gb_s=self.memory_gb_s + other.memory_gb_s,
            gpu_s=self.gpu_s + other.gpu_s,
        )


class GpuReader(Protocol):
    """Which processes hold a compute context on a GPU now (NVML, or a test's stand-in)."""

    def devices_in_use(self, pids: Collection[int]) -> dict[int, int]:
        """For each of ``pids`` that uses a GPU, how many devices it uses."""
        ...


class _NvmlReader:
    """:class:`GpuReader` over NVML (``pynvml`` from the ``nvidia-ml-py`` package)."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    def devices_in_use(self, pids: Collection[int]) -> dict[int, int]:
        wanted = set(pids)
        found: dict[int, int] = {}
        for handle in self._handles:
            try:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:  # a device gone or a driver hiccup: no use seen this sample
                procs = []
            for pid in {p.pid for p in procs} & wanted:
                found[pid] = found.get(pid, 0) + 1
        return found


def nvml_reader() -> GpuReader | None:
    """An NVML reader when ``pynvml`` imports and at least one device is present, else None."""
    try:
        import pynvml  # type: ignore[import-not-found]  # nvidia-ml-py: optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    except Exception:  # no driver, no device: no GPU figures
        return None
    return _NvmlReader(pynvml, handles) if handles else None


def _statm_reader() -> Any:
    """Current resident bytes of this process (Linux ``/proc/self/statm``; elsewhere the peak
    so far from ``getrusage``, the best a portable call gives)."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    if os.path.exists("/proc/self/statm"):

        def read() -> int:
            with open("/proc/self/statm", "rb") as handle:
                return int(handle.read().split()[1]) * page

        return read
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux

    def peak() -> int:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale

    return peak


@dataclass(eq=False, slots=True)
class Measurement:
    """One piece of work being measured (made by :func:`measure`; read ``usage`` after)."""

    meter: Meter
    thread: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    memory_gb_s: float = 0.0
    gpu_s: float = 0.0
    peak_memory_bytes: int = 0
    child_peak_bytes: int = 0
    watched: set[int] = field(default_factory=set)
    paused: bool = False
    ended: bool = False
    _wall0: float = 0.0
    _cpu0: float = 0.0

    @property
    def usage(self) -> Usage:
        """The figures so far (final once the ``with`` block has ended)."""
        return Usage(
            wall_s=self.wall_s,
            cpu_s=self.cpu_s,
            peak_memory_bytes=self.peak_memory_bytes + self.child_peak_bytes,
            memory_gb_s=self.memory_gb_s,
            gpu_s=self.gpu_s,
        )

    def add_subprocess(self, *, cpu_s: float, max_rss_bytes: int, wall_s: float) -> None:
        """Charge a finished subprocess (script mode): its exact CPU time, and its peak memory
        held for its whole wall time (an upper bound: only its peak is known)."""
        with self.meter._lock:
            self.cpu_s += max(0.0, cpu_s)
            self.child_peak_bytes = max(self.child_peak_bytes, max_rss_bytes)
            self.memory_gb_s += max(0, max_rss_bytes) / _GB * max(0.0, wall_s)

    @contextlib.contextmanager
    def watching(self, pid: int) -> Iterator[None]:
        """Count the GPU use of subprocess ``pid`` for this work while the block runs."""
        with self.meter._lock:
            self.watched.add(pid)
        try:
            yield
        finally:
            with self.meter._lock:
                self.watched.discard(pid)


class Meter:
    """The process-wide bookkeeping behind :func:`measure` (one per process: :data:`METER`).

    Args:
        rss: Returns the process's resident bytes now.
        gpu: The GPU reader; ``"auto"`` looks for NVML on first use, ``None`` turns GPUs off.
        thread_clock: The calling thread's CPU seconds (injected by tests).
        clock: Monotonic seconds (injected by tests).
        interval_s: Sampling interval; ``None`` starts no sampler (tests call :meth:`sample`).
    """

    def __init__(
        self,
        *,
        rss: Any = None,
        gpu: GpuReader | str | None = "auto",
        thread_clock: Any = time.thread_time,
        clock: Any = time.monotonic,
        interval_s: float | None = SAMPLE_INTERVAL_S,
    ) -> None:
        self._rss = rss or _statm_reader()
        self._gpu_setting = gpu
        self._gpu: GpuReader | None = None
        self._gpu_probed = gpu != "auto"
        if gpu != "auto":
            self._gpu = gpu  # type: ignore[assignment]
        self._thread_clock = thread_clock
        self._clock = clock
        self._interval = interval_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._open: list[Measurement] = []
        self._last = clock()
        self._sampler: threading.Thread | None = None
        self._local = threading.local()
        self._pid = os.getpid()

    # Starting and ending ------------------------------------------------------------------
    def start(self) -> Measurement:
        """Begin measuring the calling thread's work (pausing its enclosing measurement)."""
        stack = self._stack()
        rss = self._read_rss()
        with self._lock:
            self._advance(rss)
            if stack:
                self._pause(stack[-1])
            m = Measurement(self, threading.get_ident())
            m.peak_memory_bytes = rss
            m._wall0, m._cpu0 = self._clock(), self._thread_clock()
            self._open.append(m)
            self._ensure_sampler()
        stack.append(m)
        return m

    def end(self, m: Measurement) -> Usage:
        """Stop measuring ``m`` (and resume the measurement it paused); returns its usage."""
        if m.ended:
            return m.usage
        stack = self._stack()
        rss = self._read_rss()
        with self._lock:
            self._advance(rss)
            self._pause(m)
            m.ended = True
            self._open.remove(m)
            if stack and stack[-1] is m:
                stack.pop()
                if stack:
                    self._resume(stack[-1])
            elif m in stack:
                stack.remove(m)
        return m.usage

    def current(self) -> Measurement | None:
        """The innermost measurement of the calling thread, if any."""
        stack = self._stack()
        return stack[-1] if stack else None

    # Sampling -----------------------------------------------------------------------------
    def sample(self) -> None:
        """Read memory (and GPU use) now and share the time since the last reading."""
        rss = self._read_rss()
        with self._lock:
            self._advance(rss)

    def _advance(self, rss: int) -> None:
        """Share ``now - last`` among the running measurements (call with the lock held)."""
        now = self._clock()
        dt = max(0.0, now - self._last)
        self._last = now
        if not self._open:
            return
        for m in self._open:
            m.peak_memory_bytes = max(m.peak_memory_bytes, rss)
        running = [m for m in self._open if not m.paused]
        if not running or dt == 0.0:
            return
        share = dt / len(running)
        gpus = self._gpu_devices(running)
        own = gpus.get(self._pid, 0)
        for m in running:
            m.memory_gb_s += rss / _GB * share
            m.gpu_s += own * share + sum(gpus.get(pid, 0) for pid in m.watched) * dt

    def _gpu_devices(self, running: list[Measurement]) -> dict[int, int]:
        if not self._gpu_probed:
            self._gpu_probed = True
            self._gpu = nvml_reader()
        if self._gpu is None:
            return {}
        pids = {self._pid}.union(*(m.watched for m in running))
        try:
            return self._gpu.devices_in_use(pids)
        except Exception:  # never fail the work because a GPU reading failed
            return {}

    def _pause(self, m: Measurement) -> None:
        if m.paused:
            return
        m.wall_s += max(0.0, self._clock() - m._wall0)
        if m.thread == threading.get_ident():
            m.cpu_s += max(0.0, self._thread_clock() - m._cpu0)
        m.paused = True

    def _resume(self, m: Measurement) -> None:
        m._wall0, m._cpu0 = self._clock(), self._thread_clock()
        m.paused = False

    def _read_rss(self) -> int:
        try:
            return int(self._rss())
        except (OSError, ValueError, IndexError):
            return 0

    def _stack(self) -> list[Measurement]:
        stack: list[Measurement] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _ensure_sampler(self) -> None:
        if self._interval is None:
            return
        if self._sampler is not None and self._sampler.is_alive():
            if len(self._open) == 1:  # it waits for work: wake it (it samples on its own else)
                self._wake.notify()
            return
        self._sampler = threading.Thread(target=self._run, name="civicml-meter", daemon=True)
        self._sampler.start()

    def _run(self) -> None:
        interval = self._interval or SAMPLE_INTERVAL_S
        while True:
            with self._lock:
                while not self._open:
                    self._wake.wait()
                self._wake.wait(timeout=interval)
            self.sample()


#: The process's meter.
METER = Meter()


@contextlib.contextmanager
def measure(meter: Meter | None = None) -> Iterator[Measurement]:
    """Measure the calling thread's work inside the block.

    Example:
        >>> with measure() as m:
        ...     total = sum(range(100_000))
        >>> m.usage.wall_s > 0 and m.usage.cpu_s >= 0
        True
    """
    chosen = meter or METER
    m = chosen.start()
    try:
        yield m
    finally:
        chosen.end(m)


def current() -> Measurement | None:
    """The calling thread's innermost measurement (where a subprocess reports), if any."""
    return METER.current()
