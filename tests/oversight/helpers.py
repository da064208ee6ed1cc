"""What the oversight tests share: the project, the policy, a complete card and the people.

'tara' trains and registers, 'rui' reviews, 'rosa' is a risk officer: the only role the policy
lets override a failed gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = "benefits"
MODEL = "eligibility"
ROLES = {"rosa": ["risk_officer"]}
#: risk_officer is the organisation's own role (setting custom_roles): it reads what a reviewer
#: reads, approves and fills in the card's risk sections, but does not write policies.
CUSTOM_ROLES = {
    "risk_officer": [
        "projects.read",
        "datasets.read",
        "experiments.read",
        "models.read",
        "evaluations.read",
        "monitoring.read",
        "endpoints.read",
        "lineage.read",
        "models.approve",
        "cards.write",
    ]
}
JUSTIFICATION = "Pilot on 200 cases with full manual review, agreed by the board 2026-11-20."
POLICY = """
description = "Benefit eligibility"

[metrics]
val_roc_auc = { min = 0.5 }

[[bias]]
metric = "DI"
facet = "sex"
min = 0.8
max = 1.25

[explanation]
required = true

[card]
complete = true

[override]
roles = ["risk_officer"]
"""
#: The policy with a training-data rule too.
FULL_POLICY = (
    POLICY
    + """
[data]
min_rows = 100
max_missing_fraction = 0.2
"""
)
#: Issue 8's policy: training data of at least 1000 rows that has not drifted.
DATA_POLICY = """
[metrics]
val_roc_auc = { min = 0.5 }

[data]
min_rows = 1000
no_drift = true
"""
CARD = {
    "model_overview.model_description": "Scores benefit applications for likely eligibility.",
    "model_overview.model_owner": "Benefits analytics unit (R. Diaz)",
    "business_details.business_problem": "Prioritise caseworker review of applications.",
    "business_details.kpis": "Recall of eligible applicants >= 0.8",
    "business_details.acceptable_error": "False negatives cost residents more; keep them low.",
    "intended_uses.purpose_of_model": "Order the review queue; never to refuse a claim.",
    "intended_uses.intended_uses": "Caseworkers see the score next to the application.",
    "intended_uses.risk_rating": "High",
    "intended_uses.explanations_for_risk_rating": "It affects access to benefits.",
    "additional_information.ethical_considerations": "Sex is not an input; DI is monitored.",
    "additional_information.caveats_and_recommendations": "Retrain when drift is reported.",
}
#: The checks the policy fails for a version with no evidence yet.
GATE_FAILED = ["DI sex", "explanation present", "card complete"]


@dataclass
class Scene:
    home: Path
    tara: Any  # trained and registered
    rui: Any  # a reviewer
    rosa: Any  # a risk officer
    mv: Any
    data: Any

    def as_(self, who: str) -> Any:
        return getattr(self, who).project(PROJECT)


def add_evidence(scene: Scene) -> None:
    """Bias and explanation reports and a complete card for the scene's version."""
    proj = scene.as_("tara")
    proj.evaluations.bias(
        scene.data, label="eligible", positive_label=1, facets="sex", model=scene.mv
    )
    proj.evaluations.explain(scene.mv, scene.data, rows=80)
    proj.cards.edit(scene.mv, fields=CARD, note="first full draft")
