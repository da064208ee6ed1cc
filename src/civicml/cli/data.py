"""``civicml datasets``: ingest files as immutable dataset versions, list and inspect them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table
from civicml.cli.data_checks import expect_app, pii_app, redact

if TYPE_CHECKING:  # imported lazily: `civicml datasets --help` stays fast
    from civicml.data.schemas import ColumnProfile, DatasetVersion
    from civicml.sdk.datasets import DatasetsHandle

datasets_app = typer.Typer(
    help="Datasets: immutable versions with schema and profile.", no_args_is_help=True
)
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", "-f", help="csv, parquet or jsonl (default: from the suffix)."),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        help="Text encoding of a CSV file, e.g. utf-8, cp1252, latin-1, utf-16 (default: "
        "detected).",
    ),
]
DelimiterOpt = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        help="Field delimiter of a CSV file: ',', ';', '|' or '\\t' for tab (default: detected).",
    ),
]


def _handle(ml: Any, project: str) -> DatasetsHandle:
    """The datasets of ``project`` (created when missing, as the other groups do)."""
    return ml.project(project).datasets  # type: ignore[no-any-return]


@datasets_app.command("ingest")
def ingest(
    name: str,
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON Lines file.")],
    project: ProjectOpt = "default",
    format: FormatOpt = None,
    encoding: EncodingOpt = None,
    delimiter: DelimiterOpt = None,
    description: Annotated[str, typer.Option(help="Free text kept with the version.")] = "",
    json_: JsonOpt = False,
) -> None:
    """Ingest FILE as a new version of dataset NAME (identical content: the existing one).

    A CSV file's encoding and delimiter are detected unless given; the version records them."""
    with client() as ml:
        version = _handle(ml, project).ingest(
            name,
            file,
            format=format,
            encoding=encoding,
            delimiter=delimiter,
            description=description,
        )
    if json_:
        print_json(version)
        return
    console.print(
        f"{version.name} v{version.version}: {version.row_count:,} rows, "
        f"{len(version.columns)} columns, sha256:{version.digest}",
        markup=False,
    )
    if version.read_options is not None:
        console.print(f"Read as {_read_as(version)}.", markup=False)
    _print_changes(version)


@datasets_app.command("list")
def list_datasets(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List the datasets of a project."""
    with client() as ml:
        found = _handle(ml, project).list()
    if json_:
        print_json(found)
        return
    table(
        f"Datasets of {project}",
        ["name", "latest", "created", "by"],
        [[d.name, d.latest_version, fmt_time(d.created_at), d.created_by] for d in found],
    )


@datasets_app.command("versions")
def list_versions(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List the versions of a dataset."""
    with client() as ml:
        found = _handle(ml, project).versions(name)
    if json_:
        print_json(found)
        return
    table(
        f"Versions of {name}",
        ["version", "rows", "columns", "digest", "source", "ingested", "by"],
        [
            [
                v.version,
                f"{v.row_count:,}",
                len(v.columns),
                v.digest[:12],
                v.source_name or v.source_format.value,
                fmt_time(v.created_at),
                v.created_by,
            ]
            for v in found
        ],
    )


@datasets_app.command("show")
def show_version(
    name: str,
    version: Annotated[str, typer.Argument(help="Version number or 'latest'.")] = "latest",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Show a version: schema, profile and schema changes."""
    with client() as ml:
        found = _handle(ml, project).version(name, version)
    if json_:
        print_json(found)
        return
    console.print(
        f"{found.name} v{found.version}: {found.row_count:,} rows, sha256:{found.digest}, "
        f"from {found.source_name or found.source_format.value}, {fmt_time(found.created_at)} "
        f"by {found.created_by}",
        markup=False,
    )
    if found.read_options is not None:
        console.print(f"Read as {_read_as(found)}.", markup=False)
    if found.quality_status or found.classification:
        console.print(
            f"Quality: {found.quality_status or 'not checked'}; classification: "
            f"{found.classification or 'not scanned'}"
            + (f"; redaction of version id {found.redacted_from}" if found.redacted_from else "")
            + ".",
            markup=False,
        )
    table(
        "Columns",
        ["column", "type", "missing", "summary"],
        [[p.name, p.type, f"{p.missing:,}", _summary(p)] for p in found.profile],
    )
    _print_changes(found)


def _read_as(version: DatasetVersion) -> str:
    """``cp1252 text, semicolon-delimited`` from the version's read options."""
    opts = version.read_options
    if opts is None:  # pragma: no cover - callers check
        return ""
    names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
    return f"{opts.encoding} text, {names.get(opts.delimiter, repr(opts.delimiter))}-delimited"


def _summary(p: ColumnProfile) -> str:
    from civicml.data.schemas import ColumnKind

    if p.kind is ColumnKind.NUMERIC and p.count:
        q = p.quantiles or {}
        return (
            f"min {_num(p.min)}  p50 {_num(q.get('p50'))}  max {_num(p.max)}  mean {_num(p.mean)}"
        )
    if p.kind is ColumnKind.BOOLEAN:
        return f"true {p.true_count:,}  false {p.false_count:,}"
    if p.kind is ColumnKind.DATETIME:
        return f"{p.min} … {p.max}"
    if p.kind is ColumnKind.CATEGORICAL:
        top = ", ".join(f"{t.value} ({t.count:,})" for t in (p.top or [])[:3])
        return f"{p.distinct:,} distinct; top: {top}"
    return ""


def _print_changes(version: DatasetVersion) -> None:
    changes = version.schema_changes
    if changes is None or not (changes.changed or changes.nullability_changed):
        return
    lines = [f"Schema changes since v{changes.previous_version}:"]
    lines += [f"  + {c.name} ({c.type})" for c in changes.added]
    lines += [f"  - {c.name} ({c.type})" for c in changes.removed]
    lines += [f"  ~ {c.name}: {c.before} → {c.after}" for c in changes.retyped]
    lines += [
        f"  ? {n}: missing values appeared or disappeared" for n in changes.nullability_changed
    ]
    console.print("\n".join(lines), markup=False)


def _num(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, int | float) else "-"


# Quality expectations, personal data and redaction (civicml.cli.data_checks).
datasets_app.add_typer(expect_app, name="expect")
datasets_app.add_typer(pii_app, name="pii")
datasets_app.command("redact")(redact)
