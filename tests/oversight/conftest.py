"""A project where 'tara' trained and registered a model version, embedded; 'rui' reviews and
'rosa' is a risk officer (the only role the test policy lets override a failed gate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.data.samples import benefit_applications

PROJECT = "benefits"
MODEL = "eligibility"
ROLES = {"rosa": ["risk_officer"]}
POLICY = """
description = "Benefit eligibility"

[metrics]
val_roc_auc = { min = 0.7 }

[[bias]]
metric = "DI"
facet = "sex"
min = 0.8
max = 1.25

[explanation]
required = true

[card]
complete = true

[data]
min_rows = 100

[override]
roles = ["risk_officer"]
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


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """The scene on the embedded SQLite database."""
    yield from _scene(tmp_path, monkeypatch)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_scene(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Scene]:
    """The scene on SQLite and on the real PostgreSQL (a fresh database)."""
    if request.param == "postgresql":
        monkeypatch.setenv("CIVICML_DB_URL", request.getfixturevalue("pg_url"))
    yield from _scene(tmp_path, monkeypatch)


def _scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    monkeypatch.setenv("CIVICML_ROLES", json.dumps(ROLES))
    home = tmp_path / "home"
    clients = {u: cm.connect(home=home, user=u) for u in ("tara", "rui", "rosa")}
    proj = clients["tara"].project(PROJECT)
    data = proj.datasets.ingest("applications", benefit_applications(600, seed=3))
    with proj.start_run() as run:
        trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
    mv = proj.models.register(MODEL, trained, run=run)
    yield Scene(home, clients["tara"], clients["rui"], clients["rosa"], mv, data)
    for client in clients.values():
        client.close()


def add_evidence(scene: Scene) -> None:
    """Bias and explanation reports and a complete card for the scene's version."""
    proj = scene.as_("tara")
    proj.evaluations.bias(
        scene.data, label="eligible", positive_label=1, facets="sex", model=scene.mv
    )
    proj.evaluations.explain(scene.mv, scene.data, rows=80)
    proj.cards.edit(scene.mv, fields=CARD, note="first full draft")
