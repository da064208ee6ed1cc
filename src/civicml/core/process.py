"""Is a process still the one we saw? (pid plus its start tick, so a reused pid is not mistaken)."""

from __future__ import annotations

import functools
import os
import socket

__all__ = ["hostname", "process_alive", "process_identity", "process_start", "usable_cpus"]


def hostname() -> str:
    return socket.gethostname()


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity where the platform has one (a container
    or ``taskset`` limits it), else the machine's count."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start: int | None = None) -> bool:
    """True when ``pid`` runs and, if ``start`` is given, is the same process as then."""
    if pid == os.getpid():
        return start is None or process_start(pid) in (None, start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is None:
        return True
    current = process_start(pid)
    return current is None or current == start


def process_identity(track: bool = True) -> tuple[str, int | None, int | None]:
    """(host, pid, start tick) of this process, as a run records it; without ``track`` the run
    is not tied to this process (pid and start are None) and only heartbeats count."""
    if not track:
        return hostname(), None, None
    pid = os.getpid()
    return hostname(), pid, _own_start(pid)


@functools.cache
def _own_start(pid: int) -> int | None:
    """This process's start tick (keyed by pid: a forked child reads its own)."""
    return process_start(pid)
