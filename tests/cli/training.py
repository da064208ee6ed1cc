"""What the training CLI tests share: a home with the applications dataset, and a CLI call."""

from __future__ import annotations

from pathlib import Path

import pytest

import civicml as cm
from civicml.cli.main import main
from civicml.data.samples import benefit_applications

PROJECT = "benefits"


def home_with_applications(tmp_path: Path) -> Path:
    """A civicml home whose project ``benefits`` holds 300 rows of ``applications``."""
    where = tmp_path / "home"
    with cm.connect(home=where, user="tess") as ml:
        ml.project(PROJECT).datasets.ingest("applications", benefit_applications(300, seed=2))
    return where


def cli(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``civicml --home HOME --user tess ARGS``: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["--home", str(home), "--user", "tess", *args])
    out, err = capsys.readouterr()
    return code, out, err
