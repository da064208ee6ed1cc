"""``civicml endpoints``: variants, shadow, guarded rollouts and shadow reports from the shell."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from civicml.cli.main import main
from civicml.core import Settings
from civicml.governance.projects import ProjectService
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from tests.server.helpers import isolated_settings, serve
from tests.serving.helpers import MODEL, PROJECT, records, register, train

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-models")
    train(root / "v1", c=1.0)
    train(root / "v2", c=0.01)
    return root / "v1", root / "v2"


def _prepare(settings: Settings, model_dirs: tuple[Path, Path]) -> None:
    ctx = open_context(settings)
    try:
        ProjectService(ctx).create(PROJECT)
        register(ctx, model_dirs[0])
        register(ctx, model_dirs[1])
    finally:
        ctx.db.close()


@pytest.fixture
def cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dirs: tuple[Path, Path]
) -> Iterator[Run]:
    home = tmp_path / "cli-home"
    _prepare(Settings.load(home=home), model_dirs)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "--user", "carol", *args])
        out, err = capsys.readouterr()
        return code, out, err

    yield run


def _ok(cli: Run, *args: str) -> str:
    code, out, err = cli("endpoints", *args, "-p", PROJECT)
    assert code == 0, (out, err)
    return out


def _tick_until(cli: Run, step: int, status: str) -> None:
    """``rollout tick`` after each 0.3 s bake until the rollout reaches ``step``/``status``."""
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.1)
        got = json.loads(_ok(cli, "rollout", "tick", "web", "--json"))
        if (got["current_step"], got["status"]) == (step, status):
            return
        assert time.monotonic() < deadline, got


def test_a_canary_from_the_shell(cli: Run) -> None:
    _ok(cli, "deploy", "web", MODEL, "1")
    out = _ok(
        cli, "update", "web", "--version", "2", "--strategy", "canary", "--canary", "10%",
        "--bake", "0.3s", "--alarm", "p99_ms>60000", "--alarm", "error_rate>0.01",
    )  # fmt: skip
    assert "(canary): in_progress, 10% on v2 (eligibility v2); step 1 of 2 [10%, 100%]" in out
    assert "alarms: p99_ms>60000, error_rate>0.01" in out
    shown = json.loads(_ok(cli, "variants", "list", "web", "--json"))
    assert [(v["name"], round(v["share"], 6)) for v in shown] == [("v1", 0.9), ("v2", 0.1)]
    status = json.loads(_ok(cli, "rollout", "status", "web", "--json"))
    assert status["status"] == "in_progress"
    _tick_until(cli, 1, "in_progress")  # the canary baked: all traffic to v2
    _tick_until(cli, 1, "succeeded")  # the last step baked too
    history = json.loads(_ok(cli, "rollout", "list", "web", "--json"))
    assert [r["status"] for r in history] == ["succeeded"]
    assert json.loads(_ok(cli, "show", "web", "--json"))["model_version"] == 2


def test_variants_weights_pins_and_the_shadow_from_the_shell(cli: Run, tmp_path: Path) -> None:
    _ok(cli, "deploy", "web", MODEL, "1", "--variant", "blue")
    out = _ok(cli, "variants", "set", "web", "green", "--version", "2")
    assert "variant green: eligibility v2, weight 0 (0.0%)" in out
    record = json.dumps(records(1)[0])
    pinned = json.loads(
        _ok(cli, "invoke", "web", "--record", record, "--variant", "green", "--json")
    )
    assert (pinned["variant"], pinned["model_version"]) == ("green", 2)
    out = _ok(cli, "variants", "weights", "web", "blue=1", "green=3")
    assert "variant green: eligibility v2, weight 3 (75.0%)" in out
    _ok(cli, "variants", "remove", "web", "green")
    out = _ok(cli, "shadow", "set", "web", "--version", "2", "--percent", "100")
    assert "variant v2-shadow: eligibility v2, shadow 100% of live requests" in out
    for row in records(5):
        _ok(cli, "invoke", "web", "--record", json.dumps(row))
    html = tmp_path / "shadow.html"
    out = _ok(cli, "shadow", "report", "web", "--min-pairs", "5", "--html", str(html))
    assert "Shadow v2-shadow vs live on endpoint web:" in out and "5 pairs compared" in out
    assert html.read_text().startswith("<!doctype html>")
    assert "v2-shadow" in _ok(cli, "shadow", "reports", "web")
    _ok(cli, "shadow", "remove", "web")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["update", "web", "--version", "2", "--strategy", "canary", "--canary", "150%"],
         "Canary size '150%'"),
        (["update", "web", "--version", "2", "--strategy", "canary", "--alarm", "slow"],
         "Alarm 'slow'"),
        (["update", "web", "--version", "2", "--strategy", "linear", "--bake", "5x"],
         "Bake time '5x'"),
        (["update", "web", "--version", "2", "--steps", "3"], "need a rollout strategy"),
        (["update", "web", "--version", "2", "--strategy", "blue_green"], "'blue_green'"),
        (["variants", "weights", "web", "blue"], "is not VARIANT=WEIGHT"),
        (["invoke", "web", "--record", "{}", "--variant", "nope"], "has no variant 'nope'"),
        (["rollout", "cancel", "web"], "no rollout in progress"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(cli: Run, args: list[str], message: str) -> None:
    _ok(cli, "deploy", "web", MODEL, "1")
    code, _, err = cli("endpoints", *args, "-p", PROJECT)
    assert code == 2, err
    assert err.startswith("Error: ") and message in err and "Traceback" not in err


def test_the_cli_drives_a_remote_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dirs: tuple[Path, Path]
) -> None:
    settings = isolated_settings(tmp_path, rollout_enabled=False)
    _prepare(settings, model_dirs)
    app = create_app(settings)
    with serve(app) as url:

        def remote(*args: str) -> str:
            capsys.readouterr()
            code = main(["--url", url, "endpoints", *args, "-p", PROJECT])
            out, err = capsys.readouterr()
            assert code == 0, (out, err)
            return out

        remote("deploy", "web", MODEL, "1")
        remote("update", "web", "--version", "2", "--strategy", "all_at_once", "--bake", "0")
        assert json.loads(remote("rollout", "tick", "web", "--json"))["status"] == "succeeded"
        assert [v["name"] for v in json.loads(remote("variants", "list", "web", "--json"))] == [
            "v2"
        ]
    app.state.serving.close()
