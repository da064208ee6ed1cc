"""The REST router, the SDK handle (embedded and remote) and the CLI group for endpoints.

They are not wired into ``create_app`` / the ``civicml`` command yet, so these tests mount them
themselves (``_app`` below); once wired, ``_app`` reduces to ``create_app(settings)``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import typer
from fastapi import FastAPI
from typer.testing import CliRunner

from civicml.cli import _common
from civicml.cli.serving import endpoints_app
from civicml.core import ConflictError, InvalidInputError, Settings
from civicml.governance.projects import ProjectService
from civicml.sdk.client import connect
from civicml.sdk.embedded import open_context
from civicml.sdk.endpoints import EndpointsHandle
from civicml.server import create_app
from civicml.server.routers.serving import InvocationsLane, invocations_router, router
from civicml.training import TabularModel
from tests.server.helpers import API, assert_error, isolated_settings, serve
from tests.serving.helpers import MODEL, PROJECT, records, register

BASE = f"{API}/projects/{PROJECT}/endpoints"


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.include_router(router)
    app.include_router(invocations_router)
    return app


def _prepare(settings: Settings, model_dirs: tuple[Path, Path]) -> None:
    """Project 'benefits' with eligibility v1, v2 (Approved) and v3 (pending)."""
    ctx = open_context(settings)
    try:
        ProjectService(ctx).create(PROJECT)
        register(ctx, model_dirs[0])
        register(ctx, model_dirs[1])
        register(ctx, model_dirs[1], approve=False)
    finally:
        ctx.db.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, model_dirs: tuple[Path, Path]) -> Iterator[str]:
    settings = isolated_settings(tmp_path_factory.mktemp("serving-server"))
    _prepare(settings, model_dirs)
    app = _app(settings)
    with serve(app) as base:
        with httpx.Client(base_url=base) as api:
            deployed = api.post(BASE, json={"name": "shared", "model": MODEL, "version": 1})
            assert deployed.status_code == 201, deployed.text
        yield base
    app.state.serving.close()


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_rest_deploy_invoke_update_delete(api: httpx.Client, model_dirs: tuple[Path, Path]) -> None:
    body = assert_error(
        api.post(BASE, json={"name": "rest", "model": MODEL, "version": 3}),
        409,
        "ConflictError",
        f"Model version {MODEL}/3 is PendingManualApproval",
    )
    assert "civicml models approve eligibility 3" in body["hint"]
    created = api.post(BASE, json={"name": "rest", "model": MODEL, "version": 1})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"{BASE}/rest"
    assert created.json()["capture"] == {"enabled": True, "percent": 100.0}
    assert api.get(f"{BASE}/rest").json() == created.json()
    assert "rest" in [e["name"] for e in api.get(BASE).json()]

    rows = records(5)
    answer = api.post(f"{BASE}/rest/invocations", json={"records": rows})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    model = TabularModel.load(model_dirs[0])
    assert result["predictions"] == model.predict(rows).tolist()
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(rows), rtol=1e-12)
    assert result["classes"] == [False, True] and result["model_version"] == 1
    assert len(result["inference_ids"]) == 5
    short = api.post("/endpoints/rest/invocations", params={"project": PROJECT}, json=rows[0])
    assert short.status_code == 200 and short.json()["predictions"] == result["predictions"][:1]
    listed = api.post(f"{BASE}/rest/invocations", json=rows[:2]).json()
    assert listed["predictions"] == result["predictions"][:2]

    updated = api.put(f"{BASE}/rest", json={"version": 2, "capture_percent": 10})
    assert updated.status_code == 200, updated.text
    assert updated.json()["model_version"] == 2 and updated.json()["capture"]["percent"] == 10
    assert api.post(f"{BASE}/rest/invocations", json=rows).json()["model_version"] == 2
    assert api.delete(f"{BASE}/rest").status_code == 204
    assert_error(
        api.post(f"{BASE}/rest/invocations", json=rows),
        404,
        "NotFoundError",
        "Endpoint 'rest' does not exist",
    )


def _without(key: str) -> list[dict[str, Any]]:
    rows = records(2)
    del rows[1][key]
    return rows


@pytest.mark.parametrize(
    ("path", "body", "status", "error", "message"),
    [
        ("shared", {"records": _without("income")}, 422, "InvalidInputError", "column 'income'"),
        ("shared", [{**records(1)[0], "age": "old"}], 422, "InvalidInputError", "Column 'age'"),
        ("shared", {**records(1)[0], "agee": 3}, 422, "InvalidInputError", "column 'agee'"),
        ("shared", {"records": []}, 422, "InvalidInputError", "no rows"),
        ("shared", {"records": [1, 2]}, 422, "InvalidInputError", "must hold records"),
        ("shraed", records(1), 404, "NotFoundError", "Endpoint 'shraed' does not exist"),
    ],
)
def test_invocation_errors_have_the_one_error_body(
    api: httpx.Client, path: str, body: Any, status: int, error: str, message: str
) -> None:
    for url in (f"{BASE}/{path}/invocations", f"/endpoints/{path}/invocations?project={PROJECT}"):
        assert_error(api.post(url, json=body), status, error, message)


def test_invalid_json_and_unknown_project(api: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    assert_error(
        api.post(f"{BASE}/shared/invocations", content=b"{nope", headers=headers),
        400,
        "BadRequestError",
        "not valid JSON",
    )
    assert_error(api.post("/endpoints/shared/invocations", json={}), 404, "NotFoundError")


def test_update_over_http_fails_no_request(api: httpx.Client, url: str) -> None:
    assert api.post(BASE, json={"name": "busy", "model": MODEL, "version": 1}).status_code == 201
    rows = records(2)
    stop = threading.Event()
    statuses: list[int] = []
    versions: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post(f"{BASE}/busy/invocations", json={"records": rows})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    while len(statuses) < 30:
        threading.Event().wait(0.01)
    assert api.put(f"{BASE}/busy", json={"version": 2}).status_code == 200
    count = len(statuses)
    while len(statuses) < count + 30:
        threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert set(statuses) == {200}
    assert versions[0] == 1 and versions[-1] == 2


def test_remote_and_embedded_handles_agree(
    url: str, tmp_path: Path, model_dirs: tuple[Path, Path]
) -> None:
    rows = records(4)
    outcomes = []
    with connect(url) as remote, connect(home=tmp_path / "home") as local:
        ProjectService(local.backend.ctx).create(PROJECT)
        v1 = register(local.backend.ctx, model_dirs[0])
        register(local.backend.ctx, model_dirs[1])
        for ml in (remote, local):
            handle = EndpointsHandle(ml.backend, PROJECT)
            endpoint = handle.deploy("sdk", v1 if ml is local else None, model=MODEL, version=1)
            assert endpoint.info.model_version == 1
            assert handle.get("sdk").info == endpoint.info
            assert "sdk" in [e.name for e in handle.list()]
            first = endpoint.predict(rows)
            single = endpoint.predict(rows[0])
            assert single.predictions == first.predictions[:1]
            assert endpoint.update(2).info.model_version == 2
            second = endpoint.predict(rows)
            with pytest.raises(InvalidInputError, match="column 'income'"):
                endpoint.predict([{"age": 3, "region": "north"}])
            with pytest.raises(ConflictError, match="already exists"):
                handle.deploy("sdk", model=MODEL, version=1)
            endpoint.delete()
            assert "sdk" not in [e.name for e in handle.list()]
            outcomes.append((first.predictions, first.probabilities, second.model_version))
    assert outcomes[0][0] == outcomes[1][0] and outcomes[0][2] == outcomes[1][2] == 2
    assert outcomes[0][1] == outcomes[1][1]


def test_cli_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dirs: tuple[Path, Path]
) -> None:
    home = tmp_path / "cli-home"
    ctx = open_context(Settings.load(home=home))
    try:
        ProjectService(ctx).create(PROJECT)
        register(ctx, model_dirs[0])
        register(ctx, model_dirs[1])
    finally:
        ctx.db.close()
    root = typer.Typer()
    root.add_typer(endpoints_app, name="endpoints")
    monkeypatch.setattr(_common.STATE, "home", str(home))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(root, ["endpoints", *args, "-p", PROJECT], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = run("deploy", "cli", MODEL, "1", "--capture-percent", "50")
    assert "Deployed cli: eligibility v1 (InService), capture 50%" in out
    assert json.loads(run("show", "cli", "--json"))["model_version"] == 1
    assert json.loads(run("list", "--json"))[0]["name"] == "cli"
    record = json.dumps(records(1)[0])
    invoked = json.loads(run("invoke", "cli", "--record", record, "--json"))
    assert invoked["model_version"] == 1 and len(invoked["predictions"]) == 1
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"records": records(3)}))
    assert "p(True)" in run("invoke", "cli", str(batch))
    assert "Updated cli: eligibility v2" in run("update", "cli", "--version", "2")
    assert "Deleted endpoint cli" in run("delete", "cli")
    with pytest.raises(InvalidInputError, match="not both or neither"):
        runner.invoke(root, ["endpoints", "invoke", "cli", "-p", PROJECT], catch_exceptions=False)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize("short", [False, True])
def test_rest_explain_adds_up_to_the_answer(api: httpx.Client, short: bool) -> None:
    rows = records(4)
    path = "/endpoints/shared/invocations" if short else f"{BASE}/shared/invocations"
    params = {"project": PROJECT} if short else {}
    answer = api.post(path, params={**params, "explain": "true"}, json={"records": rows})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["predictions"] == api.post(path, params=params, json=rows).json()["predictions"]
    assert len(result["explanations"]) == 4
    for explanation, proba in zip(result["explanations"], result["probabilities"], strict=True):
        [output] = explanation["outputs"]
        assert explanation["output_space"] == "margin" and output["label"] is True
        assert list(output["attributions"]) == ["age", "income", "region"]
        total = output["base_value"] + sum(output["attributions"].values())
        assert total == pytest.approx(output["output"], abs=1e-9)
        assert output["output"] == pytest.approx(_logit(proba[1]), abs=1e-9)
    plain = api.post(path, params={**params, "explain": "false"}, json=rows).json()
    assert "explanations" not in plain
    body = assert_error(
        api.post(path, params={**params, "explain": "maybe"}, json=rows),
        422,
        "InvalidInputError",
        "Query parameter 'explain' must be true or false, not 'maybe'",
    )
    assert "?explain=true" in body["hint"]


def test_invocations_keep_the_guard(url: str) -> None:
    rows = json.dumps(records(1)).encode()
    path = f"{url}{BASE}/shared/invocations"
    with httpx.Client(timeout=30) as http:
        ok = http.post(path, content=rows, headers={"content-type": "application/json"})
        assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
        assert ok.headers["content-type"] == "application/json"
        text = http.post(path, content=rows, headers={"content-type": "text/plain"})
        assert_error(text, 415, "UnsupportedMediaTypeError", "must be application/json")
        cross = http.post(path, json=records(1), headers={"origin": "https://evil.example"})
        assert_error(cross, 403, "PermissionDeniedError", "Cross-site requests")
        host = http.post(path, json=records(1), headers={"host": "rebind.example"})
        assert_error(host, 400, "BadRequestError", "Host 'rebind.example' is not allowed")
        bad = http.post(path, json={"records": []})
        assert bad.headers["x-frame-options"] == "DENY"  # error answers carry them too
        assert http.get(path).status_code == 405  # other methods reach the routes as before


def test_the_fastapi_routes_answer_as_the_lane_does(
    tmp_path: Path, model_dirs: tuple[Path, Path], url: str
) -> None:
    """Without the invocations lane (an app that does not mount it) the FastAPI routes give the
    same answers and errors: both go through one function."""
    settings = isolated_settings(tmp_path)
    _prepare(settings, model_dirs)
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not InvocationsLane]
    rows = records(3)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as plain:
        assert plain.post(BASE, json={"name": "shared", "model": MODEL, "version": 1}).is_success
        with httpx.Client(base_url=url, timeout=30) as lane:
            for path in (f"{BASE}/shared/invocations", "/endpoints/shared/invocations"):
                params = {"project": PROJECT, "explain": "true"}
                want = lane.post(path, params=params, json=rows).json()
                got = plain.post(path, params=params, json=rows).json()
                assert got["predictions"] == want["predictions"]
                assert got["explanations"] == want["explanations"]
                assert_error(
                    plain.post(path, params={"project": PROJECT}, json=[{"age": 3}]),
                    422,
                    "InvalidInputError",
                    "column 'income'",
                )
                maybe = plain.post(path, params={"project": PROJECT, "explain": "maybe"}, json=rows)
                assert_error(maybe, 422, "InvalidInputError", "explain")
    app.state.serving.close()


def test_sdk_and_cli_explain(
    url: str, tmp_path: Path, model_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = records(2)
    with connect(url) as remote:
        endpoint = EndpointsHandle(remote.backend, PROJECT).get("shared")
        result = endpoint.invoke(rows, explain=True)
        assert result.explanations is not None and len(result.explanations) == 2
        assert endpoint.predict(rows).explanations is None
    home = tmp_path / "home"
    with connect(home=home) as local:
        ProjectService(local.backend.ctx).create(PROJECT)
        v1 = register(local.backend.ctx, model_dirs[0])
        embedded = EndpointsHandle(local.backend, PROJECT).deploy("local", v1)
        mine = embedded.invoke(rows, explain=True)
    assert mine.explanations is not None
    for embedded_one, remote_one in zip(mine.explanations, result.explanations, strict=True):
        assert embedded_one.outputs[0].attributions == pytest.approx(
            remote_one.outputs[0].attributions
        )
    root = typer.Typer()
    root.add_typer(endpoints_app, name="endpoints")
    monkeypatch.setattr(_common.STATE, "home", str(home))
    runner = CliRunner()
    args = ["endpoints", "invoke", "local", "--record", json.dumps(rows[0]), "-p", PROJECT]
    shown = runner.invoke(root, [*args, "--explain"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "Why (linear SHAP, margin" in shown.output and "income" in shown.output
    dumped = runner.invoke(root, [*args, "--explain", "--json"], catch_exceptions=False)
    assert json.loads(dumped.output)["explanations"][0]["outputs"][0]["label"] is True
