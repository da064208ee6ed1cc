"""``civicml models``: register, approve, alias, archive model versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from civicml.cli._common import (
    STATE,
    JsonOpt,
    ProjectOpt,
    client,
    console,
    err_console,
    fmt_time,
    print_json,
    table,
    version_ref,
)

if TYPE_CHECKING:  # imported lazily: `civicml models --help` stays fast
    from civicml.registry.schemas import ModelVersion

models_app = typer.Typer(help="Model registry: versions, approval, aliases.", no_args_is_help=True)
NoteOpt = Annotated[str, typer.Option("--note", "-m", help="Why (recorded with your name).")]


def _show_version(mv: ModelVersion, json_: bool) -> None:
    if json_:
        print_json(mv)
        return
    rows = [
        ["status", mv.approval_status.value],
        ["by", mv.approval_by or ""],
        ["note", mv.approval_note or ""],
        ["run", mv.run_id or ""],
        ["artifact", f"sha256:{mv.artifact_digest}"],
        ["aliases", ", ".join(mv.aliases)],
        ["archived", str(mv.archived)],
        ["registered", fmt_time(mv.created_at)],
        ["registered by", mv.created_by],
    ]
    rows += [
        [f"metric {k}", "" if v is None else f"{v:.6g}"] for k, v in sorted(mv.metrics.items())
    ]
    rows += [[f"input {c.name}", c.type] for c in mv.signature or []]
    table(f"{mv.name} v{mv.version}", ["field", "value"], rows)


@models_app.command("list")
def list_models(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List registered models."""
    with client() as ml:
        found = ml.project(project).models.list()
    if json_:
        print_json(found)
        return
    table(
        f"Models of {project}",
        ["name", "latest", "aliases", "created"],
        [
            [
                m.name,
                m.latest_version,
                ", ".join(f"{a}→v{v}" for a, v in m.aliases.items()),
                fmt_time(m.created_at),
            ]
            for m in found
        ],
    )


@models_app.command("versions")
def list_versions(
    name: str,
    project: ProjectOpt = "default",
    archived: Annotated[bool, typer.Option("--archived")] = False,
    json_: JsonOpt = False,
) -> None:
    """List the versions of a model."""
    with client() as ml:
        found = ml.project(project).models.versions(name, include_archived=archived)
    if json_:
        print_json(found)
        return
    table(
        f"Versions of {name}",
        ["version", "status", "aliases", "run", "registered", "by"],
        [
            [
                v.version,
                v.approval_status.value,
                ", ".join(v.aliases),
                v.run_id or "",
                fmt_time(v.created_at),
                v.created_by,
            ]
            for v in found
        ],
    )


@models_app.command("show")
def show_version(
    name: str, version: str, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Show a version (by number or alias)."""
    with client() as ml:
        mv = ml.project(project).models.version(name, version)
    _show_version(mv, json_)


@models_app.command("register")
def register(
    name: str,
    project: ProjectOpt = "default",
    run: Annotated[str | None, typer.Option(help="Run whose artifacts are the model.")] = None,
    path: Annotated[str, typer.Option(help="Artifact folder of the run.")] = "model",
    file: Annotated[Path | None, typer.Option(help="Local model file or folder.")] = None,
    description: Annotated[str, typer.Option()] = "",
    json_: JsonOpt = False,
) -> None:
    """Register a new version (from a run's artifacts and/or a local file)."""
    from civicml.core.errors import InvalidInputError

    if run is None and file is None:
        raise InvalidInputError("Say what the model is: --run RUN_ID and/or --file PATH.")
    with client() as ml:
        mv = ml.project(project).models.register(
            name, file, run=run, artifact_path=path, description=description
        )
    if json_:
        print_json(mv)
    else:
        console.print(f"Registered {mv.name} v{mv.version} ({mv.approval_status.value})")


@models_app.command("approve")
def approve(
    name: str,
    version: str,
    note: NoteOpt,
    override: Annotated[
        str | None,
        typer.Option(
            "--override",
            help="Approve despite a failed gate: the written justification (needs a role the "
            "policy allows to override).",
        ),
    ] = None,
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Approve a version; its model's approval policy is evaluated as a gate first."""
    from civicml.core.errors import ConflictError, PermissionDeniedError

    # A refused approval (failed gate, separation of duties, an override the role does not
    # allow, an archived or already approved version) is a failed operation: exit 1, as a
    # failing `models gate` does. Bad input (a blank note, a short justification) exits 2.
    try:
        with client() as ml:
            mv = ml.project(project).models.approve(
                (name, version_ref(version)), note=note, override_justification=override
            )
    except (ConflictError, PermissionDeniedError) as err:  # GateFailedError is a ConflictError
        err_console.print(f"Error: {err.message}", markup=False)
        if err.hint:
            err_console.print(f"Hint: {err.hint}", markup=False)
        raise typer.Exit(1) from err
    _done(mv, json_)


@models_app.command("reject")
def reject(
    name: str, version: str, note: NoteOpt, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Reject a version."""
    with client() as ml:
        mv = ml.project(project).models.reject((name, version_ref(version)), note=note)
    _done(mv, json_)


@models_app.command("gate")
def gate(name: str, version: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Evaluate a version's approval gate now (changes nothing); exit 1 when it fails."""
    with client() as ml:
        result = ml.project(project).models.gate((name, version_ref(version)))
    if json_:
        print_json(result)
    elif result.policy_version is None:
        console.print(f"{name} has no approval policy; any reviewer may approve v{version}.")
    else:
        table(
            f"Gate of {name} v{result.version} (policy v{result.policy_version}): "
            + ("PASSED" if result.passed else "FAILED"),
            ["check", "kind", "result", "expected", "detail"],
            [
                [c.name, c.kind, "pass" if c.passed else "FAIL", c.expected, c.detail]
                for c in result.checks
            ],
        )
    if not result.passed:
        raise typer.Exit(1)


policy_app = typer.Typer(help="Approval policies: the evidence a version needs before approval.")
models_app.add_typer(policy_app, name="policy")


@policy_app.command("set")
def policy_set(
    name: str,
    file: Annotated[Path, typer.Argument(help="The policy file (TOML or JSON).")],
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Set the approval policy of a model from a file (a new policy version)."""
    from civicml.core.errors import InvalidInputError

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInputError(
            f"Cannot read the policy file {file}: {err.strerror}.", hint="Check the path."
        ) from err
    with client() as ml:
        record = ml.project(project).models.set_policy(name, text)
    if json_:
        print_json(record)
    else:
        console.print(f"Approval policy v{record.version} of {name} set by {record.created_by}")


@policy_app.command("show")
def policy_show(name: str, project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """Show the approval policy that applies to a model now."""
    with client() as ml:
        record = ml.project(project).models.policy(name)
    if json_:
        print_json(record)
    elif record is None:
        console.print(f"{name} has no approval policy.")
    else:
        console.print(
            f"# approval policy v{record.version} of {name}, set by {record.created_by} "
            f"at {fmt_time(record.created_at)}"
        )
        typer.echo(record.source)


@models_app.command("dashboard")
def dashboard(
    project: ProjectOpt = "default",
    include_archived: Annotated[
        bool, typer.Option("--archived", help="List archived versions too.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Every model version: status, deployments, metrics, bias, card, gate and the latest
    status of each monitor of the endpoints serving it."""
    with client() as ml:
        board = ml.project(project).models.dashboard(include_archived=include_archived)
    if json_:
        print_json(board)
        return
    table(
        f"Model dashboard of {board.project}",
        ["model", "status", "deployed", "metrics", "bias", "card", "risk", "gate", "monitors"],
        [
            [
                f"{r.model} v{r.version}",
                r.approval_status
                + (" (archived)" if r.archived else "")
                + (" (trained on erased data)" if r.trained_on_erased_data else ""),
                ", ".join(r.endpoints),
                ", ".join(
                    f"{k}={v:.3g}" for k, v in sorted(r.metrics.items())[:3] if v is not None
                ),
                ""
                if r.bias is None
                else ", ".join(f"{k}={v:.3g}" for k, v in r.bias.items() if v is not None),
                f"{r.card_status}" + ("" if r.card_complete else f", {r.card_missing} missing"),
                r.risk_rating or "",
                r.gate + (f" ({len(r.gate_failed)} failed)" if r.gate_failed else ""),
                ", ".join(f"{name}: {status}" for name, status in sorted(r.monitors.items())),
            ]
            for r in board.rows
        ],
    )


def _done(mv: ModelVersion, json_: bool) -> None:
    if json_:
        print_json(mv)
    else:
        console.print(
            f"{mv.name} v{mv.version} is {mv.approval_status.value} (by {mv.approval_by})"
        )


@models_app.command("history")
def history(
    name: str, version: str, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Approval history of a version."""
    with client() as ml:
        records = ml.backend.registry.approval_history(project, name, version)
    if json_:
        print_json(records)
        return
    table(
        f"Approval history of {name} v{version}",
        ["when", "from", "to", "by", "note"],
        [[fmt_time(r.at), r.from_status.value, r.to_status.value, r.by, r.note] for r in records],
    )


@models_app.command("alias")
def set_alias(
    name: str, alias: str, version: int, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Point an alias (e.g. production) at a version."""
    with client() as ml:
        mv = ml.backend.registry.set_alias(project, name, alias, version)
    if json_:
        print_json(mv)
    else:
        console.print(f"{name}@{alias} → v{mv.version}")


@models_app.command("unalias")
def delete_alias(name: str, alias: str, project: ProjectOpt = "default") -> None:
    """Remove an alias."""
    with client() as ml:
        ml.backend.registry.delete_alias(project, name, alias)
    console.print(f"Removed {name}@{alias}")


@models_app.command("archive")
def archive(
    name: str, version: str, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Archive a version (hidden from listings, kept forever)."""
    with client() as ml:
        mv = ml.backend.registry.archive_version(project, name, version)
    if json_:
        print_json(mv)
    else:
        console.print(f"Archived {name} v{mv.version}")


@models_app.command("unarchive")
def unarchive(
    name: str, version: str, project: ProjectOpt = "default", json_: JsonOpt = False
) -> None:
    """Bring an archived version back."""
    with client() as ml:
        mv = ml.backend.registry.unarchive_version(project, name, version)
    if json_:
        print_json(mv)
    else:
        console.print(f"Unarchived {name} v{mv.version}")


@models_app.command("delete-version")
def delete_version(name: str, version: str, project: ProjectOpt = "default") -> None:
    """Delete a version that nothing references (aliases, approval, lineage)."""
    with client() as ml:
        ml.backend.registry.delete_version(project, name, version)
    console.print(f"Deleted {name} v{version}")


@models_app.command("export")
def export_version(
    name: str,
    version: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Package file to write (a tar).")],
    project: ProjectOpt = "default",
) -> None:
    """Write a signed package of a version (for import on another civicml)."""
    with client() as ml:
        signer = ml.project(project).models.export((name, version_ref(version)), output)
    console.print(f"Exported {name} v{version} to {output}, signed by key {signer}")


@models_app.command("import")
def import_version(
    package: Path,
    project: ProjectOpt = "default",
    name: Annotated[str | None, typer.Option(help="Register under this model name.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Verify a signed package (trusted_signers, every SHA-256) and register its model.

    The new version is PendingManualApproval: approve it on this installation too. Exits 1
    when the package fails verification, 2 for unreadable input."""
    from civicml.core.errors import InvalidInputError
    from civicml.oversight.packages import PackageVerificationError

    if not package.is_file():
        raise InvalidInputError(
            f"No package file {package.name!r}.", hint="Give the tar written by 'models export'."
        )
    try:
        with client() as ml:
            mv = ml.project(project).models.import_package(package, name=name)
    except PackageVerificationError as err:
        err_console.print(f"Error: {err.message}", markup=False)
        if err.hint:
            err_console.print(f"Hint: {err.hint}", markup=False)
        raise typer.Exit(1) from err
    if json_:
        print_json(mv)
    else:
        console.print(f"Imported {mv.name} v{mv.version} ({mv.approval_status.value})")


@models_app.command("convert")
def convert(json_: JsonOpt = False) -> None:
    """Convert model files saved before civicml 0.9 (model.joblib pickles) to model.skops.

    Runs on the machine that holds the store, never through a server: each bundle's bytes are
    checked against the registry's SHA-256 before its pickle is read, once (docs/security.md).
    """
    from civicml.core.errors import ConfigurationError
    from civicml.core.settings import Settings
    from civicml.evaluation.models import convert_model_bundles
    from civicml.sdk.embedded import open_context

    settings = Settings.load(home=STATE.home, url=STATE.url, user=STATE.user)
    if settings.url:
        raise ConfigurationError(
            "civicml models convert works on the local store, not through a server.",
            hint="Run it on the server's machine without --url / CIVICML_URL, with the "
            "server's home and database settings.",
        )
    ctx = open_context(settings)
    try:
        report = convert_model_bundles(ctx)
    finally:
        ctx.db.close()
    if json_:
        print_json({"converted": report.converted, "failed": dict(report.failed)})
    else:
        for label in report.converted:
            console.print(f"Converted {label}")
        for label, why in report.failed:
            err_console.print(f"Not converted {label}: {why}")
        if not report.converted and not report.failed:
            console.print("Nothing to convert: every model bundle is in the safe format.")
    if report.failed:
        raise typer.Exit(1)
