"""Data, models and registrations shared by the evaluation service, API, CLI and e2e tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

import civicml as cm
from civicml.data import DatasetService, DatasetVersion
from civicml.data.samples import benefit_applications
from civicml.governance import ProjectService
from civicml.registry import ModelVersion, RegistryService
from civicml.store import Context
from civicml.training import TabularModel, fit_tabular

PROJECT = "benefits"
DATASET = "applications"
MODEL = "eligibility"
LABEL = "eligible"
#: The model does not see the protected attribute.
FEATURES = [
    "income",
    "household_size",
    "age",
    "region",
    "employment_status",
    "months_at_address",
    "prior_claims",
]
FAST = {"n_estimators": 40}


def frame(rows: int = 600, seed: int = 11) -> pd.DataFrame:
    """Synthetic benefit applications: label ``eligible`` (0/1), protected attribute ``sex``."""
    return benefit_applications(rows, seed=seed)


def fit(data: pd.DataFrame, *, target: str = LABEL, algorithm: str = "lightgbm") -> TabularModel:
    params = FAST if algorithm == "lightgbm" else {}
    features = [c for c in FEATURES if c != target]
    return fit_tabular(data, target, algorithm=algorithm, params=params, seed=1, features=features)


def ingest(ctx: Context, data: pd.DataFrame, name: str = DATASET) -> DatasetVersion:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx).ingest(PROJECT, name, data, progress=False)


def register(ctx: Context, model: TabularModel, directory: Path, name: str = MODEL) -> ModelVersion:
    """Save ``model`` to ``directory``, store its files and register them (not approved)."""
    model.save(directory)
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted(directory.iterdir())}
    return RegistryService(ctx).register(
        PROJECT, name, artifacts=digests, signature=model.signature
    )


def publish(ml: Any, project: str = PROJECT) -> tuple[Any, Any]:
    """Through the SDK (embedded or remote): ingest the data, train and register a model.

    Returns the dataset version and the model version (registered, not approved).
    """
    proj = ml.project(project)
    dv = proj.datasets.ingest(DATASET, frame())
    with proj.start_run(experiment="fairness") as run:
        trained = cm.train.tabular(
            dv, target=LABEL, run=run, algorithm="lightgbm", params=FAST, features=FEATURES
        )
    mv = proj.models.register(MODEL, trained, run=run)
    return dv, mv
