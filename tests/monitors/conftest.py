"""A project with a model host per test, and a trained logistic model saved once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from civicml.governance.projects import ProjectService
from civicml.serving import CaptureWriter, ModelHost
from civicml.store import Context
from tests.serving.helpers import PROJECT, train


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("monitor-model") / "v1"
    train(directory)
    return directory


@pytest.fixture
def project(ctx: Context) -> str:
    ProjectService(ctx).create(PROJECT)
    return PROJECT


@pytest.fixture
def host(ctx: Context) -> Iterator[ModelHost]:
    model_host = ModelHost(ctx, capture=CaptureWriter(ctx, max_age_s=3600))
    yield model_host
    model_host.close()
