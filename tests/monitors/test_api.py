"""Monitors through a real server on a loopback port: the remote SDK (a baseline found through
lineage), REST (JSON and file ground truth, reports, error bodies), and the CLI against the
server."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from civicml.cli.main import main
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.evaluation.helpers import FEATURES, MODEL, frame, publish
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

P = "watching"
EP = "eligibility"
BASE = f"{API}/projects/{P}"


def _records(rows: int, seed: int) -> list[dict[str, Any]]:
    data = frame(rows, seed=seed)[FEATURES].astype(object)
    data = data.where(data.notna(), None)  # missing values are sent as null
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in data.to_dict(orient="records")
    ]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("monitors-api"),
        scheduler_enabled=False,
        roles={"val": ["viewer"]},
    )
    with serve_app(create_app(settings)) as base:
        with connect(base, user="alice") as ml:
            _, mv = publish(ml, P)
        with connect(base, user="rosa") as reviewer:
            reviewer.project(P).models.approve(mv, note="validated")
        with connect(base, user="alice") as ml:
            ml.project(P).endpoints.deploy(EP, mv, capture_percent=100)
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120, headers={"x-civicml-user": "alice"}) as client:
        yield client


def test_the_remote_sdk_baselines_from_lineage_and_runs_monitors(url: str) -> None:
    with connect(url, user="alice") as ml:
        proj = ml.project(P)
        quality = proj.monitors.add(
            "quality", endpoint=EP, type="model_quality", every="1h", min_rows=10
        )
        assert quality.baseline.source == "training_data"
        assert (quality.baseline.dataset.dataset, quality.baseline.model.name) == (
            "applications",
            MODEL,
        )
        drift = proj.monitors.add("inputs", endpoint=EP, type="data_quality", cron="0 * * * *")
        assert drift.cron == "0 * * * *" and drift.window_s == 3600
        answer = proj.endpoints.get(EP).predict(_records(50, seed=3))
        truth = frame(50, seed=3)["eligible"].tolist()
        upload = proj.monitors.upload_ground_truth(
            EP, pd.DataFrame({"inference_id": answer.inference_ids, "label": truth})
        )
        assert upload.rows == 50
        execution = proj.monitors.run("quality")
        assert (execution.records, execution.labeled) == (50, 50)
        assert execution.status.value in ("completed", "completed_with_violations")
        assert 0 <= (execution.metrics["accuracy"] or 0) <= 1
        assert proj.monitors.report("quality", execution.id)["execution"] == execution.id
        assert "<svg" in proj.monitors.html("quality")
        assert "Status:" in proj.monitors.report_html("quality", execution.id)
        assert [e.id for e in proj.monitors.executions("quality")] == [execution.id]
        assert proj.monitors.get("quality").latest.id == execution.id
        paused = proj.monitors.update("inputs", enabled=False)
        assert paused.enabled is False
        assert [m.name for m in proj.monitors.list(endpoint=EP)] == ["inputs", "quality"]
        assert len(proj.monitors.ground_truth(EP)) == 1
        row = next(r for r in proj.models.dashboard().rows if r.endpoints == [EP])
        assert row.monitors["quality"] == execution.status.value


def test_rest_ground_truth_reports_and_errors(api: httpx.Client) -> None:
    body = {"name": "rest-inputs", "endpoint": EP, "type": "data_quality", "every": "30m"}
    made = api.post(f"{BASE}/monitors", json=body)
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"{BASE}/monitors/rest-inputs"
    assert made.json()["window_s"] == 1800
    invoked = api.post(f"{BASE}/endpoints/{EP}/invocations", json={"records": _records(40, 8)})
    ids = invoked.json()["inference_ids"]
    records = [{"inference_id": i, "label": 1, "attributes": {"sex": "female"}} for i in ids[:5]]
    stored = api.post(f"{BASE}/endpoints/{EP}/ground-truth", json={"records": records})
    assert stored.status_code == 201 and stored.json()["columns"] == [
        "inference_id",
        "label",
        "sex",
    ]
    csv = "id,outcome\n" + "\n".join(f"{i},0" for i in ids[5:]) + "\n"
    filed = api.post(
        f"{BASE}/endpoints/{EP}/ground-truth/file",
        content=csv.encode(),
        params={"format": "csv", "inference_id": "id", "label": "outcome"},
        headers={"content-type": "application/octet-stream"},
    )
    assert filed.status_code == 201, filed.text
    assert filed.json()["rows"] == 35
    ran = api.post(f"{BASE}/monitors/rest-inputs/run", json={})
    assert ran.status_code == 201, ran.text
    execution = ran.json()
    assert execution["records"] >= 40 and execution["status"] != "failed"
    where = f"{BASE}/monitors/rest-inputs/executions/{execution['id']}"
    assert ran.headers["location"] == where
    page = api.get(f"{where}/html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]
    assert api.get(f"{where}/json").json()["status"] == execution["status"]
    assert api.get(f"{BASE}/monitors/rest-inputs/html").status_code == 200
    constraints = api.get(f"{BASE}/monitors/rest-inputs").json()["constraints"]
    constraints["monitoring_config"]["datatype_check_threshold"] = 0.5
    put = api.put(f"{BASE}/monitors/rest-inputs/constraints", json={"constraints": constraints})
    assert put.status_code == 200 and put.json()["constraints_version"] == 2
    rebased = api.post(f"{BASE}/monitors/rest-inputs/baseline", json={})
    assert rebased.status_code == 200 and rebased.json()["baseline"]["version"] == 2

    assert_error(
        api.post(f"{BASE}/monitors", json={**body, "type": "quality"}),
        422,
        "InvalidInputError",
        "body.type",
    )
    assert_error(api.post(f"{BASE}/monitors", json=body), 409, "ConflictError", "rest-inputs")
    assert_error(
        api.post(f"{BASE}/monitors", json={**body, "name": "x", "every": "5s"}),
        422,
        "InvalidInputError",
        "shorter than a minute",
    )
    assert_error(api.get(f"{BASE}/monitors/nope"), 404, "NotFoundError", "nope")
    assert_error(
        api.post(f"{BASE}/endpoints/{EP}/ground-truth", json={"records": []}),
        422,
        "InvalidInputError",
        "body.records",
    )
    assert_error(
        api.post(
            f"{BASE}/endpoints/{EP}/ground-truth/file",
            content=b"a,b\n1,2\n",
            headers={"content-type": "application/octet-stream"},
        ),
        422,
        "InvalidInputError",
        "no inference id column",
    )
    viewer = {"x-civicml-user": "val"}
    assert_error(
        api.post(f"{BASE}/monitors/rest-inputs/run", json={}, headers=viewer),
        403,
        "PermissionDeniedError",
    )
    assert api.get(f"{BASE}/monitors", headers=viewer).status_code == 200
    assert api.delete(f"{BASE}/monitors/rest-inputs").status_code == 200


def _cli(url: str, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--url", url, "--user", "alice", *args])
    return code, out.getvalue()


def test_the_cli_against_the_server(url: str, tmp_path: Path) -> None:
    code, text = _cli(
        url,
        "monitors",
        "add",
        "cli-drift",
        "--endpoint",
        EP,
        "--type",
        "data_quality",
        "--every",
        "1h",
        "-p",
        P,
    )
    assert code == 0 and "Added data_quality monitor cli-drift" in text
    with connect(url, user="alice") as ml:
        answer = ml.project(P).endpoints.get(EP).predict(_records(40, seed=21))
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "inference_id,label\n" + "".join(f"{i},1\n" for i in answer.inference_ids),
        encoding="utf-8",
    )
    code, text = _cli(url, "monitors", "ground-truth", "upload", EP, str(truth), "-p", P)
    assert code == 0 and "Stored 40 label(s)" in text
    page = tmp_path / "run.html"
    code, text = _cli(url, "monitors", "run", "cli-drift", "--html", str(page), "-p", P)
    assert code == 0 and "Monitor cli-drift:" in text and page.read_text().startswith("<!doctype")
    code, text = _cli(url, "monitors", "list", "-p", P, "--json")
    assert code == 0 and "cli-drift" in [m["name"] for m in json.loads(text)]
    code, text = _cli(url, "monitors", "constraints", "cli-drift", "-p", P)
    document = json.loads(text)
    document["monitoring_config"]["evaluate_constraints"] = "Disabled"
    edited = tmp_path / "constraints.json"
    edited.write_text(json.dumps(document), encoding="utf-8")
    code, text = _cli(url, "monitors", "constraints", "cli-drift", "--file", str(edited), "-p", P)
    assert code == 0 and "constraints v2" in text
    shown = tmp_path / "monitor.html"
    code, _ = _cli(url, "monitors", "show", "cli-drift", "--html", str(shown), "-p", P)
    assert code == 0 and "<svg" in shown.read_text()
    code, text = _cli(url, "monitors", "executions", "cli-drift", "-p", P, "--json")
    (execution,) = json.loads(text)
    code, text = _cli(url, "monitors", "report", "cli-drift", execution["id"], "-p", P, "--json")
    assert code == 0 and json.loads(text)["monitor"] == "cli-drift"
    assert _cli(url, "monitors", "add", "x", "--endpoint", EP, "--type", "nope", "-p", P)[0] == 2
    assert _cli(url, "monitors", "remove", "cli-drift", "-p", P)[0] == 0


def test_a_rollout_rolls_back_on_a_monitor_with_violations(url: str) -> None:
    with connect(url, user="alice") as ml:
        proj = ml.project(P)
        proj.monitors.add("guard", endpoint=EP, type="data_quality", every="1h")
        ep = proj.endpoints.get(EP)
        drifted = [{**r, "income": 10_000_000.0, "region": "elsewhere"} for r in _records(40, 31)]
        ep.predict(drifted)
        assert proj.monitors.run("guard").status.value == "completed_with_violations"
        _, candidate = publish(ml, P)
    with connect(url, user="rosa") as reviewer:
        reviewer.project(P).models.approve(candidate, note="validated")
    with connect(url, user="alice") as ml:
        ep = ml.project(P).endpoints.get(EP)
        ep.update(candidate.version, strategy="canary", bake="0s", alarms=["monitor:guard"])
        rolled = ep.rollout.tick()
    assert rolled.status.value == "rolled_back"
    assert rolled.reason is not None and "monitor:guard" in rolled.reason
