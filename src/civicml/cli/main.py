"""The ``civicml`` command: one group per stage, JSON or tables, exit 0 / 1 / 2.

The command groups are registered lazily (STYLE.md §4, as Kedro's ``LazyGroup`` does): the
root knows each group's name and one-line help, and imports the group's module only when the
group is invoked. ``civicml --help`` and ``civicml version`` therefore never import pandas,
scikit-learn or the stores, and ``civicml models --help`` imports only what ``models`` needs.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

import civicml
from civicml.cli._common import STATE, err_console

if TYPE_CHECKING:  # the click that Typer builds on (its vendored copy, typer._click)
    from typer._click import Command, Context, HelpFormatter


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand lives (``module:attribute``) and its one-line help.

    ``attribute`` is a ``typer.Typer`` (a command group) or a function (a single command).
    ``help`` is shown by ``civicml --help`` without importing ``module``; a test checks that
    it is the loaded command's own help.
    """

    module: str
    attribute: str
    help: str

    def load(self, name: str) -> Command:
        target = getattr(importlib.import_module(self.module), self.attribute)
        if isinstance(target, typer.Typer):
            command: Command = typer.main.get_group(target)
        else:
            single = typer.Typer(add_completion=False)
            single.command(name=name)(target)
            command = typer.main.get_command(single)
        command.name = name
        return command


class _Commands(MutableMapping[str, "Command"]):
    """A group's subcommands: the loaded ones, and lazy ones loaded on first access."""

    def __init__(
        self,
        loaded: MutableMapping[str, Command],
        lazy: dict[str, LazyCommand],
        order: tuple[str, ...] = (),
    ) -> None:
        self._lazy = {name: spec for name, spec in lazy.items() if name not in loaded}
        self._loaded = dict(loaded)
        known = [*loaded, *self._lazy]
        self._order = [n for n in order if n in known] + [n for n in known if n not in order]

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def __getitem__(self, name: str) -> Command:
        command = self._loaded.get(name)
        if command is None:
            command = self._loaded[name] = self._lazy[name].load(name)
        return command

    def __setitem__(self, name: str, command: Command) -> None:
        if name not in self._order:
            self._order.append(name)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._order.remove(name)
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order


class LazyGroup(TyperGroup):
    """A Typer group whose subcommands in :attr:`lazy` are imported only when invoked.

    Listing them (``--help``, "did you mean") uses the static names and help; resolving one
    (``civicml models …``) or reading ``group.commands[name]`` imports its module.
    """

    lazy: ClassVar[dict[str, LazyCommand]] = {}
    #: Names in the order the help page lists them; commands not named here come after.
    order: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.commands, self.lazy, self.order)
        self._listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        commands = self.commands
        if self._listing and isinstance(commands, _Commands) and not commands.is_loaded(cmd_name):
            spec = self.lazy.get(cmd_name)
            if spec is not None:  # the help page only needs the name and one-line help
                return TyperCommand(cmd_name, help=spec.help)
        return commands.get(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


class CivicMLGroup(LazyGroup):
    """The root ``civicml`` group: every stage's commands, imported when invoked."""

    # Typer's own order: single commands first, then the groups.
    order: ClassVar[tuple[str, ...]] = ("server", "demo", "version")

    lazy: ClassVar[dict[str, LazyCommand]] = {
        "projects": LazyCommand(
            "civicml.cli.projects",
            "projects_app",
            "Projects: every run, model and dataset belongs to one.",
        ),
        "experiments": LazyCommand(
            "civicml.cli.projects", "experiments_app", "Experiments: named groups of runs."
        ),
        "runs": LazyCommand(
            "civicml.cli.runs", "runs_app", "Runs: params, metrics, tags, artifacts, status."
        ),
        "datasets": LazyCommand(
            "civicml.cli.data",
            "datasets_app",
            "Datasets: immutable versions with schema and profile.",
        ),
        "models": LazyCommand(
            "civicml.cli.models", "models_app", "Model registry: versions, approval, aliases."
        ),
        "pipelines": LazyCommand(
            "civicml.cli.pipelines",
            "pipelines_app",
            "Pipelines: run @cm.pipeline functions, list and show executions, retry, cancel, "
            "graph.",
        ),
        "schedules": LazyCommand(
            "civicml.cli.schedules",
            "schedules_app",
            "Schedules: cron and event triggers that start pipelines (civicml scheduler runs "
            "them).",
        ),
        "costs": LazyCommand(
            "civicml.cli.costs",
            "costs_app",
            "Costs: CPU, GPU, memory and storage per run, pipeline, endpoint and project, "
            "priced by the rate card; budgets.",
        ),
        "train": LazyCommand(
            "civicml.cli.train",
            "train_app",
            "Built-in training: AutoML over every algorithm, with a leaderboard.",
        ),
        "tune": LazyCommand(
            "civicml.cli.tune",
            "tune_app",
            "Hyperparameter tuning of a built-in algorithm (Optuna): every trial a run.",
        ),
        "cards": LazyCommand(
            "civicml.cli.cards",
            "cards_app",
            "Model cards (SageMaker's schema and statuses) of model versions.",
        ),
        "endpoints": LazyCommand(
            "civicml.cli.serving",
            "endpoints_app",
            "Real-time endpoints: serve Approved model versions.",
        ),
        "monitoring": LazyCommand(
            "civicml.cli.monitoring",
            "monitoring_app",
            "Monitoring: data drift reports between dataset versions.",
        ),
        "batch": LazyCommand(
            "civicml.cli.batch",
            "batch_app",
            "Batch predictions: a dataset version in, a predictions dataset version out.",
        ),
        "monitors": LazyCommand(
            "civicml.cli.monitors",
            "monitors_app",
            "Monitors: scheduled data-quality, model-quality, bias-drift and attribution-drift "
            "checks of endpoints.",
        ),
        "sources": LazyCommand(
            "civicml.cli.sources",
            "sources_app",
            "Sources: database tables and queries, and message streams, ingested as dataset "
            "versions.",
        ),
        "alerts": LazyCommand(
            "civicml.cli.alerts",
            "alerts_app",
            "Alerts: rules on endpoint metrics and monitoring reports, sent to webhooks, e-mail "
            "and message brokers.",
        ),
        "evaluate": LazyCommand(
            "civicml.cli.evaluation",
            "evaluate_app",
            "Responsible AI: bias metrics (SageMaker Clarify's) and SHAP explanations, stored "
            "as reports.",
        ),
        "catalog": LazyCommand(
            "civicml.cli.catalog",
            "catalog_app",
            "Catalog: search datasets, models and reports across your projects; describe them; "
            "their lineage.",
        ),
        "privacy": LazyCommand(
            "civicml.cli.privacy",
            "privacy_app",
            "Privacy: retention periods, legal holds, erasure of a data subject with a "
            "certificate.",
        ),
        "lineage": LazyCommand(
            "civicml.cli.governance",
            "lineage_app",
            "Lineage: what each thing came from and what came of it.",
        ),
        "audit": LazyCommand(
            "civicml.cli.governance", "audit_app", "The tamper-evident audit trail."
        ),
        "keys": LazyCommand(
            "civicml.cli.keys",
            "keys_app",
            "Encryption keys of the artifact store: list, rotate, retire, encrypt old artifacts.",
        ),
        "tokens": LazyCommand(
            "civicml.cli.tokens",
            "tokens_app",
            'API tokens for a server with auth = "token": create, list, revoke.',
        ),
        "login": LazyCommand(
            "civicml.cli.tokens",
            "login",
            "Store an API token for a server (file mode 0600) for the CLI and SDK to send.",
        ),
        "logout": LazyCommand(
            "civicml.cli.tokens",
            "logout",
            "Forget the API token stored for a server (it stays valid: revoke it to end it).",
        ),
        "server": LazyCommand(
            "civicml.cli.server",
            "server",
            "Serve the REST API (OpenAPI at /openapi.json) on the configured stores.",
        ),
        "scheduler": LazyCommand(
            "civicml.cli.schedules",
            "scheduler",
            "Run the pipeline scheduler in the foreground (--once: one tick; exit 1 if one "
            "failed).",
        ),
        "demo": LazyCommand(
            "civicml.cli.demo",
            "demo",
            "Run the lifecycle end to end, offline: data → training → registry → endpoint → drift.",
        ),
    }


app = typer.Typer(
    name="civicml",
    cls=CivicMLGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="civicml: self-hosted MLOps for the public sector.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


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
    ca_bundle: Annotated[
        str | None,
        typer.Option(
            envvar="CIVICML_CA_BUNDLE",
            help="PEM file of the CAs that issued an https:// server's certificate.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CIVICML_TOKEN",
            show_envvar=False,
            show_default=False,
            help="API token for the server (default: the one civicml login stored).",
        ),
    ] = None,
) -> None:
    STATE.url, STATE.home, STATE.user, STATE.verbose = url, home, user, verbose
    STATE.ca_bundle = ca_bundle
    STATE.token = token


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
    except KeyboardInterrupt:
        code = 130
    except Exception as err:
        from civicml.core.errors import CivicMLError  # not at start-up: it loads the settings

        if not isinstance(err, CivicMLError):
            raise
        if STATE.verbose:
            traceback.print_exc()
        err_console.print(f"Error: {err.message}", markup=False)
        if err.hint:
            err_console.print(f"Hint: {err.hint}", markup=False)
        code = 2 if err.status < 500 else 1
    else:
        code = 0
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
