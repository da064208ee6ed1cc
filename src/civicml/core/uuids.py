"""Random version-4 UUID strings for inference and request ids, without a system call each.

``str(uuid.uuid4())`` reads 16 bytes from ``os.urandom`` (a system call), builds a ``UUID`` and
formats it: a few microseconds, twice on every captured invocation. :func:`uuid4_str` answers
the same strings — 122 bits from the operating system's random source, the version nibble 4 and
the RFC 4122 variant — from a buffer of ``os.urandom`` bytes refilled every 256 ids. A forked
process starts with an empty buffer, so no two processes hand out the same ids.
"""

from __future__ import annotations

import os
import threading

__all__ = ["uuid4_str"]

_IDS_PER_FILL = 256
_VARIANT = "89ab"  # the hex digit of RFC 4122's variant bits 10xx


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buffer = b""
        self.at = 0

    def reset(self) -> None:
        self.lock = threading.Lock()  # a lock held by another thread at fork stays held
        self.buffer = b""
        self.at = 0


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.reset)


def uuid4_str() -> str:
    """A random UUID (version 4) as ``str(uuid.uuid4())`` formats it.

    Example:
        >>> import uuid
        >>> uuid.UUID(uuid4_str()).version
        4
    """
    pool = _POOL
    with pool.lock:
        at = pool.at
        if at >= len(pool.buffer):
            pool.buffer = os.urandom(16 * _IDS_PER_FILL)
            at = 0
        pool.at = at + 16
        h = pool.buffer[at : at + 16].hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
