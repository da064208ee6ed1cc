"""The values alert conditions compare: endpoint metrics over a window, and report metrics.

**Endpoint metrics.** Serving processes write their *cumulative* per-variant counters to
``endpoint_variant_stats`` (one row per variant and process, replaced at each flush:
:mod:`civicml.serving.stats`). A cumulative counter says nothing about the last five minutes,
so :func:`sample` copies each row, keyed by the time its process flushed it, into
``alert_metric_samples`` (samplers on several processes insert the same key once). The counts of
a window ``(now - window, now]`` are then, per row, the latest sample minus the latest sample at
or before the window's start (none: the process started within the window, so zero), summed
over the rows — what Prometheus' ``increase()`` does. Sampling began at a recorded instant
(``alert_cursors``, ``sampler``); a window reaching further back starts there instead, so counts
made before anything sampled them are never attributed to a window. Latency quantiles come from
the difference of the rows' histograms (bucket upper bounds, at most 26 % over the truth).

**Monitoring metrics** are read from the latest stored report in the window (per subject: the
dataset it checked): its summary's fields, or one column's result from its ``report.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from civicml.alerts._tables import alert_cursors, alert_metric_samples
from civicml.serving._tables import endpoint_variant_stats
from civicml.serving.stats import Totals
from civicml.store.db import MetadataStore, UnitOfWork

__all__ = [
    "SAMPLER_CURSOR",
    "endpoint_values",
    "prune",
    "report_value",
    "sample",
    "window_totals",
]

SAMPLER_CURSOR = "sampler"


def _insert(conn: Connection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def sample(db: MetadataStore, now: datetime) -> int:
    """Copy every counter row serving has flushed into the samples (once per flush); record
    when sampling began. Returns how many new samples were stored (a pass with nothing new
    writes nothing)."""
    s = alert_metric_samples
    with db.read() as conn:
        began = conn.execute(
            select(alert_cursors.c.at).where(alert_cursors.c.name == SAMPLER_CURSOR)
        ).scalar()
        rows = conn.execute(select(endpoint_variant_stats)).all()
        latest = {
            (v, src): at
            for v, src, at in conn.execute(
                select(s.c.variant_id, s.c.source, func.max(s.c.at)).group_by(
                    s.c.variant_id, s.c.source
                )
            ).all()
        }
    fresh = [
        r
        for r in rows
        if latest.get((r.variant_id, r.source)) is None
        or latest[(r.variant_id, r.source)] < r.updated_at
    ]
    if began is not None and not fresh:
        return 0
    added = 0
    with db.write() as uow:
        conn = uow.conn
        if began is None:
            conn.execute(
                _insert(conn, alert_cursors)
                .values(name=SAMPLER_CURSOR, at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
        for row in fresh:
            done = conn.execute(
                _insert(conn, s)
                .values(
                    variant_id=row.variant_id,
                    source=row.source,
                    at=row.updated_at,
                    endpoint_id=row.endpoint_id,
                    invocations=int(row.invocations),
                    errors_4xx=int(row.errors_4xx),
                    errors_5xx=int(row.errors_5xx),
                    latency=list(row.latency or []),
                )
                .on_conflict_do_nothing(index_elements=["variant_id", "source", "at"])
                .returning(s.c.at)  # rowcount is not kept for an INSERT on psycopg
            ).first()
            added += done is not None
    return added


def prune(uow: UnitOfWork, before: datetime) -> int:
    """Delete samples older than ``before``, but keep each counter row's latest one at or
    before it (the baseline of a window starting later). Returns how many were deleted."""
    s = alert_metric_samples
    conn = uow.conn
    keep = (
        select(s.c.variant_id, s.c.source, func.max(s.c.at).label("at"))
        .where(s.c.at <= before)
        .group_by(s.c.variant_id, s.c.source)
        .subquery()
    )
    rows = conn.execute(select(keep.c.variant_id, keep.c.source, keep.c.at)).all()
    deleted = 0
    for variant_id, source, at in rows:
        done = conn.execute(
            delete(s).where(s.c.variant_id == variant_id, s.c.source == source, s.c.at < at)
        )
        deleted += int(done.rowcount or 0)
    return deleted


def _latest_at_or_before(
    conn: Connection, endpoint_id: str, variant_ids: Sequence[str] | None, moment: datetime
) -> dict[tuple[str, str], Totals]:
    s = alert_metric_samples
    where = [s.c.endpoint_id == endpoint_id, s.c.at <= moment]
    if variant_ids is not None:
        where.append(s.c.variant_id.in_(list(variant_ids)))
    newest = (
        select(s.c.variant_id, s.c.source, func.max(s.c.at).label("at"))
        .where(*where)
        .group_by(s.c.variant_id, s.c.source)
        .subquery()
    )
    rows = conn.execute(
        select(s).join(
            newest,
            and_(
                s.c.variant_id == newest.c.variant_id,
                s.c.source == newest.c.source,
                s.c.at == newest.c.at,
            ),
        )
    ).all()
    return {
        (r.variant_id, r.source): Totals.from_json(
            {
                "invocations": r.invocations,
                "errors_4xx": r.errors_4xx,
                "errors_5xx": r.errors_5xx,
                "latency": r.latency,
            }
        )
        for r in rows
    }


def window_totals(
    conn: Connection,
    endpoint_id: str,
    now: datetime,
    window_s: float,
    *,
    variant_ids: Sequence[str] | None = None,
) -> Totals | None:
    """What the endpoint (or these variants of it) counted in ``(now - window_s, now]``, from
    the samples; None when nothing was ever sampled on this database."""
    began = conn.execute(
        select(alert_cursors.c.at).where(alert_cursors.c.name == SAMPLER_CURSOR)
    ).scalar()
    if began is None:
        return None
    start = max(now - timedelta(seconds=window_s), began)
    latest = _latest_at_or_before(conn, endpoint_id, variant_ids, now)
    base = _latest_at_or_before(conn, endpoint_id, variant_ids, start)
    total = Totals()
    for key, value in latest.items():
        grown = value.minus(base.get(key, Totals()))
        total = Totals(
            invocations=total.invocations + grown.invocations,
            errors_4xx=total.errors_4xx + grown.errors_4xx,
            errors_5xx=total.errors_5xx + grown.errors_5xx,
            latency=tuple(a + b for a, b in zip(total.latency, grown.latency, strict=True)),
        )
    return total


def endpoint_values(totals: Totals, min_requests: int) -> dict[str, float | None]:
    """Every endpoint metric of a window's counts; rates and quantiles are None below
    ``min_requests`` requests (no data)."""
    enough = totals.requests >= min_requests
    answered = sum(totals.latency) > 0
    values: dict[str, float | None] = {
        "invocations": float(totals.invocations),
        "requests": float(totals.requests),
        "errors_4xx": float(totals.errors_4xx),
        "errors_5xx": float(totals.errors_5xx),
        "error_rate": totals.rate("errors") if enough else None,
        "error_rate_4xx": totals.rate("errors_4xx") if enough else None,
        "error_rate_5xx": totals.rate("errors_5xx") if enough else None,
    }
    for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)):
        values[name] = totals.quantile_ms(q) if enough and answered else None
    if not enough:
        for name in ("invocations", "requests", "errors_4xx", "errors_5xx"):
            values[name] = None
    return values


def report_value(
    summary: dict[str, Any], metric: str, column_result: dict[str, Any] | None = None
) -> float | str | bool | None:
    """A report metric: a column's field when ``column_result`` is given, else the summary's
    (``status`` falls back to the verdict for reports that record none)."""
    source = column_result if column_result is not None else summary
    value = source.get(metric)
    if metric == "status" and value is None:
        value = summary.get("verdict")
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return None
