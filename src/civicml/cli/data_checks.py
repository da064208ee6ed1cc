"""``civicml datasets expect|pii|redact``: quality expectations, personal data, redaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, print_json, table, version_ref

if TYPE_CHECKING:
    from civicml.data.expectation_schemas import QualityReport
    from civicml.data.pii_schemas import PiiReport

__all__ = ["expect_app", "pii_app", "redact"]

expect_app = typer.Typer(
    help="Quality expectations: add, list, remove, run; reports and quarantine overrides.",
    no_args_is_help=True,
)
pii_app = typer.Typer(
    help="Personal data: scan a version, show its report, justify training on it.",
    no_args_is_help=True,
)
VersionArg = Annotated[str, typer.Argument(help="Version number or 'latest'.")]
Justify = Annotated[
    str, typer.Option("--justification", help="Why (10-2000 characters; kept in the audit trail).")
]
Columns = Annotated[list[str] | None, typer.Option(help="Column (repeat the option for more).")]


def _bound(text: str | None) -> float | str | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text  # an ISO date or time


@expect_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Dataset.")],
    expectation: Annotated[str, typer.Argument(help="Name of the new expectation.")],
    kind: Annotated[
        str,
        typer.Option(
            help="not_null, unique, between, in_set, match_regex, row_count_between, "
            "freshness, references or sql."
        ),
    ],
    column: Annotated[str | None, typer.Option(help="The column checked.")] = None,
    min: Annotated[str | None, typer.Option(help="Lower bound (number or ISO date).")] = None,
    max: Annotated[str | None, typer.Option(help="Upper bound (number or ISO date).")] = None,
    strict: Annotated[bool, typer.Option(help="between: exclude the bounds.")] = False,
    value: Annotated[
        list[str] | None, typer.Option(help="in_set: an allowed value (repeat).")
    ] = None,
    pattern: Annotated[str | None, typer.Option(help="match_regex: an RE2 pattern.")] = None,
    max_age: Annotated[str | None, typer.Option(help="freshness: e.g. 36h, 7d.")] = None,
    ref_dataset: Annotated[str | None, typer.Option(help="references: the dataset.")] = None,
    ref_column: Annotated[str | None, typer.Option(help="references: its column.")] = None,
    ref_version: Annotated[int | None, typer.Option(help="references: its version.")] = None,
    sql: Annotated[
        str | None, typer.Option(help="sql: one SELECT over 'data' returning failing rows.")
    ] = None,
    mostly: Annotated[float, typer.Option(help="Share of rows that must pass.")] = 1.0,
    blocking: Annotated[
        bool, typer.Option("--blocking/--non-blocking", help="A failure quarantines.")
    ] = True,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Add an expectation to dataset NAME (checked against its latest version)."""
    fields: dict[str, Any] = {
        "column": column,
        "min": _bound(min),
        "max": _bound(max),
        "strict": strict,
        "values": value,
        "pattern": pattern,
        "max_age": max_age,
        "dataset": ref_dataset,
        "dataset_column": ref_column,
        "dataset_version": ref_version,
        "sql": sql,
        "mostly": mostly,
        "blocking": blocking,
        "description": description,
    }
    with client() as ml:
        found = ml.project(project).datasets.expectations.add(
            name, expectation, kind=kind, **{k: v for k, v in fields.items() if v is not None}
        )
    if json_:
        print_json(found)
        return
    console.print(
        f"Expectation {found.name} ({found.kind.value}, "
        f"{'blocking' if found.blocking else 'non-blocking'}) added to {name}.",
        markup=False,
    )


@expect_app.command("list")
def list_expectations(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List the expectations of dataset NAME."""
    with client() as ml:
        found = ml.project(project).datasets.expectations.list(name)
    if json_:
        print_json(found)
        return
    table(
        f"Expectations of {name}",
        ["name", "kind", "column", "blocking", "by"],
        [
            [e.name, e.kind.value, e.column or "", "yes" if e.blocking else "no", e.created_by]
            for e in found
        ],
    )


@expect_app.command("remove")
def remove(name: str, expectation: str, project: ProjectOpt = "default") -> None:
    """Remove an expectation of dataset NAME."""
    with client() as ml:
        ml.project(project).datasets.expectations.remove(name, expectation)
    console.print(f"Expectation {expectation} removed from {name}.", markup=False)


@expect_app.command("run")
def run(
    name: str,
    version: VersionArg = "latest",
    sample_rows: Annotated[int, typer.Option(help="Failing rows kept per expectation.")] = 20,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Check a version of NAME against its expectations (exit 1 when it is quarantined)."""
    with client() as ml:
        report = ml.project(project).datasets.expectations.run(
            name, version_ref(version), sample_rows=sample_rows
        )
    if report is None:
        console.print(f"Dataset {name} has no expectations.", markup=False)
        return
    _show_quality(report, json_)
    if report.status.value == "quarantined":
        raise typer.Exit(1)


@expect_app.command("report")
def report(
    name: str,
    version: VersionArg = "latest",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Show the newest quality report of a version of NAME."""
    with client() as ml:
        found = ml.project(project).datasets.expectations.report(name, version_ref(version))
    _show_quality(found, json_)


@expect_app.command("override")
def override(
    name: str,
    version: VersionArg,
    justification: Justify,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Release a quarantined version for training and pipelines (datasets.override_quarantine)."""
    with client() as ml:
        found = ml.project(project).datasets.expectations.override(
            name, version_ref(version), justification=justification
        )
    if json_:
        print_json(found)
        return
    console.print(f"{found.name} v{found.version} released ({found.quality_status}).", markup=False)


def _show_quality(report: QualityReport, json_: bool) -> None:
    if json_:
        print_json(report)
        return
    console.print(
        f"{report.dataset} v{report.version}: {report.status.value} — {report.evaluated} "
        f"expectation(s), {report.failed} failed ({report.blocking_failed} blocking).",
        markup=False,
    )
    table(
        "Results",
        ["expectation", "kind", "blocking", "result", "failing rows", "found"],
        [
            [
                r.name,
                r.kind.value,
                "yes" if r.blocking else "no",
                r.status,
                "" if r.failing_rows is None else f"{r.failing_rows:,}",
                r.message,
            ]
            for r in report.results
        ],
    )


@pii_app.command("scan")
def scan(
    name: str,
    version: VersionArg = "latest",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Scan a version of NAME for personal data and classify it."""
    with client() as ml:
        found = ml.project(project).datasets.scan_pii(name, version_ref(version))
    _show_pii(found, json_)


@pii_app.command("report")
def pii_report(
    name: str,
    version: VersionArg = "latest",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Show the newest personal-data scan of a version of NAME."""
    with client() as ml:
        found = ml.project(project).datasets.pii_report(name, version_ref(version))
    _show_pii(found, json_)


@pii_app.command("justify")
def justify(
    name: str,
    version: VersionArg,
    justification: Justify,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Record why a version classified personal may be trained on."""
    with client() as ml:
        found = ml.project(project).datasets.justify_personal_use(
            name, version_ref(version), justification=justification
        )
    if json_:
        print_json(found)
        return
    console.print(f"Personal use of {found.name} v{found.version} justified.", markup=False)


def _show_pii(report: PiiReport, json_: bool) -> None:
    if json_:
        print_json(report)
        return
    console.print(
        f"{report.dataset} v{report.version}: {report.classification.value} — "
        f"{report.columns_scanned} column(s), {report.rows_scanned:,} of {report.rows:,} rows "
        f"sampled{'' if report.complete else ' (time budget reached)'}.",
        markup=False,
    )
    table(
        "Personal data",
        ["column", "type", "confidence", "matched", "evidence", "redacted"],
        [
            [
                f.column,
                f.type.value,
                f"{f.confidence:.2f}",
                f"{f.matched:,}/{f.sampled:,}",
                f.evidence,
                f.redacted or "",
            ]
            for f in report.findings
        ],
    )


def redact(
    name: str,
    version: VersionArg = "latest",
    drop: Columns = None,
    mask: Columns = None,
    hash: Columns = None,
    year: Annotated[list[str] | None, typer.Option(help="Date column to its year.")] = None,
    month: Annotated[list[str] | None, typer.Option(help="Date column to its month.")] = None,
    age_band: Annotated[list[str] | None, typer.Option(help="Age column to bands.")] = None,
    postcode: Annotated[list[str] | None, typer.Option(help="Postcode to its prefix.")] = None,
    width: Annotated[int, typer.Option(help="Years per age band.")] = 10,
    keep: Annotated[int, typer.Option(help="mask/postcode: characters kept.")] = 0,
    target: Annotated[str | None, typer.Option(help="Write to this dataset instead.")] = None,
    quasi: Annotated[
        list[str] | None, typer.Option(help="Quasi-identifier for the k-anonymity check.")
    ] = None,
    min_k: Annotated[int, typer.Option(help="Refuse when k is below this.")] = 1,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Write a redacted successor of a version of NAME (DerivedFrom lineage)."""
    rules: list[dict[str, Any]] = []
    for action, cols, extra in (
        ("drop", drop, {}),
        ("mask", mask, {"keep": keep}),
        ("hash", hash, {}),
        ("generalize_date", year, {"granularity": "year"}),
        ("generalize_date", month, {"granularity": "month"}),
        ("age_band", age_band, {"width": width}),
        ("postcode_prefix", postcode, {"keep": keep}),
    ):
        rules += [{"column": c, "action": action, **extra} for c in cols or []]
    with client() as ml:
        result = ml.project(project).datasets.redact(
            name,
            version_ref(version),
            rules=rules,
            target=target,
            quasi_identifiers=quasi or [],
            min_k=min_k,
        )
    if json_:
        print_json(result)
        return
    k = result.k_anonymity
    console.print(
        f"{result.version.name} v{result.version.version}: redaction of {result.source.name} "
        f"v{result.source.version} ({len(result.rules)} rule(s)), classified "
        f"{result.classification.value if result.classification else 'not scanned'}"
        + ("" if k is None else f"; {k.k}-anonymous over {', '.join(k.quasi_identifiers)}")
        + ".",
        markup=False,
    )
