"""Per-variant counters: invocations, 4xx and 5xx answers, and a latency histogram.

A model host counts every answer of every variant in memory (:class:`VariantCounters`: a few
integer additions and one :func:`bisect.bisect_left` under the host's counter lock, no I/O on
the request path) and :func:`flush_counters` writes its *cumulative* totals to
``endpoint_variant_stats`` under a key of its own (``source``: host, process id and a random
suffix). A flush replaces that process's row, so flushing twice never counts twice and a
process that dies loses only what it had not flushed; the sum over the rows of a variant is its
total across every serving process (:func:`read_totals`). Guarded rollouts evaluate their alarms
on these totals, minus the totals the new variant had when the rollout started.

Latency is the time from the host receiving the records to the answer being ready (the
model's latency, SageMaker's ``ModelLatency``; HTTP parsing and the network are not in it),
counted in :data:`LATENCY_BOUNDS_MS` buckets about 26 % wide. A quantile is reported as the
upper bound of the bucket that holds it, so ``p99_ms`` is never under the true p99 and at most
26 % over it.

The same counters, with the names of their project, endpoint and variant and the sum of the
latencies, are what ``GET /metrics`` exports (:meth:`VariantCounters.sample`, read by
:mod:`civicml.server.metrics` in a thread of its own, never on the request path).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from civicml.serving._tables import endpoint_variant_stats
from civicml.store.db import UnitOfWork

__all__ = [
    "LATENCY_BOUNDS_MS",
    "Totals",
    "VariantCounters",
    "VariantSample",
    "flush_counters",
    "quantile_ms",
    "read_totals",
]

#: Upper bounds of the latency buckets (ms): 0.01 ms to 100 s, ten per decade; one more bucket
#: holds everything slower.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(0.01 * 10 ** (i / 10) for i in range(71))
_BOUNDS_NS: tuple[float, ...] = tuple(b * 1e6 for b in LATENCY_BOUNDS_MS)
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1


@dataclass(frozen=True, slots=True)
class VariantSample:
    """One variant's cumulative counts in this process, with the names an exporter labels
    them by (project, endpoint, variant)."""

    project: str
    endpoint: str
    variant: str
    invocations: int
    errors_4xx: int
    errors_5xx: int
    latency: tuple[int, ...]
    latency_sum_ns: int


@dataclass(slots=True)
class VariantCounters:
    """What one process counted for one variant since it started (mutated under a lock)."""

    endpoint_id: str
    #: (project, endpoint, variant) names, for :meth:`sample`.
    names: tuple[str, str, str] = ("", "", "")
    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    latency_sum_ns: int = 0

    def answered(self, latency_ns: int) -> None:
        """Count one answered request that took ``latency_ns``."""
        self.invocations += 1
        self.latency_sum_ns += latency_ns
        self.latency[bisect.bisect_left(_BOUNDS_NS, latency_ns)] += 1

    def snapshot(self) -> tuple[int, int, int, tuple[int, ...]]:
        return self.invocations, self.errors_4xx, self.errors_5xx, tuple(self.latency)

    def sample(self) -> VariantSample:
        """The counts with their names (call under the lock that guards the counters)."""
        return VariantSample(
            *self.names,
            invocations=self.invocations,
            errors_4xx=self.errors_4xx,
            errors_5xx=self.errors_5xx,
            latency=tuple(self.latency),
            latency_sum_ns=self.latency_sum_ns,
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """A variant's counts (over every process, or the difference of two such totals)."""

    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    latency: tuple[int, ...] = (0,) * _BUCKETS

    @property
    def requests(self) -> int:
        """Every request the variant saw: answered, refused (4xx) or failed (5xx)."""
        return self.invocations + self.errors_4xx + self.errors_5xx

    def rate(self, what: str) -> float:
        """``errors_4xx``, ``errors_5xx`` or both (``errors``) over :attr:`requests`; 0 when
        there were none."""
        count = {
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "errors": self.errors_4xx + self.errors_5xx,
        }[what]
        return count / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of the answered requests' latency (ms); None without any."""
        return quantile_ms(self.latency, q)

    def minus(self, earlier: Totals) -> Totals:
        """What was counted after ``earlier`` (both cumulative)."""
        return Totals(
            invocations=max(0, self.invocations - earlier.invocations),
            errors_4xx=max(0, self.errors_4xx - earlier.errors_4xx),
            errors_5xx=max(0, self.errors_5xx - earlier.errors_5xx),
            latency=tuple(
                max(0, a - b) for a, b in zip(self.latency, _padded(earlier.latency), strict=True)
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "invocations": self.invocations,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "latency": list(self.latency),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Totals:
        if not value:
            return cls()
        return cls(
            invocations=int(value.get("invocations", 0)),
            errors_4xx=int(value.get("errors_4xx", 0)),
            errors_5xx=int(value.get("errors_5xx", 0)),
            latency=_padded(value.get("latency") or ()),
        )


def _padded(counts: Iterable[int]) -> tuple[int, ...]:
    values = [int(c) for c in counts][:_BUCKETS]
    return tuple(values + [0] * (_BUCKETS - len(values)))


def quantile_ms(latency: Iterable[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a latency histogram, as its bucket's upper bound (ms);
    ``inf`` when it falls in the overflow bucket, None for an empty histogram."""
    counts = list(latency)
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else math.inf
    return math.inf  # pragma: no cover - the loop reaches total


def flush_counters(
    uow: UnitOfWork,
    source: str,
    counters: Mapping[str, tuple[str, tuple[int, int, int, tuple[int, ...]]]],
    now: datetime,
) -> None:
    """Write ``{variant id: (endpoint id, snapshot)}`` as this ``source``'s cumulative rows."""
    conn = uow.conn
    for variant_id, (endpoint_id, (calls, e4, e5, latency)) in counters.items():
        values = {
            "invocations": calls,
            "errors_4xx": e4,
            "errors_5xx": e5,
            "latency": list(latency),
            "updated_at": now,
        }
        done = conn.execute(
            update(endpoint_variant_stats)
            .where(
                endpoint_variant_stats.c.variant_id == variant_id,
                endpoint_variant_stats.c.source == source,
            )
            .values(**values)
        )
        if done.rowcount == 0:
            conn.execute(
                insert(endpoint_variant_stats).values(
                    variant_id=variant_id, source=source, endpoint_id=endpoint_id, **values
                )
            )


def read_totals(conn: Connection, variant_ids: Iterable[str]) -> dict[str, Totals]:
    """Each variant's counts summed over every process that flushed them."""
    ids = list(variant_ids)
    found: dict[str, list[Any]] = {v: [] for v in ids}
    if ids:
        rows = conn.execute(
            select(endpoint_variant_stats).where(endpoint_variant_stats.c.variant_id.in_(ids))
        ).all()
        for row in rows:
            found[row.variant_id].append(row)
    totals = {}
    for variant_id, rows in found.items():
        latency = [0] * _BUCKETS
        for row in rows:
            for index, count in enumerate(_padded(row.latency or ())):
                latency[index] += count
        totals[variant_id] = Totals(
            invocations=sum(int(r.invocations) for r in rows),
            errors_4xx=sum(int(r.errors_4xx) for r in rows),
            errors_5xx=sum(int(r.errors_5xx) for r in rows),
            latency=tuple(latency),
        )
    return totals
