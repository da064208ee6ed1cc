"""What every CLI command shares: the client, output as JSON or rich tables, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the REST API's schema).")]
ProjectOpt = Annotated[
    str, typer.Option("--project", "-p", envvar="CIVICML_PROJECT", help="Project name.")
]


@dataclass
class State:
    url: str | None = None
    home: str | None = None
    user: str | None = None
    verbose: bool = False
    ca_bundle: str | None = None
    token: str | None = None  # --token / CIVICML_TOKEN: never printed


STATE = State()


@contextmanager
def client() -> Iterator[Any]:
    """A connected SDK client (embedded, or remote when --url / CIVICML_URL is set)."""
    from civicml.core.settings import Settings
    from civicml.sdk.client import connect

    settings = Settings.load(
        home=STATE.home,
        url=STATE.url,
        user=STATE.user,
        ca_bundle=STATE.ca_bundle,
        token=STATE.token,
    )
    ml = connect(settings=settings, user=STATE.user)
    try:
        yield ml
    finally:
        ml.close()


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return json.loads(value.model_dump_json())
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(dump(value), indent=2, ensure_ascii=False))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
    console.print(grid)


def fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}``."""
    from civicml.core.errors import InvalidInputError

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(
                f"{what} {item!r} is not KEY=VALUE.", hint=f"Write e.g. --{what.lower()} lr=0.1"
            )
        out[key] = value
    return out


def version_ref(version: str) -> int | str:
    """A version argument: ``"3"`` is version 3, anything else an alias (``production``)."""
    return int(version) if version.isdigit() else version
