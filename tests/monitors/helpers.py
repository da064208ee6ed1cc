"""An endpoint with capture on, a baseline dataset, invocations and labels, shared by the
monitor tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from civicml.data import DatasetService
from civicml.monitors import MonitorCreate, MonitorService
from civicml.serving import EndpointService, ModelHost
from civicml.store import Context
from tests.serving.helpers import MODEL, PROJECT, REGIONS, register, training_frame

ENDPOINT = "web"
BASELINE = "training"


def deploy(ctx: Context, host: ModelHost, model_dir: Path) -> None:
    """Register and approve the saved model, ingest its training data, deploy it (capture on)."""
    register(ctx, model_dir)
    DatasetService(ctx).ingest(PROJECT, BASELINE, training_frame(), progress=False)
    EndpointService(ctx, host).deploy(PROJECT, ENDPOINT, MODEL, 1, capture_percent=100)


def inputs(
    rows: int,
    seed: int = 3,
    *,
    income_scale: float = 1.0,
    income: float | None = None,
    region: str | None = None,
) -> list[dict[str, Any]]:
    """Request records like the training data (or shifted: scaled or fixed incomes, one
    region)."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(rows):
        drawn = float(round(rng.normal(1500, 500) * income_scale, 2))
        found.append(
            {
                "age": int(rng.integers(18, 90)),
                "income": drawn if income is None else income,
                "region": region or str(rng.choice(REGIONS)),
            }
        )
    return found


def labels_for(answer: dict[str, Any], seed: int = 5, *, flip: float = 0.1) -> pd.DataFrame:
    """Labels of an invocation's predictions: the prediction, flipped for a share ``flip``."""
    rng = np.random.default_rng(seed)
    predicted = np.asarray(answer["predictions"], dtype=bool)
    truth = predicted ^ (rng.random(len(predicted)) < flip)
    sex = rng.choice(["female", "male"], len(predicted))
    return pd.DataFrame({"inference_id": answer["inference_ids"], "label": truth, "sex": sex})


def monitor(ctx: Context, host: ModelHost, name: str, kind: str, **options: Any) -> Any:
    values: dict[str, Any] = {
        "name": name,
        "endpoint": ENDPOINT,
        "type": kind,
        "every": "1h",
        "baseline_dataset": BASELINE,
        "min_rows": 5,
    }
    if "cron" in options:
        values.pop("every")
    values.update(options)
    return MonitorService(ctx, host.capture).create(PROJECT, MonitorCreate.model_validate(values))
