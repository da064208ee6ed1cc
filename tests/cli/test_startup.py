"""``civicml --help`` starts without the heavy stack: lazy command groups (issue 8).

The CLI used to import scikit-learn, pandas and SQLAlchemy before printing its help
(cards → oversight → evaluation.bias). These tests check *what* is imported, in a fresh
interpreter; how long start-up takes is measured in benchmarks/cli_startup.py, never here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from civicml.cli.main import CivicMLGroup, app, main

HEAVY = (
    "sklearn",
    "lightgbm",
    "shap",
    "scipy",
    "pandas",
    "numpy",
    "pyarrow",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "jinja2",
    "joblib",
    "matplotlib",
    "pydantic_settings",
)
GROUP_MODULES = sorted({spec.module for spec in CivicMLGroup.lazy.values()})

_PROBE = """
import json, sys
from civicml.cli.main import main
code = main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _imported_by(*argv: str) -> tuple[int, set[str]]:
    """Run ``civicml ARGV`` in a fresh interpreter; its exit code and every module imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(argv))],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


@pytest.mark.parametrize("argv", [["--help"], ["version"], []])
def test_root_help_and_version_import_no_group_and_no_heavy_library(argv: list[str]) -> None:
    code, modules = _imported_by(*argv)
    assert code in (0, 2)  # no arguments: the help, with Typer's "missing command" exit 2
    assert _heavy(modules) == []
    assert sorted(modules & set(GROUP_MODULES)) == []


@pytest.mark.parametrize("group", sorted(CivicMLGroup.lazy))
def test_group_help_imports_only_its_module_and_no_data_science_stack(group: str) -> None:
    code, modules = _imported_by(group, "--help")
    assert code == 0
    heavy = set(_heavy(modules)) - {"pydantic_settings"}  # settings may load for a group
    assert sorted(heavy) == []
    own = CivicMLGroup.lazy[group].module
    assert sorted(modules & set(GROUP_MODULES)) == [own]


@pytest.mark.parametrize("name", sorted(CivicMLGroup.lazy))
def test_static_help_is_the_loaded_commands_own_help(name: str) -> None:
    spec = CivicMLGroup.lazy[name]
    loaded = spec.load(name)
    assert loaded.name == name
    first_paragraph = " ".join((loaded.help or "").strip().split("\n\n")[0].split())
    assert spec.help == first_paragraph


def _help_of(root: object, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert isinstance(root, CivicMLGroup)
    assert root.main(["--help"], prog_name="civicml", standalone_mode=False) == 0
    return capsys.readouterr().out


def test_root_help_is_the_same_lazy_or_fully_loaded(capsys: pytest.CaptureFixture[str]) -> None:
    lazy_help = _help_of(typer.main.get_command(app), capsys)
    loaded_root = typer.main.get_command(app)
    assert isinstance(loaded_root, CivicMLGroup)
    for name in list(loaded_root.commands):
        loaded_root.commands[name]  # import every group, as an invocation would
    assert _help_of(loaded_root, capsys) == lazy_help
    for name, spec in CivicMLGroup.lazy.items():
        assert name in lazy_help and spec.help.split()[0] in lazy_help


def test_every_command_is_listed_in_the_documented_order() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, CivicMLGroup)
    names = root.list_commands(typer.Context(root))
    assert names[:3] == ["server", "demo", "version"]
    assert set(names) == {*CivicMLGroup.lazy, "version"}
    assert len(names) == len(set(names))


def test_a_mistyped_group_still_suggests_the_lazy_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model"]) == 2
    assert "Did you mean 'models'?" in capsys.readouterr().err
