"""The model dashboard: every version with status, deployment, bias, card and gate."""

from __future__ import annotations

from tests.oversight.helpers import MODEL, POLICY, Scene, add_evidence


def test_the_dashboard_shows_each_version_with_its_evidence(scene: Scene) -> None:
    proj = scene.as_("rui")
    proj.models.set_policy(MODEL, POLICY)
    second = scene.as_("tara").models.register(MODEL, run=scene.mv.run_id)
    add_evidence(scene)
    proj.models.approve(scene.mv, note="evidence reviewed")
    proj.endpoints.deploy("eligibility", scene.mv)

    board = proj.models.dashboard()
    assert board.project == "benefits"
    rows = {r.version: r for r in board.rows}
    assert [r.version for r in board.rows] == [second.version, 1]
    first = rows[1]
    assert (first.approval_status, first.endpoints, first.gate) == (
        "Approved",
        ["eligibility"],
        "passed",
    )
    assert first.card_complete and first.risk_rating == "High"
    assert first.bias is not None and set(first.bias) == {
        "DI sex=female",
        "DI sex=male",
        "DPPL sex=female",
        "DPPL sex=male",
    }
    assert first.top_features is not None and len(first.top_features) == 3
    assert first.metrics["val_roc_auc"] == scene.mv.metrics["val_roc_auc"]
    other = rows[second.version]
    assert (other.approval_status, other.gate, other.card_status) == (
        "PendingManualApproval",
        "failed",
        "Draft",
    )
    assert set(other.gate_failed) == {"DI sex", "explanation present", "card complete"}
    assert other.bias is None and other.card_missing == 11
