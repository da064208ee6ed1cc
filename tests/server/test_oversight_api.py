"""Oversight over REST through the real server (server/routers/oversight.py and the approval
routes of server/routers/registry.py): approval policies, the gate, separation of duties,
overrides, model cards and their exports, the dashboard, audit and lineage.

'tara' trains and registers, 'rui' reviews (no role given: admin) and 'rosa' is the only
risk officer — roles come from the server's settings, never from the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import civicml as cm
from civicml.core import Settings
from civicml.core.errors import PreconditionFailedError
from civicml.data.samples import benefit_applications
from civicml.server.routers.monitoring import html_policy
from tests.oversight.helpers import (
    CARD,
    CUSTOM_ROLES,
    DATA_POLICY,
    JUSTIFICATION,
    MODEL,
    POLICY,
    PROJECT,
    ROLES,
)
from tests.server.helpers import API, assert_error

TARA, RUI, ROSA = ({"x-civicml-user": u} for u in ("tara", "rui", "rosa"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The server's settings: rosa is a risk officer."""
    return Settings.load(home=tmp_path / "home", roles=ROLES, custom_roles=CUSTOM_ROLES)


@dataclass
class Scene:
    url: str
    api: httpx.Client
    versions: dict[int, dict[str, Any]]  # eligibility v1 and v2, trained and registered by tara
    dataset: Any

    def model(self) -> str:
        return f"{API}/projects/{PROJECT}/models/{MODEL}"

    def version(self, v: int) -> str:
        return f"{self.model()}/versions/{v}"

    def approve(
        self, v: int, who: dict[str, str], note: str = "evidence reviewed", **extra: Any
    ) -> httpx.Response:
        return self.api.post(
            f"{self.version(v)}/approve", json={"note": note, **extra}, headers=who
        )

    def events(self, **params: Any) -> list[dict[str, Any]]:
        response = self.api.get(f"{API}/audit/events", params={"limit": 10_000, **params})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def add_evidence(self, v: int) -> None:
        """A post-training bias report, an explanation and a complete card, all by rui."""
        with cm.connect(self.url, user="rui") as ml:
            proj = ml.project(PROJECT)
            proj.evaluations.bias(
                self.dataset, label="eligible", positive_label=1, facets="sex", model=(MODEL, v)
            )
            proj.evaluations.explain((MODEL, v), self.dataset, rows=100)
        edited = self.api.patch(
            f"{self.version(v)}/card", json={"fields": CARD, "note": "first draft"}, headers=RUI
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["complete"] is True


@pytest.fixture
def scene(live_server: str) -> Iterator[Scene]:
    with cm.connect(live_server, user="tara") as ml:
        proj = ml.project(PROJECT)
        data = proj.datasets.ingest("applications", benefit_applications(600, seed=3))
        versions = {}
        for _ in range(2):
            with proj.start_run() as run:
                trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
            mv = proj.models.register(MODEL, trained, run=run)
            versions[mv.version] = json.loads(mv.model_dump_json())
    with httpx.Client(base_url=live_server, timeout=60) as api:
        yield Scene(live_server, api, versions, data)


def _set_policy(scene: Scene, policy: str | dict[str, Any] = POLICY) -> dict[str, Any]:
    response = scene.api.put(f"{scene.model()}/policy", json={"policy": policy}, headers=RUI)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# Policies -------------------------------------------------------------------------------------
def test_a_policy_is_set_as_toml_or_a_dict_and_read_back(scene: Scene) -> None:
    url = f"{scene.model()}/policy"
    assert_error(scene.api.get(url), 404, "NotFoundError", "has no approval policy")

    first = _set_policy(scene)
    assert (first["model"], first["version"], first["created_by"]) == (MODEL, 1, "rui")
    assert first["source"] == POLICY
    assert first["policy"]["metrics"] == {"val_roc_auc": {"min": 0.5}}
    assert first["policy"]["bias"] == [{"metric": "DI", "facet": "sex", "min": 0.8, "max": 1.25}]
    assert first["policy"]["override"] == {
        "roles": ["risk_officer"],
        "min_justification_chars": 20,
    }
    assert scene.api.get(url).json() == first

    second = _set_policy(
        scene, {"card": {"complete": True}, "override": {"roles": ["risk_officer"]}}
    )
    assert second["version"] == 2
    assert second["policy"]["card"] == {"complete": True}
    assert json.loads(second["source"]) == {  # what was given, as JSON
        "card": {"complete": True},
        "override": {"roles": ["risk_officer"]},
    }
    assert scene.api.get(url).json() == second
    history = scene.api.get(f"{url}/history").json()
    assert [h["version"] for h in history] == [2, 1]
    set_events = scene.events(action="model.policy_set")
    assert [(e["actor"], e["after"]["policy_version"]) for e in set_events] == [
        ("rui", 1),
        ("rui", 2),
    ]


@pytest.mark.parametrize(
    ("policy", "names"),
    [
        ("[metrics]\nval_roc_auc = { minimum = 0.8 }\n", "metrics.val_roc_auc.minimum"),
        ({"explanations": {"required": True}}, "explanations"),
        ('[[bias]]\nmetric = "XYZ"\nfacet = "sex"\nmin = 0.8\n', "unknown bias metric 'XYZ'"),
        ("[metrics\n", "is not valid TOML or JSON"),
        ("[override]\nroles = ['risk_officer']\n", "has no rule"),
    ],
)
def test_a_bad_policy_is_refused_with_422_naming_the_problem(
    scene: Scene, policy: str | dict[str, Any], names: str
) -> None:
    _set_policy(scene)
    response = scene.api.put(f"{scene.model()}/policy", json={"policy": policy}, headers=RUI)

    assert_error(response, 422, "InvalidInputError", names)
    assert scene.api.get(f"{scene.model()}/policy").json()["version"] == 1  # nothing stored
    assert len(scene.events(action="model.policy_set")) == 1


def test_a_policy_of_an_unknown_model_or_project_is_404(scene: Scene) -> None:
    body = {"policy": POLICY}
    unknown_model = scene.api.put(f"{API}/projects/{PROJECT}/models/nope/policy", json=body)
    assert_error(unknown_model, 404, "NotFoundError", "nope")
    unknown_project = scene.api.put(f"{API}/projects/nowhere/models/{MODEL}/policy", json=body)
    assert_error(unknown_project, 404, "NotFoundError", "nowhere")
    assert_error(
        scene.api.get(f"{API}/projects/{PROJECT}/models/nope/versions/1/gate"), 404, "NotFoundError"
    )
    assert scene.events(action="model.policy_set") == []


# Separation of duties ---------------------------------------------------------------------------
def test_whoever_registered_and_trained_a_version_cannot_approve_it(scene: Scene) -> None:
    response = scene.approve(1, TARA, "looks good to me")

    body = assert_error(
        response, 403, "PermissionDeniedError", "tara registered model version eligibility/1"
    )
    assert body["hint"] == "Ask a reviewer who neither trained nor registered it to approve it."
    mv = scene.api.get(scene.version(1)).json()
    assert (mv["approval_status"], mv["approval_by"]) == ("PendingManualApproval", None)
    assert scene.api.get(f"{scene.version(1)}/approvals").json() == []
    # the refusal changed nothing, and is in the audit trail
    events = scene.events(entity_id=mv["id"])
    assert [(e["action"], e["actor"]) for e in events] == [
        ("model_version.registered", "tara"),
        ("model_version.approval_refused", "tara"),
    ]
    assert events[1]["after"] == {
        "name": MODEL,
        "version": 1,
        "reason": "separation_of_duties",
        "message": body["message"],
    }
    # the status route is held to the same rule
    put = scene.api.put(
        f"{scene.version(1)}/approval", json={"status": "Approved", "note": "ok"}, headers=TARA
    )
    assert_error(put, 403, "PermissionDeniedError", "tara registered")
    assert scene.api.get(scene.version(1)).json()["approval_status"] == "PendingManualApproval"
    refused = scene.events(action="model_version.approval_refused")
    assert [e["after"]["reason"] for e in refused] == ["separation_of_duties"] * 2
    assert scene.api.get(f"{API}/audit/verify").json()["ok"] is True


# The gate and overrides -----------------------------------------------------------------------
def test_a_failed_gate_refuses_and_only_a_risk_officer_may_override(scene: Scene) -> None:
    _set_policy(scene)
    mv_id = scene.versions[1]["id"]

    gate = scene.api.get(f"{scene.version(1)}/gate", headers=RUI).json()
    assert (gate["passed"], gate["policy_version"], gate["evaluated_by"]) == (False, 1, "rui")
    assert {c["name"]: c["passed"] for c in gate["checks"]} == {
        "val_roc_auc": True,
        "DI sex": False,
        "explanation present": False,
        "card complete": False,
    }

    refused = scene.approve(1, RUI)
    body = assert_error(refused, 409, "GateFailedError", "Approval of eligibility v1 refused")
    assert "3 of 4 checks of approval policy v1 failed" in body["message"]
    failed = {d["name"]: d for d in body["details"]}
    assert set(failed) == {"DI sex", "explanation present", "card complete"}
    assert all(d["passed"] is False for d in failed.values())
    assert failed["DI sex"]["kind"] == "bias"
    assert failed["DI sex"]["detail"] == "no post-training bias report of this version"
    assert failed["explanation present"]["detail"] == "no explanation report of this version"
    assert failed["card complete"]["observed"] == "11 missing"
    assert "intended_uses.risk_rating" in failed["card complete"]["detail"]
    assert scene.api.get(scene.version(1)).json()["approval_status"] == "PendingManualApproval"
    assert scene.api.get(f"{scene.version(1)}/approvals").json() == []
    [event] = scene.events(action="model_version.approval_refused")
    assert (event["actor"], event["entity_id"], event["project"]) == ("rui", mv_id, PROJECT)
    assert event["after"] == {
        "name": MODEL,
        "version": 1,
        "reason": "gate_failed",
        "message": body["message"],
        "policy_version": 1,
        "failed": ["DI sex", "explanation present", "card complete"],
    }

    # rui holds no override role, even with a justification
    denied = scene.approve(1, RUI, override_justification=JUSTIFICATION)
    assert_error(denied, 403, "PermissionDeniedError", "only the role(s) risk_officer override")
    # rosa may, but not with a few words
    short = scene.approve(1, ROSA, override_justification="urgent!!")
    assert_error(short, 422, "InvalidInputError", "justification is 8 characters")
    blank = scene.approve(1, ROSA, override_justification="   " * 10)
    assert_error(blank, 422, "InvalidInputError", "justification is 0 characters")
    assert scene.api.get(scene.version(1)).json()["approval_status"] == "PendingManualApproval"
    assert scene.api.get(f"{scene.version(1)}/approvals").json() == []

    overridden = scene.approve(1, ROSA, "pilot only", override_justification=JUSTIFICATION)
    assert overridden.status_code == 200, overridden.text
    mv = overridden.json()
    assert (mv["approval_status"], mv["approval_by"], mv["approval_note"]) == (
        "Approved",
        "rosa",
        "pilot only",
    )
    [record] = scene.api.get(f"{scene.version(1)}/approvals").json()
    assert (record["from_status"], record["to_status"], record["by"]) == (
        "PendingManualApproval",
        "Approved",
        "rosa",
    )
    assert record["evidence"]["override"] == {
        "justification": JUSTIFICATION,
        "by": "rosa",
        "role": "risk_officer",
    }
    assert record["evidence"]["gate"]["passed"] is False
    assert record["evidence"]["gate"]["policy_version"] == 1
    assert {c["name"] for c in record["evidence"]["gate"]["checks"] if not c["passed"]} == set(
        failed
    )
    [changed] = scene.events(action="model_version.approval_changed")
    assert (changed["actor"], changed["roles"], changed["entity_id"]) == (
        "rosa",
        ["risk_officer"],
        mv_id,
    )
    assert changed["after"]["approval_status"] == "Approved"
    assert changed["after"]["evidence"]["override"]["justification"] == JUSTIFICATION
    refusals = scene.events(action="model_version.approval_refused")
    assert [(e["actor"], e["after"]["reason"]) for e in refusals] == [
        ("rui", "gate_failed"),
        ("rui", "override_not_allowed"),
        ("rosa", "override_justification_too_short"),
        ("rosa", "override_justification_too_short"),
    ]

    # the approval is a lineage action associated with the version
    graph = scene.api.get(
        f"{API}/lineage/model_version/{mv_id}", params={"direction": "upstream", "max_depth": 1}
    ).json()
    [approval] = [n for n in graph["nodes"] if n["kind"] == "approval"]
    assert approval["properties"] == {
        "by": "rosa",
        "policy_version": 1,
        "gate_passed": False,
        "overridden": True,
    }
    assert {"src": approval["id"], "dst": graph["root"]["id"], "kind": "AssociatedWith"} in (
        graph["edges"]
    )
    assert scene.api.get(f"{API}/audit/verify").json()["ok"] is True


def test_a_compliant_version_passes_its_gate_and_the_dashboard_shows_both(scene: Scene) -> None:
    _set_policy(scene)
    assert scene.approve(1, ROSA, override_justification=JUSTIFICATION).status_code == 200
    scene.add_evidence(2)

    gate = scene.api.get(f"{scene.version(2)}/gate").json()
    assert gate["passed"] is True, [c for c in gate["checks"] if not c["passed"]]
    assert {c["kind"] for c in gate["checks"]} == {"metric", "bias", "explanation", "card"}
    di = {c["name"]: c for c in gate["checks"] if c["kind"] == "bias"}
    assert set(di) == {"DI sex=female", "DI sex=male"}
    assert all(0.8 <= c["observed"] <= 1.25 for c in di.values())
    assert all(c["evidence"].startswith("evaluation:") for c in di.values())

    # separation of duties holds when the gate passes too
    assert_error(scene.approve(2, TARA), 403, "PermissionDeniedError", "tara registered")
    # nothing to override on a passing gate
    needless = scene.approve(2, ROSA, override_justification=JUSTIFICATION)
    assert_error(needless, 422, "InvalidInputError", "there is nothing to override")

    approved = scene.approve(2, RUI, "every check passed")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["approval_status"], approved.json()["approval_by"]) == (
        "Approved",
        "rui",
    )
    [record] = scene.api.get(f"{scene.version(2)}/approvals").json()
    assert record["evidence"]["gate"]["passed"] is True
    assert "override" not in record["evidence"]
    graph = scene.api.get(
        f"{API}/lineage/model_version/{scene.versions[2]['id']}",
        params={"direction": "upstream", "max_depth": 1},
    ).json()
    [approval] = [n for n in graph["nodes"] if n["kind"] == "approval"]
    assert (approval["properties"]["gate_passed"], approval["properties"]["overridden"]) == (
        True,
        False,
    )
    feeding = scene.api.get(
        f"{API}/lineage/approval/{approval['ref']}",
        params={"direction": "upstream", "max_depth": 1},
    ).json()
    evidence = {c["evidence"] for c in gate["checks"] if c["evidence"]}
    assert len(evidence) == 2  # the bias report and the explanation
    assert {f"{n['kind']}:{n['ref']}" for n in feeding["nodes"] if n["kind"] != "approval"} == (
        evidence
    )

    response = scene.api.get(f"{API}/projects/{PROJECT}/dashboard")
    assert response.status_code == 200
    board = response.json()
    assert board["project"] == PROJECT
    rows = {r["version"]: r for r in board["rows"]}
    assert [r["version"] for r in board["rows"]] == [2, 1]
    assert {v: r["approval_status"] for v, r in rows.items()} == {1: "Approved", 2: "Approved"}
    assert (rows[2]["gate"], rows[2]["gate_failed"]) == ("passed", [])
    assert rows[1]["gate"] == "failed"
    assert rows[1]["gate_failed"] == ["DI sex", "explanation present", "card complete"]
    assert (rows[2]["card_complete"], rows[2]["card_missing"], rows[2]["risk_rating"]) == (
        True,
        0,
        "High",
    )
    assert (rows[1]["card_complete"], rows[1]["card_missing"], rows[1]["risk_rating"]) == (
        False,
        11,
        None,
    )
    assert set(rows[2]["bias"]) == {
        "DI sex=female",
        "DI sex=male",
        "DPPL sex=female",
        "DPPL sex=male",
    }
    assert rows[2]["bias"]["DI sex=female"] == di["DI sex=female"]["observed"]
    assert rows[1]["bias"] is None and rows[1]["top_features"] is None
    assert len(rows[2]["top_features"]) == 3
    assert rows[2]["metrics"] == scene.versions[2]["metrics"]
    assert_error(
        scene.api.get(f"{API}/projects/nowhere/dashboard"), 404, "NotFoundError", "nowhere"
    )


# Model cards ----------------------------------------------------------------------------------
def test_card_exports_escape_what_people_write(scene: Scene) -> None:
    card_url = f"{scene.version(1)}/card"
    hostile = "<script>alert('owner')</script>"
    edited = scene.api.patch(
        card_url,
        json={"fields": {"model_overview.model_owner": hostile}, "note": "owner"},
        headers=RUI,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["card_version"] == 1

    page = scene.api.get(f"{card_url}/html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert policy == html_policy(page.text)
    assert policy.startswith("default-src 'none'; style-src 'sha256-")
    assert "script-src" not in policy and "unsafe-inline" not in policy
    assert "<script" not in page.text
    assert "&lt;script&gt;alert(&#39;owner&#39;)&lt;/script&gt;" in page.text
    assert page.text.startswith("<!doctype html>")
    assert page.text.count("TO COMPLETE") == 10  # every required field but the owner

    markdown = scene.api.get(f"{card_url}/markdown")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.text.startswith("# Model card: eligibility v1\n")
    assert "- **Model owner**: \\<script\\>alert('owner')\\</script\\>\n" in markdown.text
    assert "<" not in markdown.text.replace("\\<", "")  # escaped for Markdown, never raw HTML
    assert markdown.text.count("TO COMPLETE") == 10

    document = scene.api.get(card_url).json()
    assert document["content"]["model_overview"]["model_owner"] == hostile
    assert document["content"]["model_overview"]["registered_by"] == "tara"
    assert document["content"]["model_overview"]["model_creator"] == "tara"
    assert document["content"]["model_overview"]["algorithm_type"] == "logistic"
    assert (document["status"], document["complete"], len(document["missing"])) == (
        "Draft",
        False,
        10,
    )
    with cm.connect(scene.url, user="rui") as ml:
        exported = json.loads(ml.project(PROJECT).cards.export(MODEL, 1, format="json"))
    assert exported == document
    assert_error(
        scene.api.get(f"{scene.version(9)}/card/html"), 404, "NotFoundError", "eligibility"
    )


def test_card_edits_make_versions_and_statuses_follow_sagemaker(scene: Scene) -> None:
    card_url = f"{scene.version(1)}/card"
    status_url = f"{card_url}/status"

    def set_status(status: str) -> httpx.Response:
        return scene.api.post(status_url, json={"status": status, "note": status}, headers=RUI)

    assert scene.api.get(f"{card_url}/history").json() == []
    assert_error(set_status("PendingReview"), 409, "ConflictError", "has nothing written yet")
    bad_field = scene.api.patch(card_url, json={"fields": {"model_overview.owner": "x"}})
    assert_error(bad_field, 422, "InvalidInputError", "'model_overview.owner' is not a field")
    bad_rating = scene.api.patch(card_url, json={"fields": {"intended_uses.risk_rating": "Huge"}})
    assert_error(bad_rating, 422, "InvalidInputError", "must be one of High, Medium, Low")
    assert scene.api.get(f"{card_url}/history").json() == []

    half = {k: v for k, v in CARD.items() if k.startswith("model_overview.")}
    first = scene.api.patch(card_url, json={"fields": half, "note": "overview"}, headers=RUI)
    assert first.status_code == 200, first.text
    assert (first.json()["card_version"], first.json()["status"]) == (1, "Draft")
    assert set_status("PendingReview").json()["status"] == "PendingReview"
    incomplete = set_status("Approved")
    body = assert_error(incomplete, 409, "ConflictError", "cannot be Approved")
    assert {d["field"] for d in body["details"]} == set(CARD) - set(half)
    assert scene.api.get(card_url).json()["status"] == "PendingReview"

    rest = {k: v for k, v in CARD.items() if k not in half}
    second = scene.api.patch(card_url, json={"fields": rest, "note": "the rest"}, headers=ROSA)
    assert second.json()["status"] == "PendingReview"  # an edit keeps a review status
    assert (second.json()["card_version"], second.json()["complete"]) == (2, True)
    approved = set_status("Approved").json()
    assert (approved["status"], approved["card_version"]) == ("Approved", 2)  # no new version
    assert_error(set_status("Approved"), 409, "ConflictError", "already Approved")

    # editing an approved card sends it back to Draft
    changed = scene.api.patch(
        card_url, json={"fields": {"intended_uses.risk_rating": "Medium"}}, headers=RUI
    )
    assert (changed.json()["status"], changed.json()["card_version"]) == ("Draft", 3)
    same = scene.api.patch(card_url, json={"fields": {"intended_uses.risk_rating": "Medium"}})
    assert_error(same, 409, "ConflictError", "nothing changed")

    history = scene.api.get(f"{card_url}/history").json()
    assert [(h["version"], h["created_by"], h["note"]) for h in history] == [
        (1, "rui", "overview"),
        (2, "rosa", "the rest"),
        (3, "rui", ""),
    ]
    assert history[0]["changed"] == sorted(half)
    assert history[1]["changed"] == sorted(rest)
    assert history[2]["changed"] == ["intended_uses.risk_rating"]
    assert history[1]["fields"]["intended_uses.risk_rating"] == "High"
    earlier = scene.api.get(card_url, params={"card_version": 2}).json()
    assert earlier["content"]["intended_uses"]["risk_rating"] == "High"

    assert set_status("Archived").json()["status"] == "Archived"
    frozen = scene.api.patch(card_url, json={"fields": {"intended_uses.risk_rating": "Low"}})
    assert_error(frozen, 409, "ConflictError", "Archived and read-only")
    assert_error(set_status("Draft"), 409, "ConflictError", "Archived")
    assert_error(set_status("Retired"), 422, "InvalidInputError", "'Retired' is not known")
    assert len(scene.api.get(f"{card_url}/history").json()) == 3
    assert scene.api.get(f"{card_url}/html").status_code == 200  # archived cards still export

    statuses = [
        (e["before"]["status"], e["after"]["status"])
        for e in scene.events(action="model_card.status_changed")
    ]
    assert statuses == [
        ("Draft", "PendingReview"),
        ("PendingReview", "Approved"),
        ("Draft", "Archived"),
    ]
    assert [e["after"]["card_version"] for e in scene.events(action="model_card.updated")] == [
        1,
        2,
        3,
    ]


# Training data ---------------------------------------------------------------------------------
def test_approving_with_drift_evidence_leaves_the_gate_and_the_card_as_they_were(
    live_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 8: after an approval whose evidence is a drift report, the gate failed on the
    drift's current dataset, the dashboard said "gate failed" and the card listed it as
    training data. Through the real server, the SDK, REST and the CLI."""
    from civicml.cli.main import main

    with cm.connect(live_server, user="tara") as ml:
        proj = ml.project(PROJECT)
        data = proj.datasets.ingest("applications", benefit_applications(1200, seed=3))
        with proj.start_run() as run:
            trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
        mv = proj.models.register(MODEL, trained, run=run)
        requests = benefit_applications(800, seed=11).drop(columns=["eligible"])
        proj.monitoring.drift(proj.datasets.ingest("requests", requests), baseline=data)
    with cm.connect(live_server, user="rui") as ml:  # the trainer may not write the policy
        ml.project(PROJECT).models.set_policy(MODEL, DATA_POLICY)

    def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--url", live_server, "--user", "rui", *argv, "-p", PROJECT])
        out, err = capsys.readouterr()
        return code, out, err

    version = f"{API}/projects/{PROJECT}/models/{MODEL}/versions/{mv.version}"
    with httpx.Client(base_url=live_server, timeout=60, headers=RUI) as api:
        before = api.get(f"{version}/gate").json()
        assert before["passed"] is True, before
        code, out, err = cli("models", "approve", MODEL, "1", "-m", "drift checked")
        assert (code, out.strip()) == (0, "eligibility v1 is Approved (by rui)"), err

        after = api.get(f"{version}/gate").json()
        assert after["passed"] is True, [c for c in after["checks"] if not c["passed"]]
        assert [c["name"] for c in after["checks"]] == [c["name"] for c in before["checks"]]
        assert "rows of applications v1" in [c["name"] for c in after["checks"]]
        code, out, err = cli("models", "gate", MODEL, "1")
        assert code == 0, out + err
        assert "Gate of eligibility v1 (policy v1): PASSED" in out and "requests" not in out
        [row] = api.get(f"{API}/projects/{PROJECT}/dashboard").json()["rows"]
        assert (row["approval_status"], row["gate"], row["gate_failed"]) == (
            "Approved",
            "passed",
            [],
        )
        card = api.get(f"{version}/card").json()
        datasets = card["content"]["training_details"]["training_job_details"]["datasets"]
        assert [(d["dataset"], d["version"]) for d in datasets] == [("applications", 1)]
        assert "requests" not in api.get(f"{version}/card/markdown").text
    with cm.connect(live_server, user="rui") as ml:
        models = ml.project(PROJECT).models
        assert models.gate(mv).passed
        models.reject(mv, note="reconsidered")
        assert models.approve(mv, note="approved again").approval_status.value == "Approved"


# ETags and If-Match ---------------------------------------------------------------------------
def test_cards_and_policies_send_etags_and_refuse_a_stale_if_match(scene: Scene) -> None:
    card_url = f"{scene.version(1)}/card"
    read = scene.api.get(card_url)
    tag = read.headers["etag"]
    with cm.connect(scene.url, user="rui") as ml:  # the SDK computes the server's tag
        cards = ml.project(PROJECT).cards
        assert cards.etag(cards.get(MODEL, 1)) == tag
    edit = {"fields": {"model_overview.model_owner": "Benefits analytics"}, "note": "owner"}
    edited = scene.api.patch(card_url, json=edit, headers={**RUI, "if-match": tag})
    assert edited.status_code == 200, edited.text
    assert edited.headers["etag"] == scene.api.get(card_url).headers["etag"] != tag
    stale = scene.api.patch(
        card_url, json={"fields": {"business_details.kpis": "x"}}, headers={**RUI, "if-match": tag}
    )
    body = assert_error(stale, 412, "PreconditionFailedError", "card of eligibility v1 changed")
    assert body["hint"].startswith("Read it again (GET /api/v1/projects/benefits/models/")
    status = scene.api.post(
        f"{card_url}/status", json={"status": "PendingReview"}, headers={**RUI, "if-match": tag}
    )
    assert_error(status, 412, "PreconditionFailedError")
    fresh = {**RUI, "if-match": edited.headers["etag"]}
    moved = scene.api.post(f"{card_url}/status", json={"status": "PendingReview"}, headers=fresh)
    assert moved.status_code == 200 and moved.json()["status"] == "PendingReview"
    assert moved.headers["etag"] != edited.headers["etag"]
    assert [v["version"] for v in scene.api.get(f"{card_url}/history").json()] == [1]

    policy_url = f"{scene.model()}/policy"
    absent = scene.api.put(policy_url, json={"policy": POLICY}, headers={**RUI, "if-match": "*"})
    assert_error(absent, 412, "PreconditionFailedError", "it does not exist now")
    first = scene.api.put(policy_url, json={"policy": POLICY}, headers=RUI)
    assert first.headers["etag"] == scene.api.get(policy_url).headers["etag"]
    old = {**RUI, "if-match": first.headers["etag"]}
    second = scene.api.put(policy_url, json={"policy": POLICY}, headers=old)
    assert second.status_code == 200 and second.json()["version"] == 2
    assert_error(
        scene.api.put(policy_url, json={"policy": POLICY}, headers=old),
        412,
        "PreconditionFailedError",
        "approval policy of model eligibility changed",
    )
    assert scene.api.get(policy_url).json()["version"] == 2
    with cm.connect(scene.url, user="rui") as ml:  # If-Match over the remote SDK
        models = ml.project(PROJECT).models
        current = models.policy(MODEL)
        assert current is not None and models.etag(current) == second.headers["etag"]
        with pytest.raises(PreconditionFailedError, match="changed since you read it"):
            models.set_policy(MODEL, POLICY, if_match=first.headers["etag"])
        assert models.set_policy(MODEL, POLICY, if_match=models.etag(current)).version == 3
        models.set_alias(MODEL, "staging", 1)
        staging = models.alias(MODEL, "staging")
        assert (staging.version, staging.updated_by) == (1, "rui")
        models.set_alias(MODEL, "staging", 2, if_match=models.etag(staging))
        with pytest.raises(PreconditionFailedError, match="alias 'staging' of model"):
            models.set_alias(MODEL, "staging", 1, if_match=models.etag(staging))
        with pytest.raises(PreconditionFailedError):
            models.delete_alias(MODEL, "staging", if_match=models.etag(staging))
        models.delete_alias(MODEL, "staging", if_match=models.etag(models.alias(MODEL, "staging")))
        assert models.get(MODEL).aliases == {}


# Issue 9: an approval nobody can game, through the real server -------------------------------
def test_the_approval_attacks_of_issue_9_are_refused(scene: Scene, settings: Settings) -> None:
    """The trainer lowering the bar, a bias report on a hand-picked subset, stale evidence, a
    summary row edited in the database, and files swapped after approval."""
    from sqlalchemy import update

    from civicml.evaluation._tables import evaluations
    from civicml.registry._tables import model_versions

    lowered = {"policy": "[metrics]\nval_roc_auc = { min = 0.5 }\n"}
    refused = scene.api.put(f"{scene.model()}/policy", json=lowered, headers=TARA)
    assert_error(refused, 403, "PermissionDeniedError", "separation of duties")
    assert_error(
        scene.api.put(f"{scene.model()}/policy", json={"policy": POLICY}, headers=ROSA),
        403,
        "PermissionDeniedError",
        "that takes the permission 'policies.write'",
    )
    assert scene.api.get(f"{scene.model()}/policy").status_code == 404
    reasons = [e["after"]["reason"] for e in scene.events(action="model.policy_refused")]
    assert reasons == ["separation_of_duties", "role_not_allowed"]
    _set_policy(scene)

    # tara computes the bias report on the rows she picked
    with cm.connect(scene.url, user="tara") as ml:
        proj = ml.project(PROJECT)
        picked = proj.datasets.ingest("picked", benefit_applications(600, seed=3).head(150))
        report = proj.evaluations.bias(
            picked, label="eligible", positive_label=1, facets="sex", model=(MODEL, 1)
        )
    scene.add_evidence(1)  # and rui the real evidence, but tara's report is newer
    with cm.connect(scene.url, user="tara") as ml:
        proj = ml.project(PROJECT)
        newest = proj.evaluations.bias(
            picked, label="eligible", positive_label=1, facets="sex", model=(MODEL, 1)
        )
    gate = scene.api.get(f"{scene.version(1)}/gate").json()
    assert gate["passed"] is True  # rui's report on the training data is what counts
    used = {c["evidence"] for c in gate["checks"] if c["kind"] == "bias"}
    assert used.isdisjoint({f"evaluation:{report.id}", f"evaluation:{newest.id}"})

    # an edited summary row: the gate reads the stored report
    [real] = [e for e in used if e]
    real_id = real.partition(":")[2]
    with cm.connect(settings=settings, user="mallory") as ml:
        ctx = ml.backend.ctx
        summary = ml.project(PROJECT).evaluations.get(real_id).summary.model_dump(mode="json")
        for metrics in summary["values"]["sex"].values():
            metrics["DI"] = 1.0
        with ctx.db.write() as uow:
            uow.conn.execute(
                update(evaluations).where(evaluations.c.id == real_id).values(summary=summary)
            )
    tampered = scene.approve(1, RUI)
    body = assert_error(tampered, 409, "GateFailedError", "does not match its stored report")
    assert (
        f"bias evaluation {newest.id} was computed on picked v1, not on the training data "
        in (body["message"])
    )

    # stale evidence: a new policy version asks for fresh evidence
    with cm.connect(scene.url, user="rui") as ml:
        proj = ml.project(PROJECT)
        proj.evaluations.bias(
            scene.dataset, label="eligible", positive_label=1, facets="sex", model=(MODEL, 1)
        )
    _set_policy(scene)
    stale = scene.api.get(f"{scene.version(1)}/gate").json()
    assert "is not newer than approval policy v2" in " ".join(
        c["detail"] for c in stale["checks"] if not c["passed"]
    )
    with cm.connect(scene.url, user="rui") as ml:
        proj = ml.project(PROJECT)
        proj.evaluations.bias(
            scene.dataset, label="eligible", positive_label=1, facets="sex", model=(MODEL, 1)
        )
        proj.evaluations.explain((MODEL, 1), scene.dataset, rows=100)
    approved = scene.approve(1, RUI)
    assert approved.status_code == 200, approved.text
    [record] = scene.api.get(f"{scene.version(1)}/approvals").json()
    assert record["evidence"]["manifest_digest"] == scene.versions[1]["artifact_digest"]
    assert record["evidence"]["policy_version"] == 2

    # the files change after the approval: it does not carry over
    with cm.connect(settings=settings, user="mallory") as ml:
        ctx = ml.backend.ctx
        manifest = json.loads(ctx.artifacts.read_bytes(scene.versions[1]["artifact_digest"]))
        manifest["description"] = "swapped after approval"
        digest = ctx.artifacts.put_bytes(json.dumps(manifest).encode()).digest
        with ctx.db.write() as uow:
            uow.conn.execute(
                update(model_versions)
                .where(model_versions.c.id == scene.versions[1]["id"])
                .values(artifact_digest=digest)
            )
    deploy = scene.api.post(
        f"{API}/projects/{PROJECT}/endpoints",
        json={"name": "eligibility", "model": MODEL, "version": 1},
        headers=RUI,
    )
    assert_error(deploy, 409, "ConflictError", "carries no approval of its current files")
