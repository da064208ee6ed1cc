"""Models, registrations and requests shared by the serving tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from civicml.core.identity import Principal
from civicml.registry import ModelVersion, RegistryService
from civicml.store import Context
from civicml.training import TabularModel, fit_tabular

PROJECT = "benefits"
MODEL = "eligibility"
REGIONS = ["north", "south", "east", "west"]


def training_frame(rows: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows)
    income = rng.normal(1500, 500, rows).round(2)
    region = rng.choice(REGIONS, rows)
    eligible = (income < 1500) ^ (rng.random(rows) < 0.1)
    return pd.DataFrame({"age": age, "income": income, "region": region, "eligible": eligible})


def train(directory: Path, *, c: float = 1.0) -> TabularModel:
    model = fit_tabular(training_frame(), "eligible", algorithm="logistic", params={"C": c}, seed=0)
    model.save(directory)
    return model


def register(ctx: Context, directory: Path, *, approve: bool = True) -> ModelVersion:
    """Register the saved model in ``directory``; approve it unless told not to."""
    model = TabularModel.load(directory)
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted(directory.iterdir())}
    registry = RegistryService(ctx)
    mv = registry.register(PROJECT, MODEL, artifacts=digests, signature=model.signature)
    if approve:  # by a reviewer: whoever registered a version cannot approve it
        reviewer = RegistryService(ctx.as_principal(Principal(user="reviewer")))
        mv = reviewer.approve(PROJECT, MODEL, mv.version, "validated on the hold-out set")
    return mv


def records(rows: int = 3, seed: int = 1) -> list[dict[str, Any]]:
    frame = training_frame(rows, seed).drop(columns="eligible")
    return [
        {"age": int(r.age), "income": float(r.income), "region": str(r.region)}
        for r in frame.itertuples()
    ]


def object_path(ctx: Context, digest: str) -> Path:
    return ctx.artifacts.root / "objects" / digest[:2] / digest[2:4] / digest


def tamper(ctx: Context, digest: str) -> None:
    path = object_path(ctx, digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def train_nan(directory: Path, *, regression: bool = False) -> TabularModel:
    """A linear model whose first number weight is NaN: every answer it gives is NaN."""
    data = training_frame()
    if regression:
        model = fit_tabular(data.drop(columns="eligible"), "income", algorithm="linear", seed=0)
    else:
        model = fit_tabular(data, "eligible", algorithm="logistic", seed=0)
    estimator = model.pipeline.steps[-1][1]
    estimator.coef_ = np.array(estimator.coef_, dtype=np.float64)
    estimator.coef_.flat[0] = np.nan
    model.save(directory)
    return model


#: The fields of a capture event with one record of each kind of value (tests build variants).
CAPTURE_EVENT: dict[str, Any] = {
    "project_id": "p",
    "endpoint_id": "e",
    "endpoint": 'scoring-é"1',
    "model_name": "m",
    "model_version": 3,
    "model_version_id": "mv",
    "time": datetime(2026, 11, 23, 10, 15, 2, 123456, tzinfo=UTC),
    "request_id": "r",
    "records": [{"age": 41, "income": 1520.5, "region": "nörth\n", "member": True}],
    "predictions": [True],
    "probabilities": [[0.25, 0.75]],
    "classes": [False, True],
    "inference_ids": ["i1"],
    "caller": "alice",
    "variant": "blue",
    "latency_ms": 0.123456,
}
