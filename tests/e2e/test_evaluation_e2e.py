"""Evaluations against the real ``civicml server`` in a subprocess: a data scientist publishes
data and a model with the SDK, a reviewer measures bias and explains the model with the CLI,
and everything is in the API, the lineage and the audit trail."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

import civicml as cm
from civicml.cli.main import main
from tests.evaluation.helpers import DATASET, LABEL, MODEL, PROJECT, publish

pytestmark = pytest.mark.e2e
API = "/api/v1"


def _cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--url", url, "--user", "reviewer", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bias_and_explanation_through_the_server(
    server_process: tuple[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, _home = server_process
    with cm.connect(url, user="data-scientist") as ml:
        dv, mv = publish(ml)
    assert mv.approval_status.value == "PendingManualApproval"

    code, out, err = _cli(
        capsys, url, "evaluate", "bias", DATASET, "-p", PROJECT, "-l", LABEL,
        "--positive-label", "1", "-f", "sex", "-f", "age>60", "--model", MODEL, "--json",
    )  # fmt: skip
    assert code == 0, err
    bias = json.loads(out)
    assert (bias["kind"], bias["created_by"]) == ("bias_post_training", "reviewer")
    assert bias["dataset"]["id"] == dv.id and bias["model"]["id"] == mv.id
    values = bias["summary"]["values"]
    assert set(values) == {"sex", "age"} and set(values["sex"]) == {"female", "male"}
    assert values["sex"]["female"]["DI"] is not None

    page = tmp_path / "why.html"
    code, out, err = _cli(
        capsys, url, "evaluate", "explain", MODEL, "-d", DATASET, "-p", PROJECT,
        "--rows", "300", "-o", str(page),
    )  # fmt: skip
    assert code == 0, err
    assert "Global importance" in out and page.read_text().startswith("<!doctype html>")

    code, out, err = _cli(capsys, url, "evaluate", "list", "-p", PROJECT, "--json")
    listed = json.loads(out)
    assert [e["kind"] for e in listed] == ["explanation", "bias_post_training"]
    why = listed[0]

    code, _, err = _cli(
        capsys, url, "evaluate", "bias", DATASET, "-p", PROJECT, "-l", LABEL,
        "--positive-label", "yes", "-f", "sex",
    )  # fmt: skip
    assert code == 2 and "Positive label 'yes' is not a value of label column" in err

    exported = tmp_path / "bias.json"
    assert _cli(capsys, url, "evaluate", "export", bias["id"], "-o", str(exported))[0] == 0
    digests = {f["path"]: f["digest"] for f in bias["files"]}
    assert json.loads(exported.read_text())["stage"] == "post_training"

    with httpx.Client(base_url=url, timeout=30) as http:
        html = http.get(f"{API}/evaluations/{why['id']}/html")
        assert html.status_code == 200
        assert html.headers["content-security-policy"].startswith("default-src 'none'; ")
        raw = http.get(f"{API}/evaluations/{bias['id']}/json")
        assert hashlib.sha256(raw.content).hexdigest() == digests["report.json"]
        lineage = http.get(
            f"{API}/lineage/model_version/{mv.id}", params={"direction": "downstream"}
        ).json()
        assert {n["ref"] for n in lineage["nodes"] if n["kind"] == "evaluation"} == {
            bias["id"],
            why["id"],
        }
        events = http.get(f"{API}/audit/events", params={"limit": 10_000}).json()
        created = [e for e in events if e["action"] == "evaluation.created"]
        assert [(e["entity_id"], e["actor"]) for e in created] == [
            (bias["id"], "reviewer"),
            (why["id"], "reviewer"),
        ]
        assert http.get(f"{API}/audit/verify").json()["ok"] is True
