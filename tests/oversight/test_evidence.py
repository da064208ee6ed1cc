"""An approval nobody can game (issue 9, item 3): the evidence a gate accepts, read back from
the stored reports; who may write a policy; an approval bound to the files it approved."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update

from civicml.core.errors import ConflictError, PermissionDeniedError
from civicml.data.samples import benefit_applications
from civicml.evaluation._tables import evaluations
from civicml.oversight import GateFailedError
from civicml.registry._tables import model_versions
from civicml.registry.schemas import ApprovalStatus
from tests.oversight.helpers import CARD, MODEL, POLICY, Scene, add_evidence


def _bias_detail(result: Any) -> str:
    [check] = [c for c in result.checks if c.kind == "bias"]
    assert not check.passed
    return str(check.detail)


def _bias(scene: Scene, data: Any) -> Any:
    return scene.as_("tara").evaluations.bias(
        data, label="eligible", positive_label=1, facets="sex", model=scene.mv
    )


# Evidence computed on the training data or the named holdout, nothing else -------------------
def test_a_bias_report_on_a_hand_picked_subset_does_not_count(scene: Scene) -> None:
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    proj = scene.as_("tara")
    subset = benefit_applications(600, seed=3).head(200)  # the "good" rows of the training data
    picked = proj.datasets.ingest("picked", subset)
    report = _bias(scene, picked)
    proj.evaluations.explain(scene.mv, scene.data, rows=80)
    proj.cards.edit(scene.mv, fields=CARD, note="first full draft")
    result = scene.as_("rui").models.gate(scene.mv)
    assert not result.passed
    assert (
        f"bias evaluation {report.id} was computed on picked v1, not on the training data "
        "applications v1" in _bias_detail(result)
    )
    with pytest.raises(GateFailedError, match=f"bias evaluation {report.id} was computed on"):
        scene.as_("rui").models.approve(scene.mv, note="reviewed")
    # a subset ingested as a new version of the training dataset does not count either
    smaller = proj.datasets.ingest("applications", subset)
    assert smaller.version == 2
    second = _bias(scene, smaller)
    detail = _bias_detail(scene.as_("rui").models.gate(scene.mv))
    assert f"bias evaluation {second.id} was computed on applications v2, not on" in detail
    # the report on the whole training data counts
    _bias(scene, scene.data)
    assert scene.as_("rui").models.gate(scene.mv).passed


def test_a_recorded_dataset_that_is_not_the_one_evaluated_does_not_count(scene: Scene) -> None:
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    add_evidence(scene)
    [report] = scene.as_("rui").evaluations.list(kind="bias_post_training")
    ctx = scene.rui.backend.ctx
    with ctx.db.write() as uow:  # the stored report says fewer rows than the training data
        inputs = uow.conn.execute(
            select(evaluations.c.inputs).where(evaluations.c.id == report.id)
        ).scalar_one()
        inputs["dataset"]["rows"] = 150
        uow.conn.execute(
            update(evaluations).where(evaluations.c.id == report.id).values(inputs=inputs)
        )
    detail = _bias_detail(scene.as_("rui").models.gate(scene.mv))
    assert f"bias evaluation {report.id} was computed on a subset of applications v1" in detail


def test_the_policy_can_name_a_holdout_dataset_version(scene: Scene) -> None:
    proj = scene.as_("tara")
    holdout = proj.datasets.ingest("applications-holdout", benefit_applications(300, seed=21))
    scene.as_("rui").models.set_policy(
        MODEL, POLICY + '\n[evidence]\nholdout = "applications-holdout"\nholdout_version = 1\n'
    )
    policy = scene.as_("rui").models.policy(MODEL)
    assert policy is not None
    assert policy.policy["evidence"] == {"holdout": "applications-holdout", "holdout_version": 1}
    _bias(scene, holdout)
    proj.evaluations.explain(scene.mv, holdout, rows=80)
    proj.cards.edit(scene.mv, fields=CARD, note="first full draft")
    assert scene.as_("rui").models.gate(scene.mv).passed
    # without [evidence] the holdout is just another dataset
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    _bias(scene, holdout)
    detail = _bias_detail(scene.as_("rui").models.gate(scene.mv))
    assert "was computed on applications-holdout v1, not on the training data" in detail


# Evidence newer than the policy, figures read back from the stored report ---------------------
def test_evidence_older_than_the_policy_version_does_not_count(scene: Scene) -> None:
    models = scene.as_("rui").models
    add_evidence(scene)
    models.set_policy(MODEL, POLICY)  # a model's first policy takes the evidence gathered so far
    assert models.gate(scene.mv).passed
    models.set_policy(MODEL, POLICY)  # the reviewer tightened nothing, but the policy is new
    result = models.gate(scene.mv)
    failed = {c.name: c.detail for c in result.checks if not c.passed}
    assert set(failed) == {"DI sex", "explanation present"}
    assert "is not newer than approval policy v2" in failed["DI sex"]
    assert "is not newer than approval policy v2" in failed["explanation present"]
    _bias(scene, scene.data)
    scene.as_("tara").evaluations.explain(scene.mv, scene.data, rows=80)
    assert models.gate(scene.mv).passed


def test_a_summary_row_edited_in_the_database_does_not_pass_a_gate(scene: Scene) -> None:
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    add_evidence(scene)
    [report] = scene.as_("rui").evaluations.list(kind="bias_post_training")
    summary = report.summary.model_dump(mode="json")
    for metrics in summary["values"]["sex"].values():
        metrics["DI"] = 1.0  # what a four-fifths rule likes to see
    with scene.rui.backend.ctx.db.write() as uow:
        uow.conn.execute(
            update(evaluations).where(evaluations.c.id == report.id).values(summary=summary)
        )
    result = scene.as_("rui").models.gate(scene.mv)
    assert not result.passed
    assert f"the summary of bias evaluation {report.id} does not match its stored report" in (
        _bias_detail(result)
    )
    with pytest.raises(GateFailedError, match="does not match its stored report"):
        scene.as_("rui").models.approve(scene.mv, note="reviewed")


def test_the_gate_reads_the_figures_from_the_stored_report(scene: Scene) -> None:
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    add_evidence(scene)
    [report] = scene.as_("rui").evaluations.list(kind="bias_post_training")
    from civicml.evaluation.service import EvaluationService

    stored = EvaluationService(scene.rui.backend.ctx).read_result(report.id)
    figures = {f"DI sex={f.facet_value}": f.metric("DI").value for f in stored.facets}
    result = scene.as_("rui").models.gate(scene.mv)
    assert {c.name: c.observed for c in result.checks if c.kind == "bias"} == figures


# Who writes the policy ------------------------------------------------------------------------
def test_whoever_trained_or_registered_a_version_cannot_write_the_policy(scene: Scene) -> None:
    with pytest.raises(PermissionDeniedError, match="tara registered model version eligibility/1"):
        scene.as_("tara").models.set_policy(MODEL, "[metrics]\nval_roc_auc = { min = 0.5 }\n")
    assert scene.as_("rui").models.policy(MODEL) is None
    # rosa holds only risk_officer: policies are for reviewers and admins
    with pytest.raises(PermissionDeniedError, match=r"that takes the permission 'policies\.write'"):
        scene.as_("rosa").models.set_policy(MODEL, POLICY)
    scene.as_("rui").models.set_policy(MODEL, POLICY)
    # registering a version (any version) of the model ends rui's say over its policy
    scene.as_("rui").models.register(MODEL, run=scene.mv.run_id)
    with pytest.raises(PermissionDeniedError, match="rui registered model version eligibility/2"):
        scene.as_("rui").models.set_policy(MODEL, "[metrics]\nval_roc_auc = { min = 0.5 }\n")
    current = scene.as_("rui").models.policy(MODEL)
    assert current is not None and current.version == 1
    events = scene.rui.audit_events(action="model.policy_refused")
    assert [(e.actor, e.after["reason"]) for e in events] == [
        ("tara", "separation_of_duties"),
        ("rosa", "role_not_allowed"),
        ("rui", "separation_of_duties"),
    ]
    assert [e.after["policy_version"] for e in scene.rui.audit_events(action="model.policy_set")]
    assert scene.rui.verify_audit().ok


# The approval binds the files, the evidence and the policy version ----------------------------
def test_the_approval_binds_the_manifest_the_evidence_and_the_policy(scene: Scene) -> None:
    models = scene.as_("rui").models
    models.set_policy(MODEL, POLICY)
    add_evidence(scene)
    models.approve(scene.mv, note="evidence reviewed")
    [record] = models.history(scene.mv)
    evidence = record.evidence or {}
    assert evidence["manifest_digest"] == scene.mv.artifact_digest
    assert evidence["policy_version"] == 1
    reports = scene.as_("rui").evaluations.list()
    assert sorted(evidence["evidence_ids"]) == sorted(f"evaluation:{r.id}" for r in reports)


def _change_files(scene: Scene) -> str:
    """Point version 1 at another manifest, as a swapped model file would."""
    ctx = scene.rui.backend.ctx
    manifest = json.loads(ctx.artifacts.read_bytes(scene.mv.artifact_digest))
    manifest["description"] = "swapped after approval"
    digest = ctx.artifacts.put_bytes(json.dumps(manifest).encode()).digest
    with ctx.db.write() as uow:
        uow.conn.execute(
            update(model_versions)
            .where(model_versions.c.id == scene.mv.id)
            .values(artifact_digest=digest)
        )
    return str(digest)


def test_a_version_whose_files_changed_after_approval_is_not_deployed(scene: Scene) -> None:
    models = scene.as_("rui").models
    models.approve(scene.mv, note="reviewed")  # no policy: the approval still binds the files
    [record] = models.history(scene.mv)
    assert (record.evidence or {})["manifest_digest"] == scene.mv.artifact_digest
    digest = _change_files(scene)
    assert models.version(MODEL, 1).approval_status is ApprovalStatus.APPROVED
    with pytest.raises(ConflictError, match="carries no approval of its current files"):
        scene.as_("rui").endpoints.deploy("eligibility", model=MODEL, version=1)
    with pytest.raises(ConflictError, match=f"manifest is now sha256:{digest[:12]}"):
        scene.as_("rui").endpoints.deploy("eligibility", model=MODEL, version="latest")
    assert scene.as_("rui").endpoints.list() == []


def test_an_approval_evaluated_on_other_files_is_refused(scene: Scene) -> None:
    from civicml.registry import RegistryService

    registry = RegistryService(scene.rui.backend.ctx)
    stale = {"manifest_digest": "0" * 64}
    with pytest.raises(ConflictError, match="changed while its approval was evaluated"):
        registry.update_approval("benefits", MODEL, 1, "Approved", "reviewed", stale)
    events = scene.rui.audit_events(action="model_version.approval_refused")
    assert [e.after["reason"] for e in events] == ["files_changed"]
    assert registry.get_version("benefits", MODEL, 1).approval_status is ApprovalStatus.PENDING


def test_the_evidence_section_is_checked_when_the_policy_is_parsed() -> None:
    from civicml.core.errors import InvalidInputError
    from civicml.oversight.policy import parse_policy

    with pytest.raises(InvalidInputError, match="holdout_version needs holdout"):
        parse_policy(POLICY + "\n[evidence]\nholdout_version = 2\n")
    with pytest.raises(InvalidInputError, match="is not a dataset name"):
        parse_policy(POLICY + '\n[evidence]\nholdout = "../etc"\n')
    with pytest.raises(InvalidInputError, match=r"evidence\.holdout_versoin"):
        parse_policy(POLICY + '\n[evidence]\nholdout = "h"\nholdout_versoin = 2\n')
    assert parse_policy(POLICY + '\n[evidence]\nholdout = "h"\n').evidence is not None


def test_a_holdout_without_a_version_means_its_latest_version(scene: Scene) -> None:
    proj = scene.as_("tara")
    first = proj.datasets.ingest("holdout", benefit_applications(300, seed=21))
    scene.as_("rui").models.set_policy(MODEL, POLICY + '\n[evidence]\nholdout = "holdout"\n')
    _bias(scene, first)
    proj.evaluations.explain(scene.mv, first, rows=80)
    proj.cards.edit(scene.mv, fields=CARD, note="first full draft")
    assert scene.as_("rui").models.gate(scene.mv).passed
    proj.datasets.ingest("holdout", benefit_applications(320, seed=22))  # a newer holdout
    detail = _bias_detail(scene.as_("rui").models.gate(scene.mv))
    assert "not on the training data applications v1 or the holdout holdout v2" in detail
