"""Settings, data and endpoint counters shared by the alert tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import insert, select, update

from civicml.core import FrozenClock, Principal, Settings
from civicml.data import DatasetService
from civicml.monitoring.service import MonitoringService
from civicml.serving._tables import endpoint_variant_stats, endpoint_variants
from civicml.serving.service import EndpointService
from civicml.serving.stats import LATENCY_BOUNDS_MS
from civicml.store import Context, MetadataStore
from civicml.store.artifacts import artifact_store_for
from tests.alerts.receivers import SECRET

PROJECT = "benefits"


def alert_settings(home: Path, **overrides: Any) -> Settings:
    """Settings with a webhook secret, fast retries and the local brokers configured."""
    values: dict[str, Any] = {
        "home": home,
        "alerts_webhook_secrets": {"default": SECRET, "other": "another-secret-99"},
        "alerts_delivery_backoff_s": 0.01,
        "alerts_delivery_timeout_s": 5.0,
        "alerts_nats_url": "nats://127.0.0.1:4222",
        "alerts_redis_url": "redis://127.0.0.1:6379/0",
        "alerts_mqtt_url": "mqtt://127.0.0.1:1883",
    }
    values.update(overrides)
    return Settings.load(**values)


def context(
    settings: Settings, clock: FrozenClock, user: str = "alice", roles: set[str] | None = None
) -> Context:
    return Context(
        db=MetadataStore(settings.database_url),
        artifacts=artifact_store_for(settings),
        principal=Principal(user=user, roles=frozenset(roles or {"admin"})),
        settings=settings,
        clock=clock,
    )


def ingest(ctx: Context, name: str, offset: float = 0.0, rows: int = 100) -> Any:
    data = pd.DataFrame({"x": np.arange(rows, dtype=float) + offset, "y": np.arange(rows) % 3})
    return DatasetService(ctx).ingest(PROJECT, name, data, progress=False)


def drift_report(ctx: Context, current: str, baseline: str = "baseline") -> Any:
    """A stored drift report of the latest ``current`` version against ``baseline`` v1."""
    return MonitoringService(ctx).drift(
        PROJECT, current=(current, "latest"), baseline=(baseline, 1)
    )


def deploy(ctx: Context, model_dir: Path, name: str = "eligibility") -> Any:
    """Register, approve (as a reviewer) and deploy the saved model in ``model_dir``."""
    from tests.serving.helpers import register

    mv = register(ctx, model_dir)
    return EndpointService(ctx).deploy(PROJECT, name, "eligibility", mv.version, capture=False)


def variant_id(ctx: Context, endpoint_id: str) -> str:
    with ctx.db.read() as conn:
        found = conn.execute(
            select(endpoint_variants.c.id).where(endpoint_variants.c.endpoint_id == endpoint_id)
        ).scalar()
    assert found is not None, "the endpoint has no variant"
    return str(found)


def latency(ms: float, count: int) -> list[int]:
    """A latency histogram holding ``count`` answers of about ``ms`` milliseconds."""
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    index = next((i for i, b in enumerate(LATENCY_BOUNDS_MS) if b >= ms), len(LATENCY_BOUNDS_MS))
    buckets[index] = count
    return buckets


def flush(
    ctx: Context,
    endpoint_id: str,
    variant: str,
    source: str,
    at: datetime,
    *,
    invocations: int,
    errors_4xx: int = 0,
    errors_5xx: int = 0,
    ms: float = 2.0,
) -> None:
    """What a serving process's flush writes: its cumulative counters for one variant."""
    values = {
        "invocations": invocations,
        "errors_4xx": errors_4xx,
        "errors_5xx": errors_5xx,
        "latency": latency(ms, invocations),
        "updated_at": at,
    }
    t = endpoint_variant_stats
    with ctx.db.write() as uow:
        done = uow.conn.execute(
            update(t).where(t.c.variant_id == variant, t.c.source == source).values(**values)
        ).rowcount
        if not done:
            uow.conn.execute(
                insert(t).values(
                    variant_id=variant, source=source, endpoint_id=endpoint_id, **values
                )
            )
