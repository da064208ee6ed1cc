"""``civicml pipelines``: run by file or module reference, cache hits, show, list, graph, cancel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from civicml.cli.main import main

PIPELINE = """
import civicml as cm


@cm.step
def clean(rows: int) -> list[int]:
    return [i for i in range(rows) if i % 7]


@cm.step(outputs=("train", "test"))
def split(values: list[int]) -> tuple[list[int], list[int]]:
    return values[::2], values[1::2]


@cm.step
def fit(train: list[int], alpha: float) -> dict[str, float]:
    return {"weight": alpha * sum(train) / len(train)}


@cm.pipeline(name="cli-training")
def training(rows: int = 50, alpha: float = 0.9) -> None:
    train, test = split(clean(rows))
    fit(train, alpha)


@cm.step
def boom(x: int) -> int:
    raise ValueError("no good")


@cm.pipeline(name="cli-failing")
def failing(x: int = 1) -> None:
    boom(x)


not_a_pipeline = 42
"""
STEPS = ("clean", "split", "fit")


@pytest.fixture
def cli(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from civicml.cli import _common

    monkeypatch.setattr(_common.console, "width", 240)  # tables unwrapped, ids whole
    monkeypatch.setattr(sys, "path", [*sys.path])  # what importing a reference adds goes away
    home = tmp_path / "cli-home"

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "--user", "carol", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "cli_training_flow.py"
    path.parent.mkdir()
    path.write_text(PIPELINE)
    return path


def _run(cli, ref: str, *extra: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    code, out, err = cli("pipelines", "run", ref, "-p", "pipe", *extra, "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_run_twice_second_all_cached_then_show_list_graph(  # type: ignore[no-untyped-def]
    cli, source: Path, tmp_path: Path
) -> None:
    ref = f"{source}:training"
    first = _run(cli, ref, "--param", "alpha=0.5", "--param", "rows=30")
    assert first["status"] == "succeeded"
    assert first["parameters"] == {"rows": 30, "alpha": 0.5}
    assert [s["status"] for s in first["steps"]] == ["succeeded"] * 3
    assert sorted(map(tuple, first["edges"])) == [("clean", "split"), ("split", "fit")]
    again = _run(cli, ref, "--param", "alpha=0.5", "--param", "rows=30")
    assert [s["status"] for s in again["steps"]] == ["cached"] * 3
    assert {s["cached_from"] for s in again["steps"]} == {first["id"]}

    code, out, _ = cli("pipelines", "show", again["id"])
    assert code == 0
    for name in STEPS:
        assert name in out
    assert "cached" in out and first["id"] in out
    code, out, _ = cli("pipelines", "show", again["id"], "--json")
    assert json.loads(out)["steps"][0]["cached_from"] == first["id"]

    code, out, _ = cli("pipelines", "list", "-p", "pipe", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [e["id"] for e in listed] == [again["id"], first["id"]]
    code, out, _ = cli("pipelines", "list", "-p", "pipe")
    assert code == 0 and "cli-training" in out and "3/3" in out

    page = tmp_path / "graph.html"
    code, _, _ = cli("pipelines", "graph", again["id"], "-o", str(page))
    assert code == 0
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html
    assert "<script" not in html and "style=" not in html
    for name in STEPS:
        assert f">{name}<" in html
    assert "cached" in html

    code, _, err = cli("pipelines", "cancel", again["id"])
    assert code == 2 and "only running or waiting" in err


def test_module_reference_failure_and_retry(  # type: ignore[no-untyped-def]
    cli, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(source.parent)
    monkeypatch.delitem(sys.modules, "cli_training_flow", raising=False)
    done = _run(cli, "cli_training_flow:training")
    assert done["status"] == "succeeded"
    code, out, _ = cli("pipelines", "run", "cli_training_flow:failing", "-p", "pipe", "--json")
    assert code == 1
    failed = json.loads(out)
    assert failed["status"] == "failed"
    assert failed["steps"][0]["error"] == "ValueError: no good"
    code, out, _ = cli("pipelines", "show", failed["id"])
    assert "ValueError: no good" in out
    code, out, _ = cli("pipelines", "retry", failed["id"], "cli_training_flow:failing")
    assert code == 1 and "failed" in out


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no-colon", "is not FILE.py:FUNCTION"),
        ("missing/file.py:training", "does not exist"),
        ("{source}:not_a_pipeline", "is a int, not a @cm.pipeline function"),
        ("{source}:absent", "is not defined"),
        ("civicml_no_such_module_x:training", "Cannot import module"),
    ],
)
def test_bad_reference_exits_2_with_one_line(  # type: ignore[no-untyped-def]
    cli, source: Path, ref: str, message: str
) -> None:
    code, out, err = cli("pipelines", "run", ref.format(source=source), "-p", "pipe")
    assert code == 2
    assert out == ""
    assert message in err.splitlines()[0]


def test_run_and_retry_refuse_a_server_url(  # type: ignore[no-untyped-def]
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["run", f"{source}:training", "-p", "pipe"],
        ["retry", "some-id", f"{source}:training"],
    ):
        code = main(["--url", "http://127.0.0.1:9", "pipelines", *args])
        err = capsys.readouterr().err
        assert code == 2
        assert err.splitlines()[0].startswith("Error: Pipelines ")
        assert "where their code is" in err


def test_unknown_execution_exits_2(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("pipelines", "show", "nope")
    assert code == 2 and "does not exist" in err
