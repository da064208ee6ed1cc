"""Governed approval: separation of duties, the policy gate, overrides, audit and lineage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import civicml as cm
from civicml.core.errors import ConflictError, InvalidInputError, PermissionDeniedError
from civicml.data.samples import benefit_applications
from civicml.oversight import ApprovalService, GateFailedError
from civicml.registry.schemas import ApprovalStatus
from tests.oversight.helpers import (
    DATA_POLICY,
    FULL_POLICY,
    JUSTIFICATION,
    MODEL,
    POLICY,
    PROJECT,
    Scene,
    add_evidence,
)


def test_whoever_registered_or_trained_a_version_cannot_approve_it(scene: Scene) -> None:
    with pytest.raises(PermissionDeniedError, match="tara registered model version eligibility/1"):
        scene.as_("tara").models.approve(scene.mv, note="looks good to me")
    assert scene.as_("tara").models.history(scene.mv) == []
    # registered by someone else, trained by tara: still hers to stay away from
    registered = scene.as_("rui").models.register(MODEL, run=scene.mv.run_id)
    with pytest.raises(PermissionDeniedError, match="tara trained model version eligibility/2"):
        scene.as_("tara").models.approve(registered, note="ok")
    with pytest.raises(PermissionDeniedError, match="rui registered"):
        scene.as_("rui").models.approve(registered, note="ok")
    # rejecting is not approving
    assert scene.as_("tara").models.reject(registered, note="duplicate").approval_status is (
        ApprovalStatus.REJECTED
    )
    approved = scene.as_("rui").models.approve(scene.mv, note="reviewed")
    assert (approved.approval_status, approved.approval_by) == (ApprovalStatus.APPROVED, "rui")


def test_a_failing_gate_refuses_with_each_failed_check_and_is_audited(scene: Scene) -> None:
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    with pytest.raises(GateFailedError, match="Approval of eligibility v1 refused") as err:
        scene.as_("rui").models.approve(scene.mv, note="reviewed")
    failed = {d["name"]: d for d in err.value.details}
    assert set(failed) == {"DI sex", "explanation present", "card complete"}
    assert failed["DI sex"]["detail"] == "no post-training bias report of this version"
    assert "model_overview.model_owner" in failed["card complete"]["detail"]
    assert err.value.status == 409
    mv = scene.as_("rui").models.version(MODEL, 1)
    assert mv.approval_status is ApprovalStatus.PENDING
    events = scene.rui.audit_events(action="model_version.approval_refused")
    assert [e.after["failed"] for e in events] == [sorted(failed, key=list(failed).index)]
    assert scene.rui.verify_audit().ok


def test_the_gate_passes_once_the_evidence_exists(any_scene: Scene) -> None:
    scene = any_scene
    models = scene.as_("rui").models
    models.set_policy(MODEL, FULL_POLICY)
    add_evidence(scene)
    result = models.gate(scene.mv)
    assert result.passed, [c for c in result.checks if not c.passed]
    by_kind = {c.kind for c in result.checks}
    assert by_kind == {"metric", "bias", "explanation", "card", "data"}
    di = [c for c in result.checks if c.name.startswith("DI sex=")]
    assert {c.name for c in di} == {"DI sex=female", "DI sex=male"}
    assert all(0.8 <= c.observed <= 1.25 for c in di)
    approved = models.approve(scene.mv, note="evidence reviewed")
    assert approved.approval_status is ApprovalStatus.APPROVED
    [record] = models.history(scene.mv)
    assert record.evidence["gate"]["passed"] is True
    assert record.evidence["gate"]["policy_version"] == 1
    assert "override" not in record.evidence
    # the approval is a lineage action fed by the evidence it read
    graph = scene.rui.lineage("model_version", scene.mv.id, direction="upstream", max_depth=1)
    approvals = [n for n in graph.nodes if n.kind == "approval"]
    assert len(approvals) == 1 and approvals[0].properties["gate_passed"] is True
    feeding = scene.rui.lineage("approval", approvals[0].ref, direction="upstream", max_depth=1)
    assert {n.kind for n in feeding.nodes} >= {"evaluation", "dataset_version", "approval"}


def test_an_override_needs_the_role_and_a_justification(any_scene: Scene) -> None:
    scene = any_scene
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    with pytest.raises(PermissionDeniedError, match="only the role\\(s\\) risk_officer"):
        scene.as_("rui").models.approve(
            scene.mv, note="urgent", override_justification=JUSTIFICATION
        )
    with pytest.raises(InvalidInputError, match="justification is 6 characters"):
        scene.as_("rosa").models.approve(scene.mv, note="urgent", override_justification="urgent")
    approved = scene.as_("rosa").models.approve(
        scene.mv, note="pilot only", override_justification=JUSTIFICATION
    )
    assert (approved.approval_status, approved.approval_by) == (ApprovalStatus.APPROVED, "rosa")
    [record] = scene.as_("rosa").models.history(scene.mv)
    assert record.evidence["override"] == {
        "justification": JUSTIFICATION,
        "by": "rosa",
        "role": "risk_officer",
    }
    assert record.evidence["gate"]["passed"] is False
    [event] = scene.rui.audit_events(action="model_version.approval_changed")
    assert event.after["evidence"]["override"]["justification"] == JUSTIFICATION
    assert scene.rui.verify_audit().ok


def test_overrides_only_where_there_is_a_failing_gate(scene: Scene) -> None:
    with pytest.raises(InvalidInputError, match="has no approval policy"):
        scene.as_("rosa").models.approve(scene.mv, note="x", override_justification=JUSTIFICATION)
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    add_evidence(scene)
    with pytest.raises(InvalidInputError, match="passes; there is nothing to override"):
        scene.as_("rosa").models.approve(scene.mv, note="x", override_justification=JUSTIFICATION)
    with pytest.raises(InvalidInputError, match="only applies to an approval"):
        ApprovalService(scene.rosa.backend.ctx).update_approval(
            "benefits", MODEL, 1, "Rejected", "x", override_justification=JUSTIFICATION
        )
    assert scene.as_("rosa").models.version(MODEL, 1).approval_status is ApprovalStatus.PENDING


def test_the_registry_refuses_an_approval_that_bypasses_the_gate(scene: Scene) -> None:
    from civicml.registry import RegistryService

    scene.as_("rui").models.set_policy(MODEL, POLICY)
    registry = RegistryService(scene.rui.backend.ctx)
    with pytest.raises(ConflictError, match="can only be approved through its gate"):
        registry.approve("benefits", MODEL, 1, "direct")
    stale = {"gate": {"policy_version": 0, "passed": True}}
    with pytest.raises(ConflictError, match="can only be approved through its gate"):
        registry.update_approval("benefits", MODEL, 1, "Approved", "stale", stale)
    failed = {"gate": {"policy_version": 1, "passed": False}}
    with pytest.raises(ConflictError, match="failed and no override was given"):
        registry.update_approval("benefits", MODEL, 1, "Approved", "forged", failed)
    assert registry.get_version("benefits", MODEL, 1).approval_status is ApprovalStatus.PENDING


def test_a_new_policy_version_applies_from_then_on(scene: Scene) -> None:
    models = scene.as_("rui").models
    first = models.set_policy(MODEL, POLICY)
    second = models.set_policy(MODEL, {"metrics": {"val_roc_auc": {"min": 0.5}}})
    assert (first.version, second.version) == (1, 2)
    current = models.policy(MODEL)
    assert current is not None and current.version == 2
    assert current.policy == {
        "description": "",
        "metrics": {"val_roc_auc": {"min": 0.5}},
        "bias": [],
        "override": {"roles": [], "min_justification_chars": 20},
    }
    result = models.gate(scene.mv)
    assert (result.policy_version, result.passed, len(result.checks)) == (2, True, 1)
    events = scene.rui.audit_events(action="model.policy_set")
    assert [e.after["policy_version"] for e in events] == [1, 2]


def test_separation_of_duties_is_answered_before_the_gate(scene: Scene) -> None:
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        scene.as_("tara").models.approve(scene.mv, note="mine")
    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        scene.as_("tara").models.approve(
            scene.mv, note="mine", override_justification=JUSTIFICATION
        )
    events = scene.rui.audit_events(action="model_version.approval_refused")
    assert [(e.actor, e.after["reason"]) for e in events] == [("tara", "separation_of_duties")] * 2
    assert all("tara registered model version eligibility/1" in e.after["message"] for e in events)


def test_every_refused_approval_is_audited_and_changes_nothing(scene: Scene) -> None:
    from civicml.registry import RegistryService

    def refused() -> list[tuple[str, str]]:
        events = scene.rui.audit_events(action="model_version.approval_refused")
        return [(e.actor, e.after["reason"]) for e in events]

    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        scene.as_("tara").models.approve(scene.mv, note="mine")
    assert refused() == [("tara", "separation_of_duties")]
    # the registry's own check (a caller that skips the oversight service) is audited too
    with pytest.raises(PermissionDeniedError, match="separation of duties"):
        RegistryService(scene.tara.backend.ctx).approve("benefits", MODEL, 1, "mine")
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    with pytest.raises(GateFailedError):
        scene.as_("rui").models.approve(scene.mv, note="reviewed")
    with pytest.raises(PermissionDeniedError, match="may not override"):
        scene.as_("rui").models.approve(scene.mv, note="x", override_justification=JUSTIFICATION)
    with pytest.raises(InvalidInputError, match="justification is 5 characters"):
        scene.as_("rosa").models.approve(scene.mv, note="x", override_justification="short")
    with pytest.raises(ConflictError, match="can only be approved through its gate"):
        RegistryService(scene.rui.backend.ctx).approve("benefits", MODEL, 1, "direct")
    with pytest.raises(InvalidInputError, match="needs a note"):  # bad input, not a refusal
        scene.as_("rui").models.approve(scene.mv, note=" ")
    assert refused() == [
        ("tara", "separation_of_duties"),
        ("tara", "separation_of_duties"),
        ("rui", "gate_failed"),
        ("rui", "override_not_allowed"),
        ("rosa", "override_justification_too_short"),
        ("rui", "no_gate_evaluation"),
    ]
    [gate_refusal] = [
        e.after
        for e in scene.rui.audit_events(action="model_version.approval_refused")
        if e.after["reason"] == "gate_failed"
    ]
    assert gate_refusal["failed"] == ["DI sex", "explanation present", "card complete"]
    assert gate_refusal["message"].startswith("Approval of eligibility v1 refused: 3 of 4")
    mv = scene.as_("rui").models.version(MODEL, 1)
    assert (mv.approval_status, mv.approval_by) == (ApprovalStatus.PENDING, None)
    assert scene.as_("rui").models.history(scene.mv) == []
    assert scene.rui.audit_events(action="model_version.approval_changed") == []
    assert scene.rui.verify_audit().ok


def test_a_policy_given_as_a_dict_keeps_what_was_given_as_its_source(scene: Scene) -> None:
    given = {"metrics": {"val_roc_auc": {"min": 0.5}}}
    record = scene.as_("rui").models.set_policy(MODEL, given)
    assert json.loads(record.source) == given


# Training data is what the training run consumed ----------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def drifted(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Scene]:
    """Issue 8's story: 'applications' (1200 rows) trains v1; 'requests' (800 rows) arrive
    later and a drift report compares them with 'applications' as baseline."""
    if request.param == "postgresql":
        monkeypatch.setenv("CIVICML_DB_URL", request.getfixturevalue("pg_url"))
    home = tmp_path / "home"
    clients = {u: cm.connect(home=home, user=u) for u in ("tara", "rui", "rosa")}
    proj = clients["tara"].project(PROJECT)
    data = proj.datasets.ingest("applications", benefit_applications(1200, seed=3))
    with proj.start_run() as run:
        trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
    mv = proj.models.register(MODEL, trained, run=run)
    requests = benefit_applications(800, seed=11).drop(columns=["eligible"])
    proj.monitoring.drift(proj.datasets.ingest("requests", requests), baseline=data)
    clients["rui"].project(PROJECT).models.set_policy(MODEL, DATA_POLICY)
    yield Scene(home, clients["tara"], clients["rui"], clients["rosa"], mv, data)
    for client in clients.values():
        client.close()


def test_an_approval_does_not_change_what_the_version_was_trained_on(drifted: Scene) -> None:
    scene = drifted
    models = scene.as_("rui").models
    before = models.gate(scene.mv)
    assert before.passed, [c for c in before.checks if not c.passed]
    assert [c.name for c in before.checks if c.kind == "data"] == [
        "rows of applications v1",
        "drift against applications v1",
    ]
    models.approve(scene.mv, note="evidence reviewed")

    # the approval's evidence (the drift report, and through it 'requests') is now upstream
    # of the version in lineage, and is still not training data
    upstream = scene.rui.lineage("model_version", scene.mv.id, direction="upstream", max_depth=4)
    assert "requests v1" in {n.name for n in upstream.nodes}
    after = models.gate(scene.mv)
    assert after.passed, [c for c in after.checks if not c.passed]
    assert [c.model_dump(exclude={"evidence"}) for c in after.checks] == [
        c.model_dump(exclude={"evidence"}) for c in before.checks
    ]
    datasets = (
        scene.as_("rui")
        .cards.get(scene.mv)
        .content["training_details"]["training_job_details"]["datasets"]
    )
    assert [(d["dataset"], d["version"], d["rows"]) for d in datasets] == [
        ("applications", 1, 1200)
    ]
    [row] = models.dashboard().rows
    assert (row.approval_status, row.gate, row.gate_failed) == ("Approved", "passed", [])
    markdown = scene.as_("rui").cards.export(scene.mv, format="markdown")
    assert "### applications v1" in markdown and "requests" not in markdown
    # a second approval is refused only because it is already Approved, not by the gate
    models.reject(scene.mv, note="reconsider")
    again = models.approve(scene.mv, note="evidence reviewed again")
    assert again.approval_status is ApprovalStatus.APPROVED


def test_a_version_without_recorded_training_input_fails_a_data_rule(scene: Scene) -> None:
    # registered from files only: no run, so no training data is known
    files = scene.tara.backend.registry.get_manifest(scene.mv)["files"]
    bare = scene.tara.backend.registry.register(
        PROJECT, MODEL, artifacts={p: f["digest"] for p, f in files.items()}
    )
    scene.as_("rui").models.set_policy(MODEL, "[data]\nmin_rows = 1\n")
    result = scene.as_("rui").models.gate((MODEL, bare.version))
    assert [(c.name, c.passed) for c in result.checks] == [("training data", False)]
    assert "recorded no dataset version as its input" in result.checks[0].detail
    assert scene.as_("rui").models.gate(scene.mv).passed


# Aliases that require an Approved version ------------------------------------------------------
def test_the_policy_names_the_aliases_that_need_an_approved_version(scene: Scene) -> None:
    models = scene.as_("rui").models
    with pytest.raises(ConflictError, match="Alias 'production' may only point at an Approved"):
        models.set_alias(MODEL, "production", 1)
    models.set_policy(MODEL, '[aliases]\nrequire_approved = ["champion"]')
    with pytest.raises(ConflictError, match="Alias 'champion' may only point at an Approved"):
        models.set_alias(MODEL, "champion", 1)
    assert models.set_alias(MODEL, "production", 1).aliases == ["production"]  # not named
    models.set_policy(MODEL, "[aliases]\nrequire_approved = []")
    assert models.set_alias(MODEL, "champion", 1).aliases == ["champion", "production"]
    models.delete_alias(MODEL, "champion")
    # a policy without [aliases] protects production again
    models.set_policy(MODEL, POLICY)
    models.delete_alias(MODEL, "production")
    with pytest.raises(ConflictError, match="eligibility/1 is PendingManualApproval"):
        models.set_alias(MODEL, "production", 1)
    add_evidence(scene)
    models.approve(scene.mv, note="evidence reviewed")
    assert models.set_alias(MODEL, "production", 1).aliases == ["production"]


# ETags and If-Match ----------------------------------------------------------------------------
def test_a_stale_policy_etag_refuses_a_new_policy_version(scene: Scene) -> None:
    from civicml.core.errors import PreconditionFailedError

    models = scene.as_("rui").models
    with pytest.raises(PreconditionFailedError, match="it does not exist now"):
        models.set_policy(MODEL, POLICY, if_match="*")
    first = models.set_policy(MODEL, POLICY, if_match=None)
    read = models.policy(MODEL)
    assert read is not None and models.etag(read) == models.etag(first)
    second = models.set_policy(MODEL, FULL_POLICY, if_match=models.etag(read))
    with pytest.raises(PreconditionFailedError, match="approval policy of model eligibility"):
        models.set_policy(MODEL, POLICY, if_match=models.etag(read))
    assert models.etag(second) != models.etag(first)
    current = models.policy(MODEL)
    assert current is not None and current.version == 2
    assert models.set_policy(MODEL, POLICY, if_match="*").version == 3
    assert len(scene.rui.audit_events(action="model.policy_set")) == 3
