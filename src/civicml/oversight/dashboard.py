"""The model dashboard: every model version of a project in one view.

Per version: approval status and aliases, where it is deployed, its validation metrics, the
latest bias figures (disparate impact and the difference in positive proportions per facet
value, plus any metric its policy names), the top features of its latest explanation, its card
(status, risk rating, completeness), the result of its approval gate evaluated now and the
latest status of each scheduled monitor of the endpoints serving it — the SageMaker Model
Dashboard's view, for a project.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from civicml.evaluation.records import BiasSummary, ExplanationSummary
from civicml.evaluation.service import EvaluationService
from civicml.governance.projects import ProjectService
from civicml.monitors.service import MonitorService
from civicml.oversight.approvals import ApprovalService
from civicml.oversight.cards import CardService
from civicml.oversight.policy import ApprovalPolicy
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving.service import EndpointService
from civicml.store.context import Context

__all__ = ["Dashboard", "DashboardRow", "DashboardService"]

_HEADLINE_BIAS = ("DI", "DPPL")


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DashboardRow(_Schema):
    """One model version on the dashboard."""

    model: str = Field(description="Registered model name.")
    version: int = Field(description="Version number.")
    approval_status: str = Field(description="PendingManualApproval, Approved or Rejected.")
    archived: bool = Field(description="Archived versions are listed but not deployable.")
    aliases: list[str] = Field(description="Aliases pointing at it, e.g. ['production'].")
    endpoints: list[str] = Field(description="Endpoints serving it now.")
    metrics: dict[str, float | None] = Field(description="Validation metrics.")
    bias: dict[str, float | None] | None = Field(
        description="Latest post-training bias figures, e.g. {'DI sex=F': 0.83}; null: none."
    )
    bias_evaluation: str | None = Field(description="Id of that bias evaluation.")
    top_features: list[str] | None = Field(
        description="The three most important input columns of the latest explanation."
    )
    card_status: str = Field(description="Model card status.")
    card_complete: bool = Field(description="Every required card field is written.")
    card_missing: int = Field(description="Required card fields not written yet.")
    risk_rating: str | None = Field(description="The card's risk rating.")
    gate: str = Field(description="'passed', 'failed' or 'no policy' (evaluated now).")
    gate_failed: list[str] = Field(description="The failed checks' names.")
    trained_on_erased_data: bool = Field(
        default=False,
        description="A data subject was erased from its training data since it was trained "
        "(docs/privacy.md): retrain it.",
    )
    monitors: dict[str, str] = Field(
        default_factory=dict,
        description="Each scheduled monitor of the endpoints serving it, by name: the status of "
        "its latest execution ('completed_with_violations', 'completed', 'no_data', 'failed', "
        "'running') or 'none yet'; empty without monitoring.read.",
    )


class Dashboard(_Schema):
    """Every model version of a project, newest model versions first within each model."""

    project: str = Field(description="Project name.")
    generated_at: datetime = Field(description="When it was computed (UTC).")
    rows: list[DashboardRow] = Field(description="One row per model version.")


class DashboardService:
    """Builds the model dashboard of a project."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._registry = RegistryService(ctx)
        self._projects = ProjectService(ctx)

    def dashboard(self, project: str, *, include_archived: bool = False) -> Dashboard:
        """The dashboard of ``project`` (archived versions only when asked).

        Raises:
            NotFoundError: The project does not exist.
        """
        proj = self._projects.get(project, "projects.read")
        watched: dict[str, dict[str, str]] = {}  # endpoint -> monitor -> latest status
        if self._projects.access.allows(proj.id, proj.name, "monitoring.read"):
            for monitor in MonitorService(self._ctx).list(proj.name):
                status = "none yet" if monitor.latest is None else monitor.latest.status.value
                watched.setdefault(monitor.endpoint.lower(), {})[monitor.name] = status
        deployed: dict[str, list[str]] = {}
        for endpoint in EndpointService(self._ctx).list(proj.name):
            deployed.setdefault(endpoint.model_version_id, []).append(endpoint.name)
        rows = []
        for model in self._registry.list_models(proj.name):
            policy = self._registry.approval_policy(proj.name, model.name)
            named = (
                {c.metric for c in ApprovalPolicy.model_validate(policy.policy).bias}
                if policy
                else set()
            )
            versions = self._registry.list_versions(
                proj.name, model.name, include_archived=include_archived
            )
            for mv in sorted(versions, key=lambda v: -v.version):
                row = self._row(mv, deployed.get(mv.id, []), named)
                found = {
                    name: status
                    for endpoint in row.endpoints
                    for name, status in watched.get(endpoint.lower(), {}).items()
                }
                rows.append(row.model_copy(update={"monitors": found}) if found else row)
        return Dashboard(project=proj.name, generated_at=self._ctx.clock.now(), rows=rows)

    def _row(self, mv: ModelVersion, endpoints: list[str], named: set[str]) -> DashboardRow:
        evaluations = EvaluationService(self._ctx)
        bias = evaluations.latest(mv.project, mv.name, mv.version, "bias_post_training")
        figures: dict[str, float | None] | None = None
        if bias is not None and isinstance(bias.summary, BiasSummary):
            codes = set(_HEADLINE_BIAS) | named
            figures = {
                f"{code} {facet}={value}": metrics.get(code)
                for facet, by_value in bias.summary.values.items()
                for value, metrics in by_value.items()
                for code in sorted(codes)
                if code in metrics
            }
        explanation = evaluations.latest(mv.project, mv.name, mv.version, "explanation")
        top: list[str] | None = None
        if explanation is not None and isinstance(explanation.summary, ExplanationSummary):
            top = [f.column for f in explanation.summary.top_features[:3]]
        card = CardService(self._ctx).get(mv.project, mv.name, mv.version)
        gate = ApprovalService(self._ctx).check(mv.project, mv.name, mv.version, card=card)
        risk: Any = card.content.get("intended_uses", {}).get("risk_rating")
        return DashboardRow(
            model=mv.name,
            version=mv.version,
            approval_status=mv.approval_status.value,
            archived=mv.archived,
            aliases=list(mv.aliases),
            endpoints=sorted(endpoints),
            metrics=dict(mv.metrics),
            bias=figures,
            bias_evaluation=None if bias is None else bias.id,
            top_features=top,
            card_status=card.status,
            card_complete=card.complete,
            card_missing=len(card.missing),
            risk_rating=risk if isinstance(risk, str) else None,
            gate="no policy"
            if gate.policy_version is None
            else ("passed" if gate.passed else "failed"),
            gate_failed=[c.name for c in gate.failed],
            trained_on_erased_data=bool(
                card.content.get("training_details", {}).get("trained_on_erased_data")
            ),
        )
