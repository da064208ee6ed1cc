"""The compute setting and the executors: values checked at start, and the missing-Ray error
from the executor, the pipeline service, tuning and the CLI."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.cli.main import main
from civicml.core import ConfigurationError, Settings
from civicml.core.compute import executor_for
from civicml.training.tune import categorical

MISSING = "CIVICML_COMPUTE=ray needs Ray: pip install 'civicml[ray]'"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("local", "local"),
        ("RAY", "ray"),
        ("ray://head.internal:10001", "ray://head.internal:10001"),
    ],
)
def test_compute_values(tmp_path: Path, given: str, stored: str) -> None:
    assert Settings.load(home=tmp_path, compute=given).compute == stored


@pytest.mark.parametrize("bad", ["dask", "ray://", "ray://head", "ray://head:port", "spark://x:1"])
def test_unknown_compute_stops_at_start(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigurationError, match=r"compute: .* is not a compute backend"):
        Settings.load(home=tmp_path, compute=bad)


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import ray`` fails, as where the extra is not installed."""
    monkeypatch.setitem(sys.modules, "ray", None)


def test_missing_ray_names_the_extra(no_ray: None) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(MISSING)) as err:
        executor_for("ray")
    assert "civicml[ray]" in (err.value.hint or "")
    assert err.value.status == 400  # a 4xx: the CLI exits 2


def _pipeline() -> Any:
    @cm.step
    def double(x: int) -> int:
        return 2 * x

    @cm.pipeline(name="doubling")
    def doubling(x: int = 2) -> None:
        double(x)

    return doubling


def test_a_pipeline_on_missing_ray_fails_before_recording_anything(
    no_ray: None, tmp_path: Path
) -> None:
    with cm.connect(settings=Settings.load(home=tmp_path / "home", compute="ray")) as ml:
        ml.project("p")
        with pytest.raises(ConfigurationError, match=re.escape(MISSING)):
            ml.pipelines.run(_pipeline(), project="p")
        assert ml.pipelines.list("p") == []


def test_tuning_on_missing_ray_fails_before_any_run(no_ray: None, tmp_path: Path) -> None:
    from tests.training.test_tune import _frame

    with cm.connect(settings=Settings.load(home=tmp_path / "home", compute="ray")) as ml:
        proj = ml.project("p")
        raw = proj.datasets.ingest("d", _frame())
        with pytest.raises(ConfigurationError, match=re.escape(MISSING)):
            cm.train.tune(raw, target="y", project=proj, space={"C": categorical([1.0])})
        assert proj.runs.search() == []


def test_the_cli_exits_2_with_the_install_line(
    no_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "flow.py"
    source.write_text(
        "import civicml as cm\n\n\n@cm.step\ndef one() -> int:\n    return 1\n\n\n"
        "@cm.pipeline(name='flow')\ndef flow() -> None:\n    one()\n"
    )
    monkeypatch.setenv("CIVICML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CIVICML_COMPUTE", "ray")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pipelines", "run", f"{source}:flow", "-p", "p"])
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert lines[0] == f"Error: {MISSING}"
    assert lines[1].startswith("Hint: Install the extra")
