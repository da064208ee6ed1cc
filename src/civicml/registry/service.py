"""The model registry service: registered models, versions, approval status, aliases.

Every change is one unit of work: the row change, its lineage and its audit event commit together.
Registering, alias, archive and delete writes first lock the registered model's row, approval
changes the version's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are serialised
by ``BEGIN IMMEDIATE``), so version numbers are allocated without duplicates, aliases move
atomically and every rule is checked against the state it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from civicml.core.errors import (
    CivicMLError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from civicml.core.ids import new_id, validate_name
from civicml.core.names import already_exists, same_user
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.registry._inputs import (
    Files,
    approval_note,
    check_alias_name,
    check_artifacts,
    check_project_digests,
    clean_metrics,
    parse_alias_ref,
    parse_signature,
    parse_status,
)
from civicml.registry._queries import (
    DbRow,
    alias_row,
    aliases_by_version,
    approval_records,
    cli_hint,
    downstream_names,
    find_model,
    manifest_bytes,
    model_row,
    model_rows,
    next_history_id,
    parse_manifest,
    run_files,
    run_metrics,
    run_row,
    to_registered_model,
    to_registered_models,
    to_version,
    to_versions,
    version_by_id,
    version_row,
    version_rows,
)
from civicml.registry._tables import (
    approval_history,
    approval_policies,
    model_aliases,
    model_versions,
    registered_models,
)
from civicml.registry.etags import alias_etag, check_if_match, policy_etag_of
from civicml.registry.schemas import (
    PROTECTED_ALIASES,
    ApprovalPolicyRecord,
    ApprovalRecord,
    ApprovalStatus,
    ColumnSpec,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.artifacts import Stored
from civicml.store.context import Context
from civicml.store.db import UnitOfWork
from civicml.store.paths import validate_relative_path
from civicml.store.signing import sign_version, verify_statement, version_statement
from civicml.tracking._tables import runs

__all__ = ["RegistryService"]

_T = TypeVar("_T")
_RETRIES = 3


class RegistryService:
    """Registers model versions and governs their approval status and aliases.

    Args:
        ctx: The stores, principal and clock every call runs with.

    Example:
        >>> registry = RegistryService(ctx)  # doctest: +SKIP
        >>> mv = registry.register("benefits", "eligibility", run_id=run.id)  # doctest: +SKIP
        >>> registry.approve("benefits", "eligibility", mv.version, "ok")  # doctest: +SKIP
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)

    # Registered models ------------------------------------------------------------------------
    def create_model(self, project: str, name: str, description: str = "") -> RegisteredModel:
        """Create an empty registered model (``register`` also creates it when missing).

        Raises:
            NotFoundError: The project does not exist.
            InvalidInputError: The model name is not valid.
            ConflictError: The project already has a model with that name.
        """
        validate_name("Model", name)
        proj = self._projects.get(project, "models.write")
        try:
            with self._ctx.db.write() as uow:
                existing = find_model(uow.conn, proj.id, name)
                if existing is not None:  # in any letter case
                    raise _model_exists(proj.name, name, existing.name)
                row = self._insert_model(uow, proj, name, description)
                return to_registered_model(uow.conn, proj.name, row)
        except IntegrityError as err:  # created concurrently
            raise _model_exists(proj.name, name, name) from err

    def get_model(self, project: str, name: str) -> RegisteredModel:
        """The registered model ``name`` of ``project``.

        Raises:
            NotFoundError: The project or the model does not exist (with close names as a hint).
        """
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            return to_registered_model(conn, proj.name, model_row(conn, proj, name))

    def list_models(self, project: str) -> list[RegisteredModel]:
        """Every registered model of ``project``, by name."""
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            return to_registered_models(conn, proj.name, model_rows(conn, proj.id))

    # Versions ---------------------------------------------------------------------------------
    def register(
        self,
        project: str,
        name: str,
        *,
        run_id: str | None = None,
        artifact_path: str = "model",
        artifacts: Mapping[str, str] | None = None,
        signature: Sequence[ColumnSpec | Mapping[str, Any]] | None = None,
        metrics: Mapping[str, float | None] | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Register a new version of model ``name``, creating the model when missing.

        The version points at a manifest in the artifact store that names each of its files with
        SHA-256 and size. With ``run_id`` the files are the run's artifacts under
        ``artifact_path``; with ``artifacts`` they are ``{relative path: sha256}`` of bytes already
        in the artifact store (``run_id`` then only links the version to its run). The new
        version starts ``PendingManualApproval``.

        Args:
            project: Project name.
            name: Model name (created when missing).
            run_id: The run that produced the model; it must belong to ``project``.
            artifact_path: The folder (or file) of the run's artifacts that make up the model.
            artifacts: Files of the model by digest, instead of (or besides) a run's artifacts.
            signature: Input columns, e.g. ``[{"name": "age", "type": "integer"}]``.
            metrics: Evaluation metrics; default the run's latest metrics (NaN ones skipped).
                NaN and infinite values are stored as None.
            description: Free text.

        Returns:
            The new version.

        Raises:
            InvalidInputError: Neither run nor artifacts given, a bad name, path, digest,
                signature or metric, or a run of another project.
            NotFoundError: The project, the run, the run's artifacts under ``artifact_path`` or
                an artifact digest does not exist.
        """
        validate_name("Model", name)
        artifact_path = validate_relative_path(artifact_path.rstrip("/"))
        columns = parse_signature(signature)
        given_metrics = None if metrics is None else clean_metrics(metrics)
        if run_id is None and artifacts is None:
            raise InvalidInputError(
                f"Registering a version of model {name!r} needs its files.",
                hint="Pass run_id=<run id> (the run's artifacts under artifact_path are used) or "
                "artifacts={'model.pkl': '<sha256>'} of bytes already in the artifact store.",
            )
        proj = self._projects.get(project, "models.write")
        files = None if artifacts is None else check_artifacts(self._ctx.artifacts, artifacts)

        def attempt(uow: UnitOfWork) -> ModelVersion:
            return self._register(
                uow,
                proj,
                name,
                run_id=run_id,
                artifact_path=artifact_path,
                files=files,
                columns=columns,
                metrics=given_metrics,
                description=description,
            )

        return self._retrying(attempt)

    def get_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        """One version, by number (``3`` or ``"3"``) or by alias (``"production"``).

        Raises:
            NotFoundError: The project, model, version or alias does not exist.
            InvalidInputError: ``version`` is neither a positive number nor an alias name.
        """
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            model = model_row(conn, proj, name)
            row = version_row(conn, proj.name, model, version)
            return to_versions(conn, proj.name, model.name, [row])[0]

    def list_versions(
        self, project: str, name: str, *, include_archived: bool = False
    ) -> list[ModelVersion]:
        """The versions of a model, oldest first; archived ones only when asked for."""
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            model = model_row(conn, proj, name)
            rows = version_rows(conn, model.id, include_archived=include_archived)
            return to_versions(conn, proj.name, model.name, rows)

    def get_manifest(self, version: ModelVersion) -> dict[str, Any]:
        """The manifest of a version: ``{"files": {path: {"digest": ..., "size": ...}}}``.

        The manifest's bytes are checked against ``version.artifact_digest`` as they are read.

        Raises:
            NotFoundError: The manifest is not in the artifact store.
            ArtifactIntegrityError: The stored bytes no longer match their digest.
        """
        data = self._ctx.artifacts.read_bytes(version.artifact_digest)
        return parse_manifest(data, version.artifact_digest)

    # Approval ---------------------------------------------------------------------------------
    def update_approval(
        self,
        project: str,
        name: str,
        version: int | str,
        status: ApprovalStatus | str,
        note: str = "",
        evidence: Mapping[str, Any] | None = None,
        *,
        also: Callable[[UnitOfWork], None] | None = None,
    ) -> ModelVersion:
        """Move a version to another approval status, recording who, why and when.

        Approvals are governed: whoever registered the version or started the run that trained
        it cannot approve it (separation of duties), and a model with an approval policy is
        approved only with ``evidence`` of a gate evaluation against its current policy that
        passed or was overridden — :class:`civicml.oversight.ApprovalService` evaluates the gate
        and calls this.

        Args:
            project: Project name.
            name: Model name.
            version: Version number or alias.
            status: ``PendingManualApproval``, ``Approved`` or ``Rejected``.
            note: Why; required (non-blank) for ``Approved`` and ``Rejected``.
            evidence: Recorded with the change (approval history and audit): the gate result
                ``{"gate": {"policy_version", "passed", "checks"}, "override": {...}}``.
            also: More writes that must commit with the change (e.g. its lineage), called
                inside the unit of work after the change.

        Returns:
            The version after the change.

        Raises:
            InvalidInputError: Unknown status, or no note where one is required.
            NotFoundError: The project, model or version does not exist.
            PermissionDeniedError: The caller registered or trained the version.
            ConflictError: The version already has that status, it is archived and ``status``
                is ``Approved``, or its model has a policy and no passing (or overridden) gate
                evaluation of the current policy came with the approval.
        """
        target = parse_status(status)
        note = approval_note(note, target, name, version)
        proj = self._projects.get(project, "models.approve")
        refused: tuple[str, DbRow, str] | None = None  # (reason, version row, model name)
        try:
            with self._ctx.db.write() as uow:
                conn = uow.conn
                model = model_row(conn, proj, name)
                row = version_row(conn, proj.name, model, version, lock=True)
                current = ApprovalStatus(row.approval_status)
                refusal = self._approval_refusal(conn, proj, model, row, current, target, evidence)
                if refusal is not None:
                    reason, error = refusal
                    if target is ApprovalStatus.APPROVED:
                        refused = (reason, row, model.name)
                    raise error
                now, user = self._ctx.clock.now(), self._ctx.principal.user
                if target is ApprovalStatus.APPROVED:  # the approval binds these exact files
                    evidence = {**(evidence or {}), "manifest_digest": row.artifact_digest}
                conn.execute(
                    update(model_versions)
                    .where(model_versions.c.id == row.id)
                    .values(
                        approval_status=target.value,
                        approval_by=user,
                        approval_note=note,
                        approval_at=now,
                    )
                )
                conn.execute(
                    insert(approval_history).values(
                        id=next_history_id(conn, row.id),
                        version_id=row.id,
                        from_status=current.value,
                        to_status=target.value,
                        by=user,
                        note=note,
                        at=now,
                        evidence=dict(evidence) if evidence is not None else None,
                    )
                )
                ref = {"name": model.name, "version": row.version}
                self._audit.record(
                    uow,
                    "model_version.approval_changed",
                    "model_version",
                    row.id,
                    project=proj.name,
                    before={**ref, "approval_status": current.value},
                    after={
                        **ref,
                        "approval_status": target.value,
                        "note": note,
                        **({"evidence": dict(evidence)} if evidence is not None else {}),
                    },
                )
                if also is not None:
                    also(uow)
                return version_by_id(conn, proj.name, model.name, row.id)
        except CivicMLError as err:
            if refused is not None:  # rolled back; the refusal itself is recorded
                reason, row, model_name = refused
                self.record_approval_refusal(
                    proj.name, row.id, model_name, row.version, reason, err.message
                )
            raise

    def approve(self, project: str, name: str, version: int | str, note: str) -> ModelVersion:
        """Approve a version (``update_approval`` to ``Approved``); ``note`` says why."""
        return self.update_approval(project, name, version, ApprovalStatus.APPROVED, note)

    def reject(self, project: str, name: str, version: int | str, note: str) -> ModelVersion:
        """Reject a version (``update_approval`` to ``Rejected``); ``note`` says why."""
        return self.update_approval(project, name, version, ApprovalStatus.REJECTED, note)

    def approval_history(self, project: str, name: str, version: int | str) -> list[ApprovalRecord]:
        """Every approval status change of a version, oldest first."""
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            model = model_row(conn, proj, name)
            row = version_row(conn, proj.name, model, version)
            return approval_records(conn, model.name, row)

    def check_approved_files(self, mv: ModelVersion) -> None:
        """Raise unless ``mv`` is Approved and its approval bound the files it has now.

        Every approval records the digest of the version's manifest (which names each file
        with its SHA-256); a version whose manifest changed since — or whose approval predates
        that record — carries no approval for its current files. Deploy calls this.

        Raises:
            ConflictError: The version is not Approved, or its approved manifest is not its
                current one.
        """
        label = f"{mv.name}/{mv.version}"
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(approval_history.c.evidence)
                .where(
                    approval_history.c.version_id == mv.id,
                    approval_history.c.to_status == ApprovalStatus.APPROVED.value,
                )
                .order_by(approval_history.c.id.desc())
                .limit(1)
            ).first()
        bound = (row.evidence or {}).get("manifest_digest") if row is not None else None
        if mv.approval_status is not ApprovalStatus.APPROVED or bound != mv.artifact_digest:
            raise ConflictError(
                f"Model version {label} carries no approval of its current files: "
                + (
                    "it is not Approved"
                    if mv.approval_status is not ApprovalStatus.APPROVED
                    else "its approval recorded no manifest digest"
                    if bound is None
                    else f"it was approved with manifest sha256:{bound[:12]}…, and its manifest "
                    f"is now sha256:{mv.artifact_digest[:12]}…"
                )
                + ".",
                hint="Have a reviewer evaluate the gate and approve it again (reject it first "
                "if it still shows Approved): "
                + cli_hint(mv.project, "approve", mv.name, mv.version, "--note ..."),
            )

    def verify_version_signature(self, mv: ModelVersion) -> str:
        """Check the Ed25519 signature made over ``mv``'s manifest at registration.

        The signed bytes are :func:`civicml.store.signing.version_statement` of the project,
        model name, version number and manifest digest, as stored now; the key must be this
        installation's model-signing key or listed in ``trusted_signers``. Deploy calls this.

        Returns:
            ``"verified"``, or ``"absent"`` for a version registered before signing existed
            (migration 0011): such legacy versions still deploy, and the caller records it.

        Raises:
            ConflictError: A signature is stored and does not verify (the digest, the names or
                the signature were changed in the database, or the signer is not trusted).
        """
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(model_versions.c.manifest_signature, model_versions.c.artifact_digest).where(
                    model_versions.c.id == mv.id
                )
            ).first()
        if row is None:
            raise NotFoundError(
                f"Model version {mv.name}/{mv.version} does not exist.",
                hint=cli_hint(mv.project, "versions", mv.name),
            )
        if row.manifest_signature is None:
            return "absent"
        why = verify_statement(
            self._ctx.settings,
            version_statement(mv.project, mv.name, mv.version, row.artifact_digest),
            row.manifest_signature,
        )
        if why is not None:
            raise ConflictError(
                f"Model version {mv.name}/{mv.version} fails its registration signature check: "
                f"{why}. It is not deployed.",
                hint="Treat the registry database as tampered with and investigate "
                "('civicml audit verify'); register the model files again from a trusted source "
                "if needed, or list the signer's public key in trusted_signers.",
            )
        return "verified"

    def _approval_refusal(
        self,
        conn: Connection,
        proj: Project,
        model: DbRow,
        row: DbRow,
        current: ApprovalStatus,
        target: ApprovalStatus,
        evidence: Mapping[str, Any] | None,
    ) -> tuple[str, CivicMLError] | None:
        """Why a status change is refused, as ``(reason, error)``, checked before anything is
        written; ``None`` when it is allowed.

        The errors: ConflictError when the version already has that status, is archived, or
        the policy's gate evidence is missing or failed; PermissionDeniedError for separation
        of duties (the caller registered or trained it).
        """
        label = f"{model.name}/{row.version}"
        if current is target:
            others = ", ".join(s.value for s in ApprovalStatus if s is not target)
            return "already_" + target.value.lower(), ConflictError(
                f"Model version {label} is already {target.value}; nothing was changed.",
                hint=f"Choose another status ({others}), or register a new version: "
                + cli_hint(proj.name, "register", model.name, "--run <run-id>"),
            )
        if target is not ApprovalStatus.APPROVED:
            return None
        if row.archived:
            return "archived", ConflictError(
                f"Model version {label} is archived; archived versions cannot be approved.",
                hint="Unarchive it first: "
                + cli_hint(proj.name, "unarchive", model.name, row.version),
            )
        duties = self._separation_of_duties(conn, label, row)
        if duties is not None:
            return "separation_of_duties", duties
        seen = (evidence or {}).get("manifest_digest")
        if seen is not None and seen != row.artifact_digest:
            return "files_changed", ConflictError(
                f"The files of model version {label} changed while its approval was evaluated; "
                "nothing was approved.",
                hint="Evaluate the gate again and approve what is there now: "
                + cli_hint(proj.name, "gate", model.name, row.version),
            )
        policy = _latest_policy(conn, model.id)
        if policy is None:
            return None
        gate = (evidence or {}).get("gate")
        if not isinstance(gate, Mapping) or gate.get("policy_version") != policy.version:
            return "no_gate_evaluation", ConflictError(
                f"Model {model.name} has an approval policy (version {policy.version}); "
                f"version {row.version} can only be approved through its gate.",
                hint="Approve with the SDK, CLI or REST approve call, which evaluate the gate: "
                + cli_hint(proj.name, "approve", model.name, row.version, "--note ..."),
            )
        if not gate.get("passed") and not (evidence or {}).get("override"):
            return "gate_failed", ConflictError(
                f"The approval gate of {label} failed and no override was given.",
                hint="Fix what the gate reports, or override it with a justification.",
            )
        return None

    def check_approval_request(
        self, project: str, name: str, version: int | str, note: str
    ) -> None:
        """Raise unless the caller may ask to approve the version with ``note``: the note must
        say why, and whoever registered it or started the run that trained it may not approve
        it. Approval itself checks both again, atomically; this is for callers that must answer
        them before their own checks (the approval gate). A separation-of-duties refusal is
        audited (``model_version.approval_refused``).

        Raises:
            InvalidInputError: The note is blank.
            NotFoundError: The project, model or version does not exist.
            PermissionDeniedError: The caller registered or trained the version.
        """
        approval_note(note, ApprovalStatus.APPROVED, name, version)
        proj = self._projects.get(project, "models.approve")
        with self._ctx.db.read() as conn:
            model = model_row(conn, proj, name)
            row = version_row(conn, proj.name, model, version)
            duties = self._separation_of_duties(conn, f"{model.name}/{row.version}", row)
        if duties is not None:
            self.record_approval_refusal(
                proj.name, row.id, model.name, row.version, "separation_of_duties", duties.message
            )
            raise duties

    def record_approval_refusal(
        self,
        project: str,
        version_id: str,
        model: str,
        version: int,
        reason: str,
        message: str,
        **details: Any,
    ) -> None:
        """Audit a refused approval (``model_version.approval_refused``) in its own transaction:
        the refusal changes nothing, but that someone tried, and why it was refused, is kept.

        Args:
            reason: e.g. ``"separation_of_duties"``, ``"gate_failed"``, ``"archived"``.
            message: The refusal as the caller was told it.
            details: More facts for the record (the gate's failed checks, its policy version).
        """
        with self._ctx.db.write() as uow:
            self._audit.record(
                uow,
                "model_version.approval_refused",
                "model_version",
                version_id,
                project=project,
                after={
                    "name": model,
                    "version": version,
                    "reason": reason,
                    "message": message,
                    **details,
                },
            )

    def _separation_of_duties(
        self, conn: Connection, label: str, row: DbRow
    ) -> PermissionDeniedError | None:
        """The refusal when the caller registered or trained the version, else ``None``."""
        user = self._ctx.principal.user
        trained_by = (
            conn.execute(select(runs.c.created_by).where(runs.c.id == row.run_id)).scalar()
            if row.run_id
            else None
        )
        if same_user(user, row.created_by) or same_user(user, trained_by):
            did = "registered" if same_user(user, row.created_by) else "trained"
            return PermissionDeniedError(
                f"{user} {did} model version {label} and so cannot approve it "
                "(separation of duties).",
                hint="Ask a reviewer who neither trained nor registered it to approve it.",
            )
        return None

    # Approval policies ------------------------------------------------------------------------
    def set_approval_policy(
        self,
        project: str,
        name: str,
        policy: Mapping[str, Any],
        source: str,
        *,
        if_match: str | None = None,
    ) -> ApprovalPolicyRecord:
        """Store a new version of the approval policy of model ``name`` (the latest applies).

        ``policy`` must already be validated (:func:`civicml.oversight.policy.parse_policy`);
        ``source`` is the file as written, kept for the record.

        Args:
            if_match: The policy's ETag as read (:func:`~civicml.registry.etags.policy_etag`);
                refused when another policy version was set since. ``"*"``: only if the model
                has a policy.

        Raises:
            NotFoundError: The project or model does not exist.
            PreconditionFailedError: ``if_match`` is not the current policy's ETag.
        """
        proj = self._projects.get(project, "models.read")  # policies.write: refused, audited
        refused: list[tuple[str, str, CivicMLError]] = []  # (reason, model id, error)

        def attempt(uow: UnitOfWork) -> ApprovalPolicyRecord:
            model = model_row(uow.conn, proj, name, lock=True)
            refusal = self._policy_writer_refusal(uow.conn, proj, model)
            if refusal is not None:
                refused.append((refusal[0], model.id, refusal[1]))
                raise refusal[1]
            latest = _latest_policy(uow.conn, model.id)
            check_if_match(
                if_match,
                None if latest is None else policy_etag_of(model.name, latest.version),
                f"approval policy of model {model.name}",
                f"GET /api/v1/projects/{proj.name}/models/{model.name}/policy",
            )
            number = 1 if latest is None else latest.version + 1
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            uow.conn.execute(
                insert(approval_policies).values(
                    model_id=model.id,
                    version=number,
                    policy=dict(policy),
                    source=source,
                    created_at=now,
                    created_by=user,
                )
            )
            self._audit.record(
                uow,
                "model.policy_set",
                "model",
                model.id,
                project=proj.name,
                before=None if latest is None else {"policy_version": latest.version},
                after={"name": model.name, "policy_version": number, "policy": dict(policy)},
            )
            return ApprovalPolicyRecord(
                model=model.name,
                version=number,
                policy=dict(policy),
                source=source,
                created_at=now,
                created_by=user,
            )

        try:
            return self._retrying(attempt)
        except CivicMLError as err:
            if refused:  # rolled back; the refusal itself is recorded
                reason, model_id, _ = refused[-1]
                with self._ctx.db.write() as uow:
                    self._audit.record(
                        uow,
                        "model.policy_refused",
                        "model",
                        model_id,
                        project=proj.name,
                        after={"name": name, "reason": reason, "message": err.message},
                    )
            raise

    def _policy_writer_refusal(
        self, conn: Connection, proj: Project, model: DbRow
    ) -> tuple[str, PermissionDeniedError] | None:
        """Why the caller may not write the approval policy of ``model``, or ``None``.

        Only a role with ``policies.write`` on the project (``reviewer``, ``project-admin``,
        ``admin``, or a custom role) writes policies, and never someone who trained or
        registered a version of the model (separation of duties).
        """
        principal = self._ctx.principal
        access = self._projects.access
        if not access.allows(proj.id, proj.name, "policies.write"):
            held = ", ".join(sorted(access.roles_on(proj.id, proj.name))) or "none"
            return "role_not_allowed", PermissionDeniedError(
                f"{principal.user} may not write the approval policy of model {model.name}: "
                "that takes the permission 'policies.write' (roles reviewer, project-admin, "
                f"admin), which none of your roles there gives (your roles: {held}).",
                hint="Ask a reviewer or a project admin to set the policy.",
            )
        versions = conn.execute(
            select(model_versions.c.version, model_versions.c.created_by, runs.c.created_by)
            .select_from(model_versions.outerjoin(runs, runs.c.id == model_versions.c.run_id))
            .where(model_versions.c.model_id == model.id)
            .order_by(model_versions.c.version)
        ).all()
        for number, registered_by, trained_by in versions:
            did = (
                "registered"
                if same_user(registered_by, principal.user)
                else "trained"
                if same_user(trained_by, principal.user)
                else None
            )
            if did is not None:
                return "separation_of_duties", PermissionDeniedError(
                    f"{principal.user} {did} model version {model.name}/{number} and so cannot "
                    "write the approval policy of its model (separation of duties).",
                    hint="Ask a reviewer who neither trained nor registered a version of the "
                    "model to set its policy.",
                )
        return None

    def approval_policy(self, project: str, name: str) -> ApprovalPolicyRecord | None:
        """The approval policy that applies to model ``name`` (its latest), or ``None``."""
        history = self.approval_policy_history(project, name, latest_only=True)
        return history[0] if history else None

    def approval_policy_history(
        self, project: str, name: str, *, latest_only: bool = False
    ) -> list[ApprovalPolicyRecord]:
        """Every version of the approval policy of model ``name``, newest first."""
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            model = model_row(conn, proj, name)
            query = (
                select(approval_policies)
                .where(approval_policies.c.model_id == model.id)
                .order_by(approval_policies.c.version.desc())
            )
            if latest_only:
                query = query.limit(1)
            return [
                ApprovalPolicyRecord(
                    model=model.name,
                    version=r.version,
                    policy=r.policy,
                    source=r.source,
                    created_at=r.created_at,
                    created_by=r.created_by,
                )
                for r in conn.execute(query).all()
            ]

    # Aliases ----------------------------------------------------------------------------------
    def get_alias(self, project: str, name: str, alias: str) -> ModelAlias:
        """The alias ``alias`` of model ``name`` and the version it points at.

        Raises:
            NotFoundError: The project, model or alias does not exist.
            InvalidInputError: ``alias`` is a version number.
        """
        proj = self._projects.get(project, "models.read")
        with self._ctx.db.read() as conn:
            model = model_row(conn, proj, name)
            alias = parse_alias_ref(alias)
            version_row(conn, proj.name, model, alias)  # NotFoundError naming close aliases
            row = alias_row(conn, model.id, alias)
        if row is None:  # removed between the two reads
            raise NotFoundError(f"Model {model.name} has no alias {alias!r}.")
        return ModelAlias(
            project=proj.name,
            model=model.name,
            alias=row.alias,
            version=row.version,
            version_id=row.version_id,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )

    def set_alias(
        self,
        project: str,
        name: str,
        alias: str,
        version: int | str,
        *,
        if_match: str | None = None,
    ) -> ModelVersion:
        """Point ``alias`` (e.g. ``"production"``) at a version, moving it if it exists.

        The move is one transaction: readers see the old version or the new one, never neither.
        Aliases that the model's approval policy lists under ``[aliases] require_approved``
        (``production`` when the policy does not say, or there is no policy) may only point at
        an Approved version.

        Args:
            if_match: The alias's ETag as read (:func:`~civicml.registry.etags.alias_etag`);
                the move is refused when the alias has moved since. ``"*"``: only if it exists.

        Returns:
            The version the alias now points at.

        Raises:
            InvalidInputError: The alias name is not valid or looks like a version number.
            NotFoundError: The project, model or version does not exist.
            ConflictError: The version is archived, or the alias requires an Approved version
                and it is not Approved.
            PreconditionFailedError: ``if_match`` is not the alias's current ETag.
        """
        check_alias_name(alias)
        proj = self._projects.get(project, "models.write")
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = model_row(conn, proj, name, lock=True)
            old = alias_row(conn, model.id, alias)
            alias = alias if old is None else old.alias  # moved in the case it was set with
            check_if_match(
                if_match,
                None if old is None else alias_etag(old.version_id, alias),
                f"alias {alias!r} of model {model.name}",
                _alias_url(proj.name, model.name, alias),
            )
            target = version_row(conn, proj.name, model, version)
            if target.archived:
                raise ConflictError(
                    f"Model version {model.name}/{target.version} is archived; an alias cannot "
                    "point at it.",
                    hint="Unarchive it first: "
                    + cli_hint(proj.name, "unarchive", model.name, target.version),
                )
            protected = _aliases_requiring_approval(conn, model.id)
            approved = target.approval_status == ApprovalStatus.APPROVED.value
            if alias.casefold() in protected and not approved:
                raise ConflictError(
                    f"Alias {alias!r} may only point at an Approved version; model version "
                    f"{model.name}/{target.version} is {target.approval_status}.",
                    hint="Approve it first: "
                    + cli_hint(proj.name, "approve", model.name, target.version, "--note ...")
                    + ", or use another alias (e.g. 'staging'). The model's approval policy "
                    "names these aliases under [aliases] require_approved (default: "
                    "['production']).",
                )
            if old is not None and old.version_id == target.id:
                return version_by_id(conn, proj.name, model.name, target.id)
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            if old is None:
                conn.execute(
                    insert(model_aliases).values(
                        model_id=model.id,
                        alias=alias,
                        version_id=target.id,
                        updated_at=now,
                        updated_by=user,
                    )
                )
            else:
                conn.execute(
                    update(model_aliases)
                    .where(model_aliases.c.model_id == model.id, model_aliases.c.alias == alias)
                    .values(version_id=target.id, updated_at=now, updated_by=user)
                )
            ref = {"name": model.name, "alias": alias}
            self._audit.record(
                uow,
                "model_alias.set",
                "model_alias",
                f"{model.id}@{alias}",
                project=proj.name,
                before=None if old is None else {**ref, "version": old.version},
                after={**ref, "version": target.version},
            )
            return version_by_id(conn, proj.name, model.name, target.id)

    def delete_alias(
        self, project: str, name: str, alias: str, *, if_match: str | None = None
    ) -> None:
        """Remove an alias; the version it pointed at is unchanged.

        Args:
            if_match: The alias's ETag as read; refused when the alias has moved since.

        Raises:
            NotFoundError: The project, model or alias does not exist.
            PreconditionFailedError: ``if_match`` is not the alias's current ETag.
        """
        proj = self._projects.get(project, "models.write")
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = model_row(conn, proj, name, lock=True)
            alias = parse_alias_ref(alias)  # the same (stripped) name for lookup and delete
            row = version_row(conn, proj.name, model, alias)
            alias = getattr(alias_row(conn, model.id, alias), "alias", alias)  # as stored
            check_if_match(
                if_match,
                alias_etag(row.id, alias),
                f"alias {alias!r} of model {model.name}",
                _alias_url(proj.name, model.name, alias),
            )
            conn.execute(
                delete(model_aliases).where(
                    model_aliases.c.model_id == model.id, model_aliases.c.alias == alias
                )
            )
            self._audit.record(
                uow,
                "model_alias.deleted",
                "model_alias",
                f"{model.id}@{alias}",
                project=proj.name,
                before={"name": model.name, "alias": alias, "version": row.version},
            )

    # Archive and delete -----------------------------------------------------------------------
    def archive_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        """Archive a version: kept, but hidden from listings and no longer approvable.

        Raises:
            ConflictError: It is already archived, or aliases still point at it.
        """
        return self._set_archived(project, name, version, archived=True)

    def unarchive_version(self, project: str, name: str, version: int | str) -> ModelVersion:
        """Bring an archived version back.

        Raises:
            ConflictError: It is not archived.
        """
        return self._set_archived(project, name, version, archived=False)

    def delete_version(self, project: str, name: str, version: int | str) -> None:
        """Delete a version's row and approval history; its number is never reused.

        The lineage node stays, marked deleted, and the manifest stays in the artifact store.

        Raises:
            ConflictError: An alias points at it, it is Approved, or lineage records something
                derived from it (the message names what).
        """
        proj = self._projects.get(project, "models.write")
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = model_row(conn, proj, name, lock=True)
            row = version_row(conn, proj.name, model, version, lock=True)
            label = f"{model.name}/{row.version}"
            reasons: list[str] = []
            hints: list[str] = []
            aliases = aliases_by_version(conn, [row.id]).get(row.id, [])
            if aliases:
                reasons.append(f"{_aliases_phrase(aliases)} at it")
                hints.append(
                    "Move or remove the alias first: "
                    + cli_hint(proj.name, "unalias", model.name, aliases[0])
                    + "."
                )
            if row.approval_status == ApprovalStatus.APPROVED.value:
                reasons.append("it is Approved")
                hints.append(
                    "Reject it first: "
                    + cli_hint(proj.name, "reject", model.name, row.version, "--note '...'")
                    + "."
                )
            if self._lineage.has_downstream(conn, "model_version", row.id):
                reasons.append(
                    f"lineage records {downstream_names(self._lineage, row.id)} derived from it"
                )
                hints.append(
                    "Versions that something was derived from are kept for lineage; "
                    "archive it instead: "
                    + cli_hint(proj.name, "archive", model.name, row.version)
                    + "."
                )
            if reasons:
                raise ConflictError(
                    f"Model version {label} cannot be deleted: {'; '.join(reasons)}.",
                    hint=" ".join(hints),
                )
            before = {
                "name": model.name,
                "version": row.version,
                "run_id": row.run_id,
                "artifact_digest": row.artifact_digest,
                "approval_status": row.approval_status,
            }
            conn.execute(delete(approval_history).where(approval_history.c.version_id == row.id))
            try:
                conn.execute(delete(model_versions).where(model_versions.c.id == row.id))
            except IntegrityError as err:  # referenced by a row of another stage
                raise ConflictError(
                    f"Model version {label} cannot be deleted: other records still reference it.",
                    hint="Archive it instead: "
                    + cli_hint(proj.name, "archive", model.name, row.version),
                ) from err
            self._lineage.mark_deleted(uow, "model_version", row.id)
            self._audit.record(
                uow,
                "model_version.deleted",
                "model_version",
                row.id,
                project=proj.name,
                before=before,
            )

    # Internals --------------------------------------------------------------------------------
    def _register(
        self,
        uow: UnitOfWork,
        proj: Project,
        name: str,
        *,
        run_id: str | None,
        artifact_path: str,
        files: Files | None,
        columns: list[ColumnSpec] | None,
        metrics: dict[str, float | None] | None,
        description: str,
    ) -> ModelVersion:
        conn = uow.conn
        model = find_model(conn, proj.id, name, lock=True)
        if model is None:
            model = self._insert_model(uow, proj, name, "")
        name = model.name  # as created: names are found case-insensitively
        run = None if run_id is None else run_row(conn, proj, run_id)
        if files is None:
            files = run_files(conn, str(run_id), artifact_path)
        else:  # bytes named by digest must not belong to another project only
            check_project_digests(conn, proj.id, proj.name, files)
        if metrics is None:
            metrics = {} if run is None else run_metrics(conn, run.id)
        stored = self._ctx.artifacts.put_bytes(manifest_bytes(files))
        number = int(model.next_version)
        conn.execute(
            update(registered_models)
            .where(registered_models.c.id == model.id)
            .values(next_version=number + 1)
        )
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        manifest_signature = sign_version(
            self._ctx.settings, proj.name, name, number, stored.digest
        )
        values: dict[str, Any] = {
            "id": new_id(),
            "model_id": model.id,
            "version": number,
            "run_id": None if run is None else run.id,
            "artifact_digest": stored.digest,
            "artifact_path": artifact_path,
            "signature": None if columns is None else [c.model_dump() for c in columns],
            "metrics": metrics,
            "description": description,
            "approval_status": ApprovalStatus.PENDING.value,
            "approval_by": None,
            "approval_note": None,
            "approval_at": None,
            "archived": False,
            "created_at": now,
            "created_by": user,
            "manifest_signature": manifest_signature,
        }
        conn.execute(insert(model_versions).values(**values))
        node = self._lineage.node(
            uow, "model_version", values["id"], name=f"{name} v{number}", project_id=proj.id
        )
        if run is not None:
            run_node = self._lineage.node(uow, "run", run.id, name=run.name, project_id=proj.id)
            self._lineage.link(uow, run_node, node, "Produced")
        self._audit.record(
            uow,
            "model_version.registered",
            "model_version",
            values["id"],
            project=proj.name,
            after={
                "name": name,
                "version": number,
                "run_id": values["run_id"],
                "artifact_digest": stored.digest,
                "artifact_path": artifact_path,
                "signature_key_id": manifest_signature["key_id"],
                "approval_status": ApprovalStatus.PENDING.value,
                "metrics": metrics,
            },
        )
        return to_version(values, proj.name, name, [])

    def _insert_model(self, uow: UnitOfWork, proj: Project, name: str, description: str) -> DbRow:
        model_id = new_id()
        uow.conn.execute(
            insert(registered_models).values(
                id=model_id,
                project_id=proj.id,
                name=name,
                description=description,
                next_version=1,
                created_at=self._ctx.clock.now(),
                created_by=self._ctx.principal.user,
            )
        )
        self._audit.record(
            uow,
            "registered_model.created",
            "registered_model",
            model_id,
            project=proj.name,
            after={"name": name, "description": description},
        )
        return uow.conn.execute(
            select(registered_models).where(registered_models.c.id == model_id)
        ).one()

    def _set_archived(
        self, project: str, name: str, version: int | str, *, archived: bool
    ) -> ModelVersion:
        proj = self._projects.get(project, "models.write")
        with self._ctx.db.write() as uow:
            conn = uow.conn
            model = model_row(conn, proj, name, lock=True)
            row = version_row(conn, proj.name, model, version, lock=True)
            label = f"{model.name}/{row.version}"
            if bool(row.archived) == archived:
                state = "already archived" if archived else "not archived"
                raise ConflictError(
                    f"Model version {label} is {state}; nothing was changed.",
                    hint="See its state: " + cli_hint(proj.name, "show", model.name, row.version),
                )
            aliases = aliases_by_version(conn, [row.id]).get(row.id, [])
            if archived and aliases:
                raise ConflictError(
                    f"Model version {label} cannot be archived: {_aliases_phrase(aliases)} at it.",
                    hint="Move or remove the alias first: "
                    + cli_hint(proj.name, "unalias", model.name, aliases[0]),
                )
            conn.execute(
                update(model_versions)
                .where(model_versions.c.id == row.id)
                .values(archived=archived)
            )
            ref = {"name": model.name, "version": row.version}
            self._audit.record(
                uow,
                "model_version.archived" if archived else "model_version.unarchived",
                "model_version",
                row.id,
                project=proj.name,
                before={**ref, "archived": not archived},
                after={**ref, "archived": archived},
            )
            return version_by_id(conn, proj.name, model.name, row.id)

    def store_blob(self, project: str, data: bytes | BinaryIO) -> Stored:
        """Store bytes content-addressed for ``project`` (to register a model without a run).

        The artifact index records that ``project`` holds the digest (owner kind ``blob``), so
        a registration in another project cannot name these bytes (``check_project_digests``).

        Raises:
            NotFoundError: The project does not exist.
        """
        proj = self._projects.get(project, "models.write")
        store = self._ctx.artifacts
        stored = (
            store.put_bytes(bytes(data))
            if isinstance(data, bytes | bytearray)
            else store.put_stream(data)
        )

        def attempt(uow: UnitOfWork) -> Stored:
            ArtifactIndex.add(
                uow,
                project_id=proj.id,
                owner_kind="blob",
                owner_id=proj.id,
                path=stored.digest,
                stored=stored,
                created_by=self._ctx.principal.user,
                created_at=self._ctx.clock.now(),
            )
            return stored

        return self._retrying(attempt)

    def _retrying(self, work: Callable[[UnitOfWork], _T]) -> _T:
        """Run ``work`` in a write transaction, retrying when a concurrent insert won a race."""
        for attempt in range(1, _RETRIES + 1):
            try:
                with self._ctx.db.write() as uow:
                    return work(uow)
            except IntegrityError as err:
                if attempt == _RETRIES:
                    raise ConflictError(
                        "The registry changed concurrently and the change could not be applied.",
                        hint="Try again.",
                    ) from err
        raise AssertionError("unreachable")  # pragma: no cover


# Errors ---------------------------------------------------------------------------------------
#: The roles that may write approval policies.


def _latest_policy(conn: Connection, model_id: str) -> Any:
    return conn.execute(
        select(approval_policies.c.version)
        .where(approval_policies.c.model_id == model_id)
        .order_by(approval_policies.c.version.desc())
        .limit(1)
    ).first()


def _alias_url(project: str, model: str, alias: str) -> str:
    return f"GET /api/v1/projects/{project}/models/{model}/aliases/{alias}"


def _aliases_requiring_approval(conn: Connection, model_id: str) -> frozenset[str]:
    """The aliases (case-folded) that may only point at an Approved version: the model's
    policy's ``[aliases] require_approved``, else ``production``."""
    row = conn.execute(
        select(approval_policies.c.policy)
        .where(approval_policies.c.model_id == model_id)
        .order_by(approval_policies.c.version.desc())
        .limit(1)
    ).first()
    rule = (row.policy or {}).get("aliases") if row is not None else None
    names = rule.get("require_approved") if isinstance(rule, Mapping) else None
    if not isinstance(names, list):
        names = list(PROTECTED_ALIASES)
    return frozenset(str(n).casefold() for n in names)


def _aliases_phrase(aliases: list[str]) -> str:
    names = ", ".join(repr(a) for a in aliases)
    return f"alias {names} points" if len(aliases) == 1 else f"aliases {names} point"


def _model_exists(project: str, name: str, existing: str) -> ConflictError:
    return ConflictError(
        already_exists("Model", name, existing, scope=f"project {project!r}"),
        hint="Register a new version of it: "
        + cli_hint(project, "register", existing, "--run <run-id>"),
    )
