"""The docs say what the code does: settings, routes and the CLI reference are all documented."""

from __future__ import annotations

import re
from pathlib import Path

from civicml.cli.reference import render
from civicml.core import Settings
from civicml.server import create_app

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = DOCS.parent / "README.md"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in text and f"`CIVICML_{name.upper()}`" in text, name


def test_every_route_is_documented(tmp_path: Path) -> None:
    text = (DOCS / "api.md").read_text()
    spec = create_app(Settings.load(home=tmp_path)).openapi()
    for path, operations in spec["paths"].items():
        for method in operations:
            assert f"| `{method.upper()}` | `{path}` |" in text, f"{method.upper()} {path}"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: python -m civicml.cli.reference > docs/cli.md"
    )


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    demo = re.search(r"<!-- demo-command -->\n```bash\n(.+)\n```", text)
    tests = re.search(r"<!-- test-command -->\n```bash\n(.+)\n```", text)
    assert demo and "civicml demo" in demo.group(1)
    assert tests and "pytest" in tests.group(1)
    assert text.index("demo-command") < text.index("test-command") < text.index("## ")


def test_ci_runs_the_readme_test_command() -> None:
    script = (DOCS.parent / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in script
    assert "CIVICML_REQUIRE_SERVICES=1" in script
