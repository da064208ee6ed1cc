"""``civicml costs``: the cost report (table, JSON or HTML) and project budgets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, client, console, print_json, table

if TYPE_CHECKING:
    from civicml.costs.schemas import BudgetStatus, CostReport

costs_app = typer.Typer(
    help="Costs: CPU, GPU, memory and storage per run, pipeline, endpoint and project, priced "
    "by the rate card; budgets.",
    invoke_without_command=True,
)
budget_app = typer.Typer(
    help="A project's monthly budget: a warning past a share of it, optionally a hard stop.",
    no_args_is_help=True,
)
costs_app.add_typer(budget_app, name="budget")

ProjectArg = Annotated[str, typer.Argument(help="Project name.", show_default=False)]


@costs_app.callback()
def report(
    ctx: typer.Context,
    project: Annotated[
        str | None,
        typer.Option(
            "--project", "-p", envvar="CIVICML_PROJECT", help="Project (default: every one)."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Start, YYYY-MM-DD or an ISO time (default: the 1st of this month)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End, exclusive, YYYY-MM-DD or an ISO time (default: now).")
    ] = None,
    by: Annotated[
        str, typer.Option(help="One row per run, pipeline, endpoint or project.")
    ] = "project",
    as_json: JsonOpt = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as an HTML page here.")
    ] = None,
) -> None:
    """Usage and cost over a period (UTC), most expensive first, with totals and budgets."""
    if ctx.invoked_subcommand is not None:
        return
    from civicml.core.errors import InvalidInputError

    if by not in ("run", "pipeline", "endpoint", "project"):
        raise InvalidInputError(
            f"--by {by!r} is not a grouping.", hint="Use run, pipeline, endpoint or project."
        )
    start, end = _moment(since, "--since"), _moment(until, "--until")
    if html is not None and project is None:
        raise InvalidInputError(
            "--html needs --project.", hint="Write e.g. civicml costs -p benefits --html c.html"
        )
    with client() as ml:
        found = ml.costs.report(project, since=start, until=end, by=by)
        if html is not None:
            page = ml.costs.report_html(project, since=start, until=end, by=by)
            html.write_text(page, encoding="utf-8")
    if as_json:
        print_json(found)
        return
    _show(found)
    if html is not None:
        console.print(f"Wrote {html}")


@budget_app.command("set")
def budget_set(
    project: ProjectArg,
    amount: Annotated[float, typer.Option(help="Amount per calendar month, in the currency.")],
    warn_at: Annotated[
        float, typer.Option(help="Share of the amount that triggers the warning (0-1].")
    ] = 0.8,
    hard_stop: Annotated[
        bool,
        typer.Option(
            "--hard-stop/--no-hard-stop",
            help="Refuse new runs and pipeline executions once the amount is spent.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set a project's monthly budget (needs members.write on it)."""
    with client() as ml:
        status = ml.costs.set_budget(
            project, amount=amount, warn_fraction=warn_at, hard_stop=hard_stop
        )
    _budget_out(status, as_json)


@budget_app.command("show")
def budget_show(project: ProjectArg, as_json: JsonOpt = False) -> None:
    """A project's budget and this month's spend against it."""
    with client() as ml:
        status = ml.costs.budget(project)
    if status is None:
        if as_json:
            print_json(None)
        else:
            console.print(f"Project {project} has no budget.")
        return
    _budget_out(status, as_json)


@budget_app.command("clear")
def budget_clear(project: ProjectArg) -> None:
    """Remove a project's budget (needs members.write on it)."""
    with client() as ml:
        ml.costs.clear_budget(project)
    console.print(f"Cleared the budget of {project}.")


def _moment(value: str | None, option: str) -> datetime | None:
    from civicml.core.errors import InvalidInputError

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as err:
        raise InvalidInputError(
            f"{option} {value!r} is not a date.", hint=f"Write e.g. {option} 2026-12-01"
        ) from err


def _show(found: CostReport) -> None:
    cur = found.currency
    rows: list[list[Any]] = [
        [
            line.name,
            line.project,
            _money(line.cost),
            f"{line.cpu_s:,.2f}",
            f"{line.gpu_s:,.2f}",
            f"{line.memory_gb_s / 3600:,.4f}",
            _size(line.peak_memory_bytes),
            f"{line.wall_s:,.2f}",
            line.invocations or "",
            _size(line.storage_bytes) if line.kind == "project" else "",
        ]
        for line in found.lines
    ]
    t = found.total
    rows.append(
        [
            "total",
            "",
            _money(t.cost),
            f"{t.cpu_s:,.2f}",
            f"{t.gpu_s:,.2f}",
            f"{t.memory_gb_s / 3600:,.4f}",
            _size(t.peak_memory_bytes),
            f"{t.wall_s:,.2f}",
            t.invocations or "",
            _size(t.storage_bytes),
        ]
    )
    table(
        f"Costs by {found.by}, {found.since:%Y-%m-%d %H:%M} to {found.until:%Y-%m-%d %H:%M} UTC",
        [
            found.by,
            "project",
            f"cost {cur}",
            "CPU s",
            "GPU s",
            "memory GB·h",
            "peak memory",
            "wall s",
            "invocations",
            "storage",
        ],
        rows,
    )
    for status in found.budgets:
        _budget_line(status)


def _budget_out(status: BudgetStatus, as_json: bool) -> None:
    if as_json:
        print_json(status)
    else:
        _budget_line(status)


def _budget_line(status: BudgetStatus) -> None:
    b = status.budget
    stop = ", hard stop" if b.hard_stop else ""
    console.print(
        f"Budget of {b.project}: {_money(status.spend)} of {_money(b.amount)} {b.currency} "
        f"spent in {status.month} ({100 * status.fraction:.0f} %, {status.state.value}; "
        f"warning at {100 * b.warn_fraction:.0f} %{stop})."
    )


def _money(value: float) -> str:
    return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"
