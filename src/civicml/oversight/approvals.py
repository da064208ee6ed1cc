"""Governed approval: a model's policy is evaluated as a gate when someone approves a version.

:meth:`ApprovalService.check` evaluates the gate without changing anything (what the dashboard
and ``civicml models gate`` show). :meth:`ApprovalService.update_approval` is the one way
front ends change an approval status: for ``Approved`` it evaluates the gate of the model's
current policy; a failing gate refuses the approval with one entry per failed check, unless the
caller gives a written justification and holds a role the policy allows to override. The gate's
result — and any override — is stored with the approval record, written to the audit trail, and
recorded in lineage as an ``approval`` action linked to the version and to the evidence it read.
Every refused approval is audited too (``model_version.approval_refused``, with the reason:
``gate_failed``, ``override_not_allowed``, ``separation_of_duties``, ...), in its own transaction
since the refusal itself changes nothing. Separation of duties (whoever registered or trained a
version cannot approve it, and whoever registered or trained any version of a model cannot
write its policy) is enforced by the registry itself.

Evidence cannot be gamed: a bias or explanation check reads the newest evaluation of the
version that *counts* — computed on the version's training data (:func:`training_datasets`) or
on the holdout dataset version the policy's ``[evidence]`` names, on exactly that version (rows
and digest), after the policy version was set (for a model's first policy, at any time) — and
its figures come from the evaluation's stored ``report.json`` (read back from the
content-addressed store, SHA-256 verified), which must agree with the summary row. When none
counts the check fails and says why. The approval record binds the version's manifest digest,
the policy version and the evidence ids, so a version whose files change carries no approval
(deploy checks it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from civicml.core.errors import (
    ArtifactIntegrityError,
    CivicMLError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    closest,
)
from civicml.core.ids import new_id
from civicml.data.service import DatasetService
from civicml.evaluation._tables import evaluations
from civicml.evaluation.records import BiasSummary, Evaluation, EvaluationKind
from civicml.evaluation.schemas import BiasReport
from civicml.evaluation.service import EvaluationService
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.monitoring.service import MonitoringService
from civicml.oversight.card_fields import ModelCard
from civicml.oversight.cards import CardService, training_datasets
from civicml.oversight.policy import ApprovalPolicy, parse_policy
from civicml.registry.schemas import ApprovalPolicyRecord, ApprovalStatus, ModelVersion
from civicml.registry.service import RegistryService
from civicml.store.context import Context
from civicml.store.db import UnitOfWork

__all__ = ["ApprovalService", "GateCheck", "GateFailedError", "GateResult"]

_CARD_ORDER = {"Draft": 0, "PendingReview": 1, "Approved": 2, "Archived": 3}


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateCheck(_Schema):
    """One rule of the policy, evaluated."""

    kind: Literal["metric", "bias", "explanation", "card", "data"] = Field(
        description="What the rule is about."
    )
    name: str = Field(description="The rule, e.g. 'roc_auc' or 'DI sex=F'.")
    passed: bool = Field(description="Whether the version meets it.")
    observed: Any = Field(default=None, description="The figure or state found.")
    expected: str = Field(description="What the policy asks, e.g. '>= 0.8'.")
    detail: str = Field(default="", description="Why it failed, or where the figure came from.")
    evidence: str | None = Field(
        default=None, description="The report the figure came from, e.g. 'evaluation:<id>'."
    )


class GateResult(_Schema):
    """The gate of a model version against its model's current policy."""

    model: str = Field(description="Registered model name.")
    version: int = Field(description="Model version number.")
    policy_version: int | None = Field(description="Version of the policy; null: no policy.")
    passed: bool = Field(description="Every check passed (true when there is no policy).")
    checks: list[GateCheck] = Field(description="Each rule of the policy, evaluated.")
    evaluated_at: datetime = Field(description="When (UTC).")
    evaluated_by: str = Field(description="Who asked.")

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


class GateFailedError(ConflictError):
    """An approval was refused because the version fails its model's approval gate."""


class ApprovalService:
    """Approval policies, gate evaluation and governed approval of model versions.

    Example:
        >>> approvals = ApprovalService(ctx)  # doctest: +SKIP
        >>> approvals.set_policy("benefits", "eligibility", Path("policy.toml").read_text())
        >>> approvals.check("benefits", "eligibility", 2).passed  # doctest: +SKIP
        False
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)
        self._registry = RegistryService(ctx)

    # Policies ---------------------------------------------------------------------------------
    def set_policy(
        self,
        project: str,
        model: str,
        source: str | dict[str, Any],
        *,
        if_match: str | None = None,
    ) -> ApprovalPolicyRecord:
        """Validate and store a new version of the model's policy (TOML/JSON text or a dict).

        Args:
            if_match: The current policy's ETag as read; refused when another version was
                set since (``"*"``: only if the model has a policy).

        Raises:
            InvalidInputError: The policy does not parse or names an unknown rule.
            NotFoundError: The project or model does not exist.
            PreconditionFailedError: ``if_match`` is not the current policy's ETag.
        """
        policy = parse_policy(source, what=f"The approval policy of {model}")
        text = source if isinstance(source, str) else json.dumps(source, indent=2, sort_keys=True)
        return self._registry.set_approval_policy(
            project,
            model,
            policy.model_dump(mode="json", exclude_none=True),
            text,
            if_match=if_match,
        )

    def policy(self, project: str, model: str) -> ApprovalPolicyRecord | None:
        """The policy that applies to ``model`` now, or ``None``."""
        return self._registry.approval_policy(project, model)

    # Gate -------------------------------------------------------------------------------------
    def check(
        self, project: str, model: str, version: int | str, *, card: ModelCard | None = None
    ) -> GateResult:
        """Evaluate the gate of a version now; nothing is changed or recorded.

        Args:
            card: The version's card when the caller has just read it (the dashboard), so it
                is not filled twice.
        """
        mv = self._registry.get_version(project, model, version)
        record = self._registry.approval_policy(project, model)
        return self._evaluate(mv, record, card)

    def update_approval(
        self,
        project: str,
        model: str,
        version: int | str,
        status: ApprovalStatus | str,
        note: str,
        *,
        override_justification: str | None = None,
    ) -> ModelVersion:
        """Change a version's approval status; ``Approved`` must pass the gate or override it.

        Args:
            override_justification: Approve despite a failing gate; needs a role named in the
                policy's ``[override] roles`` and a written reason of the length it asks.

        Raises:
            GateFailedError: The gate failed and no override was given; ``details`` lists each
                failed check.
            PermissionDeniedError: The caller may not override, or registered/trained the version.
            InvalidInputError: Bad status or note, an override on anything but an approval, or a
                justification that is too short.
        """
        target = _status(status)
        if target is not ApprovalStatus.APPROVED:
            if override_justification is not None:
                raise InvalidInputError(
                    "An override justification only applies to an approval.",
                    hint="Leave it out when rejecting or resetting a version.",
                )
            return self._registry.update_approval(project, model, version, target, note)
        self._registry.check_approval_request(project, model, version, note)
        mv = self._registry.get_version(project, model, version)
        record = self._registry.approval_policy(project, model)
        if record is None:
            if override_justification is not None:
                raise InvalidInputError(
                    f"Model {model} has no approval policy, so there is no gate to override.",
                    hint="Approve without an override.",
                )
            return self._registry.update_approval(project, model, version, target, note)
        gate = self._evaluate(mv, record)
        evidence: dict[str, Any] = {
            "gate": gate.model_dump(mode="json"),
            "policy_version": record.version,
            "evidence_ids": sorted({c.evidence for c in gate.checks if c.evidence}),
            "manifest_digest": mv.artifact_digest,
        }
        if not gate.passed:
            if override_justification is None:
                failed = gate.failed
                refusal = GateFailedError(
                    f"Approval of {mv.name} v{mv.version} refused: {len(failed)} of "
                    f"{len(gate.checks)} checks of approval policy v{record.version} failed: "
                    + "; ".join(f"{c.name} ({c.detail})" for c in failed[:5])
                    + ("; ..." if len(failed) > 5 else "")
                    + ".",
                    hint="Fix what failed (civicml models gate shows each check), or override "
                    "with a written justification if your role allows it.",
                    details=[c.model_dump(mode="json") for c in failed],
                )
                self._record_refusal(mv, gate, "gate_failed", refusal)
                raise refusal
            try:
                evidence["override"] = self._override(mv, record, override_justification)
            except (PermissionDeniedError, InvalidInputError) as err:
                reason = (
                    "override_not_allowed"
                    if isinstance(err, PermissionDeniedError)
                    else "override_justification_too_short"
                )
                self._record_refusal(mv, gate, reason, err)
                raise
        elif override_justification is not None:
            raise InvalidInputError(
                f"The gate of {mv.name} v{mv.version} passes; there is nothing to override.",
                hint="Approve without an override justification.",
            )
        project_id = self._projects.get(project, "models.approve").id
        return self._registry.update_approval(
            project,
            model,
            version,
            target,
            note,
            evidence,
            also=lambda uow: self._record_lineage(
                uow, project_id, mv, gate, evidence.get("override")
            ),
        )

    # Internals --------------------------------------------------------------------------------
    def _override(
        self, mv: ModelVersion, record: ApprovalPolicyRecord, justification: str
    ) -> dict[str, Any]:
        policy = ApprovalPolicy.model_validate(record.policy)
        text = (justification or "").strip()
        proj = self._projects.get(mv.project, "models.approve")
        held = self._projects.access.roles_on(proj.id, proj.name)  # global roles and grants
        allowed = sorted(set(policy.override.roles) & held)
        if not allowed:
            raise PermissionDeniedError(
                f"{self._ctx.principal.user} may not override the approval gate of {mv.name}: "
                + (
                    f"the policy lets only the role(s) {', '.join(policy.override.roles)} override"
                    if policy.override.roles
                    else "the policy lets no one override"
                )
                + f" (your roles: {', '.join(sorted(held)) or 'none'}).",
                hint="Ask someone with an override role, or fix what the gate reports.",
            )
        if len(text) < policy.override.min_justification_chars:
            raise InvalidInputError(
                f"The override justification is {len(text)} characters; the policy asks for at "
                f"least {policy.override.min_justification_chars}.",
                hint="Say why approving despite the failed checks is right, and who agreed.",
            )
        return {"justification": text, "by": self._ctx.principal.user, "role": allowed[0]}

    def _record_refusal(
        self, mv: ModelVersion, gate: GateResult, reason: str, error: CivicMLError
    ) -> None:
        """Audit an approval the gate (or an override that is not allowed) refused."""
        self._registry.record_approval_refusal(
            mv.project,
            mv.id,
            mv.name,
            mv.version,
            reason,
            error.message,
            policy_version=gate.policy_version,
            failed=[c.name for c in gate.failed],
        )

    def _record_lineage(
        self,
        uow: UnitOfWork,
        project_id: str,
        mv: ModelVersion,
        gate: GateResult,
        override: dict[str, Any] | None,
    ) -> None:
        """The approval as a lineage action: the evidence it read flows into it, and it is
        associated with the version (written in the approval's own unit of work)."""
        action = self._lineage.node(
            uow,
            "approval",
            new_id(),
            name=f"approval of {mv.name} v{mv.version}",
            project_id=project_id,
            properties={
                "by": self._ctx.principal.user,
                "policy_version": gate.policy_version,
                "gate_passed": gate.passed,
                "overridden": override is not None,
            },
        )
        target = self._lineage.node(
            uow, "model_version", mv.id, name=f"{mv.name} v{mv.version}", project_id=project_id
        )
        self._lineage.link(uow, action, target, "AssociatedWith")
        for ref in sorted({c.evidence for c in gate.checks if c.evidence}):
            kind, _, ident = ref.partition(":")
            source = self._lineage.node(uow, kind, ident, name=ref, project_id=project_id)
            self._lineage.link(uow, source, action, "ContributedTo")

    def _evaluate(
        self,
        mv: ModelVersion,
        record: ApprovalPolicyRecord | None,
        card: ModelCard | None = None,
    ) -> GateResult:
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        if record is None:
            return GateResult(
                model=mv.name,
                version=mv.version,
                policy_version=None,
                passed=True,
                checks=[],
                evaluated_at=now,
                evaluated_by=user,
            )
        policy = ApprovalPolicy.model_validate(record.policy)
        checks = [
            *self._metric_checks(mv, policy),
            *self._bias_checks(mv, policy, record),
            *self._explanation_checks(mv, policy, record),
            *self._card_checks(mv, policy, card),
            *self._data_checks(mv, policy),
        ]
        return GateResult(
            model=mv.name,
            version=mv.version,
            policy_version=record.version,
            passed=all(c.passed for c in checks),
            checks=checks,
            evaluated_at=now,
            evaluated_by=user,
        )

    def _metric_checks(self, mv: ModelVersion, policy: ApprovalPolicy) -> list[GateCheck]:
        out = []
        for name, bound in policy.metrics.items():
            value = mv.metrics.get(name)
            if value is None:
                out.append(
                    GateCheck(
                        kind="metric",
                        name=name,
                        passed=False,
                        expected=bound.describe(),
                        detail=f"the version has no metric {name!r} (it has "
                        + (", ".join(sorted(mv.metrics)) or "none")
                        + ")",
                    )
                )
                continue
            ok = bound.admits(value)
            out.append(
                GateCheck(
                    kind="metric",
                    name=name,
                    passed=ok,
                    observed=value,
                    expected=bound.describe(),
                    detail=f"{name} = {value:.4g}" + ("" if ok else f", not {bound.describe()}"),
                )
            )
        return out

    def _bias_checks(
        self, mv: ModelVersion, policy: ApprovalPolicy, record: ApprovalPolicyRecord
    ) -> list[GateCheck]:
        if not policy.bias:
            return []
        found = self._evidence(mv, "bias_post_training", policy, record)
        out = []
        for rule in policy.bias:
            label = f"{rule.metric} {rule.facet}" + (f"={rule.value}" if rule.value else "")
            if found.evaluation is None or not isinstance(found.report, BiasReport):
                out.append(
                    GateCheck(
                        kind="bias",
                        name=label,
                        passed=False,
                        expected=rule.describe(),
                        detail=found.problem,
                    )
                )
                continue
            evidence = f"evaluation:{found.evaluation.id}"
            by_value = _report_values(found.report).get(rule.facet, {})
            if not by_value or (rule.value is not None and rule.value not in by_value):
                what = f"facet {rule.facet!r}" + (f" value {rule.value!r}" if rule.value else "")
                out.append(
                    GateCheck(
                        kind="bias",
                        name=label,
                        passed=False,
                        expected=rule.describe(),
                        detail=f"the latest bias report has no {what}",
                        evidence=evidence,
                    )
                )
                continue
            for value, metrics in by_value.items():
                if rule.value is not None and value != rule.value:
                    continue
                figure = metrics.get(rule.metric)
                name = f"{rule.metric} {rule.facet}={value}"
                ok = figure is not None and rule.admits(float(figure))
                out.append(
                    GateCheck(
                        kind="bias",
                        name=name,
                        passed=ok,
                        observed=figure,
                        expected=rule.describe(),
                        detail=(
                            f"{name} is undefined in the report"
                            if figure is None
                            else f"{name} = {figure:.4g}"
                            + ("" if ok else f", not {rule.describe()}")
                        ),
                        evidence=evidence,
                    )
                )
        return out

    def _explanation_checks(
        self, mv: ModelVersion, policy: ApprovalPolicy, record: ApprovalPolicyRecord
    ) -> list[GateCheck]:
        if policy.explanation is None or not policy.explanation.required:
            return []
        found = self._evidence(mv, "explanation", policy, record)
        report = found.evaluation
        return [
            GateCheck(
                kind="explanation",
                name="explanation present",
                passed=report is not None,
                observed=None if report is None else report.id,
                expected="an explanation report of this version",
                detail="found" if report is not None else found.problem,
                evidence=None if report is None else f"evaluation:{report.id}",
            )
        ]

    # Evidence ---------------------------------------------------------------------------------
    def _accepted(self, mv: ModelVersion, policy: ApprovalPolicy) -> _Accepted:
        """The dataset versions whose evaluations count: the training data and the holdout."""
        accepted = _Accepted(training=list(training_datasets(self._ctx, mv)))
        rule = policy.evidence
        if rule is not None and rule.holdout is not None:
            wanted = rule.holdout_version if rule.holdout_version is not None else "latest"
            try:
                accepted.holdout = DatasetService(self._ctx).get_version(
                    mv.project, rule.holdout, wanted
                )
            except NotFoundError:
                accepted.missing_holdout = f"{rule.holdout} v{wanted}"
        return accepted

    def _evidence(
        self,
        mv: ModelVersion,
        kind: EvaluationKind,
        policy: ApprovalPolicy,
        record: ApprovalPolicyRecord,
    ) -> _Found:
        """The newest evaluation of ``kind`` of the version that counts as evidence, with its
        stored report read back (verified by SHA-256), or why none counts."""
        what = "post-training bias report" if kind == "bias_post_training" else "explanation report"
        found = EvaluationService(self._ctx).list(
            mv.project, kind=kind, model=mv.name, version=mv.version
        )
        if not found:
            return _Found(problem=f"no {what} of this version")
        accepted = self._accepted(mv, policy)
        word = "bias" if kind == "bias_post_training" else "explanation"
        problems = []
        for evaluation in found:
            problem, report = self._counts(evaluation, word, accepted, record)
            if problem is None:
                return _Found(evaluation=evaluation, report=report)
            problems.append(problem)
        more = len(problems) - 2
        return _Found(
            problem=f"no {what} of this version counts as evidence: "
            + "; ".join(problems[:2])
            + (f"; and {more} more" if more > 0 else "")
        )

    def _counts(
        self,
        evaluation: Evaluation,
        word: str,
        accepted: _Accepted,
        record: ApprovalPolicyRecord,
    ) -> tuple[str | None, Any]:
        """``(None, report)`` when ``evaluation`` counts as evidence, else ``(why not, None)``."""
        ref = evaluation.dataset
        label = f"{word} evaluation {evaluation.id}"
        with self._ctx.db.read() as conn:
            stored_on = conn.execute(
                select(evaluations.c.dataset_version_id).where(evaluations.c.id == evaluation.id)
            ).scalar()
        if stored_on != ref.id:
            return f"{label} does not agree with itself about the dataset it was computed on", None
        target = accepted.by_id().get(ref.id)
        if target is None:
            return (
                f"{label} was computed on {ref.dataset} v{ref.version}, not on "
                f"{accepted.describe()}",
                None,
            )
        if ref.digest != target.digest or ref.rows != target.row_count:
            return (
                f"{label} was computed on a subset of {target.name} v{target.version} "
                f"({ref.rows} of {target.row_count} rows, or other content)",
                None,
            )
        # A model's first policy takes evidence gathered before it (there was no bar yet);
        # every later policy version asks for evidence newer than itself.
        if record.version > 1 and evaluation.created_at <= record.created_at:
            return (
                f"{label} ({evaluation.created_at:%Y-%m-%d %H:%M:%S} UTC) is not newer than "
                f"approval policy v{record.version} ({record.created_at:%Y-%m-%d %H:%M:%S} UTC)",
                None,
            )
        try:
            report = EvaluationService(self._ctx).read_result(evaluation.id)
        except (NotFoundError, ArtifactIntegrityError, ValueError):
            return (
                f"the stored report of {label} is missing or does not match its SHA-256",
                None,
            )
        if isinstance(report, BiasReport):
            if report.n_rows != target.row_count:
                return (
                    f"{label} was computed on a subset of {target.name} v{target.version} "
                    f"({report.n_rows} of {target.row_count} rows)",
                    None,
                )
            summary = evaluation.summary
            differs = (
                _first_difference(summary.values, _report_values(report))
                if isinstance(summary, BiasSummary)
                else "its summary"
            )
            if differs is not None:
                return (
                    f"the summary of {label} does not match its stored report ({differs})",
                    None,
                )
        return None, report

    def _card_checks(
        self, mv: ModelVersion, policy: ApprovalPolicy, card: ModelCard | None
    ) -> list[GateCheck]:
        rule = policy.card
        if rule is None:
            return []
        if card is None or card.model_version_id != mv.id:
            card = CardService(self._ctx).get(mv.project, mv.name, mv.version)
        out = []
        if rule.complete:
            out.append(
                GateCheck(
                    kind="card",
                    name="card complete",
                    passed=card.complete,
                    observed=f"{len(card.missing)} missing",
                    expected="every required field written",
                    detail="complete" if card.complete else "missing: " + ", ".join(card.missing),
                )
            )
        if rule.status is not None:
            ok = _CARD_ORDER[card.status] >= _CARD_ORDER[rule.status] and card.status != "Archived"
            out.append(
                GateCheck(
                    kind="card",
                    name="card status",
                    passed=ok,
                    observed=card.status,
                    expected=f"at least {rule.status}",
                    detail=f"the card is {card.status}",
                )
            )
        return out

    def _data_checks(self, mv: ModelVersion, policy: ApprovalPolicy) -> list[GateCheck]:
        rule = policy.data
        if rule is None:
            return []
        versions = training_datasets(self._ctx, mv)
        if not versions:
            return [
                GateCheck(
                    kind="data",
                    name="training data",
                    passed=False,
                    expected="training dataset versions recorded in lineage",
                    detail="the run that trained this version recorded no dataset version as "
                    "its input",
                )
            ]
        out = []
        for v in versions:
            label = f"{v.name} v{v.version}"
            ref = f"dataset_version:{v.id}"
            if rule.min_rows is not None:
                ok = v.row_count >= rule.min_rows
                out.append(
                    GateCheck(
                        kind="data",
                        name=f"rows of {label}",
                        passed=ok,
                        observed=v.row_count,
                        expected=f">= {rule.min_rows}",
                        detail=f"{v.row_count} rows",
                        evidence=ref,
                    )
                )
            if rule.max_missing_fraction is not None and v.row_count:
                worst = max(v.profile, key=lambda p: p.missing, default=None)
                share = (worst.missing / v.row_count) if worst is not None else 0.0
                ok = share <= rule.max_missing_fraction
                out.append(
                    GateCheck(
                        kind="data",
                        name=f"missing values in {label}",
                        passed=ok,
                        observed=round(share, 6),
                        expected=f"<= {rule.max_missing_fraction:g} per column",
                        detail=f"worst column {worst.name if worst else '-'}: {share:.1%} missing",
                        evidence=ref,
                    )
                )
            if rule.no_drift:
                reports = [
                    r
                    for r in MonitoringService(self._ctx).list_reports(mv.project, "drift")
                    if r.inputs.baseline.id == v.id
                ]
                latest = reports[0] if reports else None
                ok = latest is not None and latest.summary.verdict == "no_drift"
                out.append(
                    GateCheck(
                        kind="data",
                        name=f"drift against {label}",
                        passed=ok,
                        observed=None if latest is None else latest.summary.verdict,
                        expected="latest drift report: no_drift",
                        detail=(
                            f"no drift report has {label} as its baseline"
                            if latest is None
                            else f"{latest.summary.n_drifted} of {latest.summary.n_columns} "
                            "columns drifted"
                        ),
                        evidence=None if latest is None else f"report:{latest.id}",
                    )
                )
        return out


@dataclass
class _Accepted:
    """The dataset versions a policy accepts evaluations on, for one model version."""

    training: list[Any]
    holdout: Any = None
    missing_holdout: str | None = None

    def by_id(self) -> dict[str, Any]:
        out = {v.id: v for v in self.training}
        if self.holdout is not None:
            out[self.holdout.id] = self.holdout
        return out

    def describe(self) -> str:
        training = (
            "the training data " + ", ".join(f"{v.name} v{v.version}" for v in self.training)
            if self.training
            else "the training data (its training run recorded no dataset version)"
        )
        if self.holdout is not None:
            return f"{training} or the holdout {self.holdout.name} v{self.holdout.version}"
        if self.missing_holdout is not None:
            return f"{training} (the holdout {self.missing_holdout} does not exist)"
        return training


@dataclass
class _Found:
    """The evaluation that counts as evidence and its stored report, or why none counts."""

    evaluation: Evaluation | None = None
    report: Any = None
    problem: str = field(default="")


def _report_values(report: BiasReport) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{facet: {value label: {metric code: figure}}}`` read from a stored bias report."""
    values: dict[str, dict[str, dict[str, float | None]]] = {}
    for facet in report.facets:
        values.setdefault(facet.facet, {})[facet.facet_value] = {
            m.code: m.value for m in facet.metrics
        }
    return values


def _first_difference(
    recorded: dict[str, dict[str, dict[str, float | None]]],
    stored: dict[str, dict[str, dict[str, float | None]]],
) -> str | None:
    """The first figure where a summary row and its stored report disagree, or ``None``."""
    if recorded.keys() != stored.keys():
        return "the facets differ"
    for facet, by_value in stored.items():
        if recorded[facet].keys() != by_value.keys():
            return f"the values of facet {facet} differ"
        for value, metrics in by_value.items():
            for code in sorted(set(metrics) | set(recorded[facet][value])):
                a, b = recorded[facet][value].get(code), metrics.get(code)
                same = (a is None and b is None) or (
                    a is not None
                    and b is not None
                    and (
                        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                        or (math.isnan(a) and math.isnan(b))
                    )
                )
                if not same:
                    return f"{code} {facet}={value}: {a} in the summary, {b} in the report"
    return None


def _status(status: ApprovalStatus | str) -> ApprovalStatus:
    try:
        return ApprovalStatus(status)
    except ValueError:
        names = [s.value for s in ApprovalStatus]
        raise InvalidInputError(
            f"Approval status {status!r} is not known.",
            hint=closest(str(status), names) or f"Use one of {', '.join(names)}.",
        ) from None
