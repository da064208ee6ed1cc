"""The ``civicml`` command: one group per stage, JSON or tables, exit 0 / 1 / 2."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

import civicml
from civicml.cli._common import STATE, err_console
from civicml.cli.cards import cards_app
from civicml.cli.data import datasets_app
from civicml.cli.demo import demo
from civicml.cli.evaluation import evaluate_app
from civicml.cli.governance import audit_app, lineage_app
from civicml.cli.models import models_app
from civicml.cli.monitoring import monitoring_app
from civicml.cli.projects import experiments_app, projects_app
from civicml.cli.runs import runs_app
from civicml.cli.server import server
from civicml.cli.serving import endpoints_app
from civicml.core.errors import CivicMLError

app = typer.Typer(
    name="civicml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="civicml: self-hosted MLOps for the public sector.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(projects_app, name="projects")
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(cards_app, name="cards")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(lineage_app, name="lineage")
app.add_typer(audit_app, name="audit")
app.command()(server)
app.command()(demo)


@app.callback()
def _root(
    url: Annotated[
        str | None, typer.Option(envvar="CIVICML_URL", help="Talk to this civicml server.")
    ] = None,
    home: Annotated[
        str | None, typer.Option(envvar="CIVICML_HOME", help="Embedded platform directory.")
    ] = None,
    user: Annotated[
        str | None, typer.Option(envvar="CIVICML_USER", help="User recorded for your calls.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")
    ] = False,
) -> None:
    STATE.url, STATE.home, STATE.user, STATE.verbose = url, home, user, verbose


@app.command()
def version() -> None:
    """Print the civicml version."""
    typer.echo(civicml.__version__)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 0 on success, 1 when an operation failed, 2 for bad input.

    Usage errors are Typer's own (exit 2 with the usage line); a :class:`CivicMLError` prints
    one ``Error:`` line and a ``Hint:`` line (``--verbose`` adds the traceback).
    """
    try:
        app(args=argv, prog_name="civicml")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except CivicMLError as err:
        if STATE.verbose:
            traceback.print_exc()
        err_console.print(f"Error: {err.message}", markup=False)
        if err.hint:
            err_console.print(f"Hint: {err.hint}", markup=False)
        code = 2 if err.status < 500 else 1
    except KeyboardInterrupt:
        code = 130
    else:
        code = 0
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
