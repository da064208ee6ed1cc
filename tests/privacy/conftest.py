"""A saved model for the privacy tests that deploy an endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.helpers import train


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("privacy-model") / "v1"
    train(root)
    return root
