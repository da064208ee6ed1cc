"""The cache of loaded models of a multi-model endpoint: load on first use, least recently used
out first, under a memory limit (SageMaker multi-model endpoints unload unused models under
memory pressure in the same way).

Why it is shaped so:

- *Sizes are estimates.* A model's weight is the size of its files (what the registry's manifest
  says), known before it is loaded, so room is made *before* a load — the process does not
  first grow past the limit and then shrink. A model bigger than the whole limit is still
  served, alone: refusing it would make the endpoint useless for it, and the limit is a target
  for the sum, not a promise about one model.
- *One load per model.* Concurrent first requests for the same model wait on one per-model lock;
  the first loads it, the others find it loaded (a hit). Requests for other models never wait
  on that load.
- *Eviction never fails a request.* The cache only drops its reference; a request in flight
  holds the model it started with until it answers, and the memory goes when the last one ends.
- *A refused load is not remembered.* A model whose files fail their check is refused for the
  request that asked and counted (``load_failures``); the next request tries again (the files
  may have been restored), and nothing of it stays in the cache.

The hot path (:meth:`ModelCache.peek`) is one dict look-up and a move-to-end under a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["CacheCounters", "ModelCache"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheCounters:
    """A snapshot of a :class:`ModelCache`: its limit, use, keys (LRU first) and counters."""

    limit_bytes: int
    used_bytes: int
    loaded: tuple[str, ...]
    hits: int
    loads: int
    evictions: int
    load_failures: int


class ModelCache(Generic[V]):
    """An LRU map of loaded models whose summed sizes stay under ``limit_bytes``.

    Args:
        limit_bytes: The most bytes (summed model sizes) held at once.

    Example:
        >>> cache: ModelCache[str] = ModelCache(100)
        >>> cache.get("a", 60, lambda: "model a")
        'model a'
        >>> cache.get("b", 60, lambda: "model b")  # a is unloaded to make room
        'model b'
        >>> cache.counters().loaded, cache.counters().evictions
        (('b',), 1)
    """

    def __init__(self, limit_bytes: int) -> None:
        self._limit = max(0, int(limit_bytes))
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        #: One lock per key (kept while the key may be asked for: at most the endpoint's
        #: models), so every load of a key waits for the one in progress.
        self._loading: dict[str, threading.Lock] = {}
        self._hits = self._loads = self._evictions = self._failures = 0

    @property
    def limit_bytes(self) -> int:
        """The limit now."""
        return self._limit

    def peek(self, key: str, *, count: bool = True) -> V | None:
        """The loaded model of ``key`` (with ``count``: counted as a hit and made most recent),
        or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if count:
                self._entries.move_to_end(key)
                self._hits += 1
            return found[0]

    def get(self, key: str, size: int, load: Callable[[], V]) -> V:
        """The model of ``key``: the loaded one, or ``load()`` once (room made first).

        Raises:
            Exception: Whatever ``load`` raises (counted in ``load_failures``; nothing cached).
        """
        found = self.peek(key)
        if found is not None:
            return found
        with self._lock:
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:
            found = self.peek(key)  # a concurrent first request loaded it meanwhile
            if found is not None:
                return found
            with self._lock:
                self._make_room(max(0, size), keep=None)
            try:
                value = load()
            except BaseException:
                with self._lock:
                    self._failures += 1
                raise
            with self._lock:
                old = self._entries.pop(key, None)  # never: loads of a key hold its lock
                if old is not None:
                    self._used -= old[1]
                self._entries[key] = (value, max(0, size))
                self._used += max(0, size)
                self._loads += 1
                self._make_room(0, keep=key)
            return value

    def discard(self, keep: Iterable[str]) -> None:
        """Unload every model whose key is not in ``keep`` (models removed from the endpoint);
        not counted as evictions."""
        wanted = set(keep)
        with self._lock:
            for key in [k for k in self._entries if k not in wanted]:
                self._used -= self._entries.pop(key)[1]
            for key in [k for k in self._loading if k not in wanted]:
                del self._loading[key]

    def resize(self, limit_bytes: int) -> None:
        """Change the limit, unloading least recently used models beyond a smaller one."""
        with self._lock:
            self._limit = max(0, int(limit_bytes))
            self._make_room(0, keep=None)

    def clear(self) -> None:
        """Unload everything (the endpoint was deleted or the host closes)."""
        with self._lock:
            self._entries.clear()
            self._loading.clear()
            self._used = 0

    def counters(self) -> CacheCounters:
        """Limit, use, loaded keys (least recently used first) and counters."""
        with self._lock:
            return CacheCounters(
                limit_bytes=self._limit,
                used_bytes=self._used,
                loaded=tuple(self._entries),
                hits=self._hits,
                loads=self._loads,
                evictions=self._evictions,
                load_failures=self._failures,
            )

    def _make_room(self, incoming: int, *, keep: str | None) -> None:
        """Unload least recently used models (never ``keep``) until ``incoming`` more bytes
        fit under the limit, or nothing else is left (called with ``self._lock`` held)."""
        while self._used + incoming > self._limit:
            victim = next((k for k in self._entries if k != keep), None)
            if victim is None:
                return
            self._used -= self._entries.pop(victim)[1]
            self._evictions += 1
