"""A project where one data subject is spread over three dataset versions, a capture and a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import civicml as cm

PROJECT = "benefits"
DATASET = "applications"
SUBJECT = "A-0007"
KEY = "applicant_id"
FEATURES = ["applicant_id", "age", "income"]


def applications(first: int, last: int, seed: int = 0) -> pd.DataFrame:
    """Applications of applicants ``first``..``last`` (ids ``A-0001``…), one row each."""
    rng = np.random.default_rng(seed)
    n = last - first + 1
    income = rng.normal(1500, 400, n).round(2)
    return pd.DataFrame(
        {
            KEY: [f"A-{i:04d}" for i in range(first, last + 1)],
            "age": rng.integers(18, 90, n),
            "income": income,
            "eligible": (income < 1500),
        }
    )


@dataclass
class World:
    """What :func:`build` made."""

    home: Path
    versions: list[Any]
    other: Any
    model_version: Any
    endpoint: str


def build(home: Path, connect: Callable[[str], Any] | None = None) -> World:
    """v1 (1-20), v2 (1-30), v3 (1-35 plus 5 rows of the subject's later applications) hold the
    subject; ``households`` does not. The model is trained on v2, deployed with capture on, and
    asked about the subject and two others. ``connect(user)`` opens a client (default: the
    embedded one on ``home``)."""

    def open_as(user: str) -> Any:
        return cm.connect(home=home, user=user) if connect is None else connect(user)

    with open_as("alice") as ml:
        proj = ml.project(PROJECT)
        v1 = proj.datasets.ingest(DATASET, applications(1, 20))
        v2 = proj.datasets.ingest(DATASET, applications(1, 30))
        extra = applications(7, 7, seed=5)
        v3 = proj.datasets.ingest(
            DATASET, pd.concat([applications(1, 35)] + [extra] * 5, ignore_index=True)
        )
        other = proj.datasets.ingest("households", applications(40, 60).drop(columns=[KEY]))
        with proj.start_run(experiment="baseline") as run:
            trained = cm.train.tabular(
                v2, target="eligible", run=run, algorithm="logistic", features=FEATURES
            )
        mv = proj.models.register("eligibility", trained, run=run)
    with open_as("reviewer") as ml:
        mv = ml.project(PROJECT).models.approve(mv, note="validated")
    with open_as("alice") as ml:
        proj = ml.project(PROJECT)
        endpoint = proj.endpoints.deploy("web", mv, capture_percent=100.0)
        rows = applications(6, 8, seed=9).drop(columns=["eligible"])
        endpoint.predict(rows.to_dict("records"))
        endpoint.predict(rows.to_dict("records")[1:2])  # the subject alone
    return World(home, [v1, v2, v3], other, mv, "web")
