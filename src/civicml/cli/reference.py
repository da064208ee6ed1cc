"""The CLI reference (docs/cli.md), generated from the Typer app.

Regenerate with ``python -m civicml.cli.reference > docs/cli.md``; a test fails when it is stale.
"""

from __future__ import annotations

from typing import Any

import typer


def _params(command: Any) -> list[str]:
    lines = []
    for param in command.params:
        if param.name == "help" or getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            lines.append(f"- `{(param.name or '').upper()}` (argument)")
            continue
        names = ", ".join(f"`{o}`" for o in param.opts)
        envvar = getattr(param, "envvar", None)
        env = f" (env `{envvar}`)" if envvar else ""
        default = ""
        if param.default not in (None, False, ()) and not getattr(param, "is_flag", False):
            default = f" [default: {param.default}]"
        lines.append(f"- {names}{env}: {getattr(param, 'help', '') or ''}{default}".rstrip())
    return lines


def render() -> str:
    """Markdown for every group and command of ``civicml``."""
    from civicml.cli.main import app

    root = typer.main.get_command(app)
    out = [
        "# civicml command-line reference",
        "",
        "Generated from the app by `python -m civicml.cli.reference > docs/cli.md`.",
        "",
        "Global options (before the command):",
        "",
        *_params(root),
        "",
    ]

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            if path:
                out.extend([f"## civicml {' '.join(path)}", "", (command.help or "").strip(), ""])
                params = _params(command)  # a group that also runs by itself (civicml costs)
                if params:
                    out.extend([*params, ""])
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name])
            return
        out.extend(
            [f"### civicml {' '.join(path)}", "", (command.help or "").strip().split("\n\n")[0], ""]
        )
        params = _params(command)
        if params:
            out.extend([*params, ""])

    walk(root, [])
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    typer.echo(render(), nl=False)
