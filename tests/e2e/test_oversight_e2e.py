"""Governed approval against the real ``civicml server`` in a subprocess whose settings give
rosa the risk-officer role (CIVICML_ROLES in its environment): tara trains and registers with
the SDK, rui reviews with the CLI, rosa overrides — and the audit chain still verifies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import civicml as cm
from civicml.cli.main import main
from civicml.core.errors import ConflictError, PermissionDeniedError
from civicml.data.samples import benefit_applications
from tests.conftest import start_server
from tests.oversight.helpers import CUSTOM_ROLES, JUSTIFICATION, MODEL, POLICY, PROJECT
from tests.oversight.helpers import GATE_FAILED as FAILED

pytestmark = pytest.mark.e2e
API = "/api/v1"


def _cli(
    capsys: pytest.CaptureFixture[str], url: str, user: str, *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--url", url, "--user", user, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_refusals_override_card_and_dashboard_through_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CIVICML_ROLES", json.dumps({"rosa": ["risk_officer"]}))
    monkeypatch.setenv("CIVICML_CUSTOM_ROLES", json.dumps(CUSTOM_ROLES))
    with start_server(tmp_path / "server-home", tmp_path / "server.log") as url:
        with cm.connect(url, user="tara") as tara:
            proj = tara.project(PROJECT)
            data = proj.datasets.ingest("applications", benefit_applications(600, seed=3))
            with proj.start_run() as run:
                trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
            mv = proj.models.register(MODEL, trained, run=run)
            # separation of duties: the one who trained and registered it cannot approve it
            with pytest.raises(PermissionDeniedError, match="tara registered model version"):
                proj.models.approve(mv, note="looks good to me")
        assert mv.approval_status.value == "PendingManualApproval"

        policy = tmp_path / "policy.toml"
        policy.write_text(POLICY, encoding="utf-8")
        code, out, err = _cli(
            capsys, url, "rui", "models", "policy", "set", MODEL, str(policy), "-p", PROJECT
        )
        assert (code, out.strip()) == (0, "Approval policy v1 of eligibility set by rui"), err
        code, out, _ = _cli(
            capsys, url, "rui", "models", "gate", MODEL, "1", "-p", PROJECT, "--json"
        )
        assert code == 1
        assert [c["name"] for c in json.loads(out)["checks"] if not c["passed"]] == FAILED

        # the gate refuses rui, over the SDK and the CLI alike
        with cm.connect(url, user="rui") as rui, pytest.raises(ConflictError) as refused:
            rui.project(PROJECT).models.approve(mv, note="reviewed")
        assert refused.value.status == 409
        assert "Approval of eligibility v1 refused: 3 of 4 checks" in refused.value.message
        assert [d["name"] for d in refused.value.details] == FAILED
        code, out, err = _cli(
            capsys, url, "rui", "models", "approve", MODEL, "1", "-m", "reviewed", "-p", PROJECT
        )
        assert code == 1 and out == ""  # a refused approval fails, as a failing gate does
        assert err.startswith("Error: Approval of eligibility v1 refused")
        # rui cannot override: roles are the server's, and it gives rui none
        code, _, err = _cli(
            capsys, url, "rui", "models", "approve", MODEL, "1", "-m", "urgent",
            "--override", JUSTIFICATION, "-p", PROJECT,
        )  # fmt: skip
        assert code == 1 and "rui may not override the approval gate" in err

        with cm.connect(url, user="rosa") as rosa:
            approved = rosa.project(PROJECT).models.approve(
                mv, note="pilot only", override_justification=JUSTIFICATION
            )
        assert (approved.approval_status.value, approved.approval_by) == ("Approved", "rosa")

        # the card: written and exported through the CLI, served with a strict CSP
        hostile = "<img src=x onerror=alert(1)> Benefits analytics"
        code, out, err = _cli(
            capsys, url, "rui", "cards", "edit", MODEL, "1",
            "--set", f"model_overview.model_owner={hostile}",
            "--set", "intended_uses.risk_rating=High", "-m", "owner and risk", "-p", PROJECT,
        )  # fmt: skip
        assert code == 0, err
        assert out.strip() == (
            "Card of eligibility v1 is now version 1 (Draft, 9 field(s) to complete)"
        )
        page = tmp_path / "card.html"
        code, _, err = _cli(
            capsys, url, "rui", "cards", "export", MODEL, "1", "-o", str(page), "-p", PROJECT
        )
        assert code == 0, err
        html = page.read_text(encoding="utf-8")
        assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert f"overridden: {JUSTIFICATION}" in html
        markdown = tmp_path / "card.md"
        code, _, err = _cli(
            capsys, url, "rui", "cards", "export", MODEL, "1", "-f", "markdown",
            "-o", str(markdown), "-p", PROJECT,
        )  # fmt: skip
        assert code == 0, err
        assert markdown.read_text(encoding="utf-8").count("TO COMPLETE") == 9

        code, out, err = _cli(capsys, url, "rui", "models", "dashboard", "-p", PROJECT, "--json")
        assert code == 0, err
        [row] = json.loads(out)["rows"]
        assert (row["version"], row["approval_status"], row["gate"], row["gate_failed"]) == (
            1,
            "Approved",
            "failed",
            FAILED,
        )
        assert (row["card_status"], row["card_missing"], row["risk_rating"]) == ("Draft", 9, "High")

        with httpx.Client(base_url=url, timeout=30) as http:
            version = f"{API}/projects/{PROJECT}/models/{MODEL}/versions/1"
            served = http.get(f"{version}/card/html")
            assert served.status_code == 200 and served.text == html
            csp = served.headers["content-security-policy"]
            assert csp.startswith("default-src 'none'; style-src 'sha256-")
            assert "script-src" not in csp
            [record] = http.get(f"{version}/approvals").json()
            assert record["evidence"]["override"] == {
                "justification": JUSTIFICATION,
                "by": "rosa",
                "role": "risk_officer",
            }
            events: list[dict[str, Any]] = http.get(
                f"{API}/audit/events", params={"entity_id": mv.id, "limit": 1000}
            ).json()
            assert [(e["action"], e["actor"]) for e in events] == [
                ("model_version.registered", "tara"),
                ("model_version.approval_refused", "tara"),  # separation of duties
                ("model_version.approval_refused", "rui"),  # the gate, SDK
                ("model_version.approval_refused", "rui"),  # the gate, CLI
                ("model_version.approval_refused", "rui"),  # no override role
                ("model_version.approval_changed", "rosa"),
            ]
            reasons = [e["after"].get("reason") for e in events[1:4]]
            assert reasons == ["separation_of_duties", "gate_failed", "gate_failed"]
            assert events[-1]["roles"] == ["risk_officer"]
            assert events[-1]["after"]["evidence"]["override"]["justification"] == JUSTIFICATION
            graph = http.get(
                f"{API}/lineage/model_version/{mv.id}",
                params={"direction": "upstream", "max_depth": 1},
            ).json()
            [approval] = [n for n in graph["nodes"] if n["kind"] == "approval"]
            assert approval["properties"]["by"] == "rosa"
            assert approval["properties"]["overridden"] is True
            verified = http.get(f"{API}/audit/verify").json()
            assert verified["ok"] is True

        code, out, err = _cli(capsys, url, "rui", "audit", "verify")
        assert code == 0, err
        assert "audit events verified" in out
