"""Two trained models (saved once per session) and a project with a model host per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from civicml.governance.projects import ProjectService
from civicml.serving import CaptureWriter, ModelHost
from civicml.store import Context
from tests.serving.helpers import PROJECT, train


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Saved model directories: v1 (C=1) and v2 (C=0.01), both logistic regressions."""
    root = tmp_path_factory.mktemp("models")
    train(root / "v1", c=1.0)
    train(root / "v2", c=0.01)
    return root / "v1", root / "v2"


@pytest.fixture
def project(ctx: Context) -> str:
    ProjectService(ctx).create(PROJECT)
    return PROJECT


@pytest.fixture
def host(ctx: Context) -> Iterator[ModelHost]:
    model_host = ModelHost(ctx, capture=CaptureWriter(ctx, max_age_s=3600))
    yield model_host
    model_host.close()
