"""Multi-model endpoints through the real server on loopback: REST, the remote SDK and the CLI.

Routing by header and by path, the LRU cache under a small limit (the load count proves a reload
after an eviction), concurrent clients over three models under a limit of two (no failed
request), a tampered model refused, unknown and hostile targets, and changes without a redeploy.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.cli.main import main
from civicml.governance.projects import ProjectService
from civicml.registry import RegistryService
from civicml.sdk.client import connect
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from civicml.training import TabularModel
from tests.server.helpers import API, assert_error, isolated_settings, serve
from tests.serving.helpers import PROJECT, records, tamper, train
from tests.serving.test_multi_model import MB, register_as, size_of

BASE = f"{API}/projects/{PROJECT}/endpoints"
TARGET = "x-civicml-target-model"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_dirs: tuple[Path, Path]
) -> Iterator[tuple[str, Any]]:
    """A server with models a (v1's files), b (v2's), c (v1's) and d (files of its own: the
    one tampered with), all approved; yields its URL and a context on its home."""
    own = tmp_path_factory.mktemp("mme-d") / "d"
    train(own, c=0.1)
    settings = isolated_settings(tmp_path_factory.mktemp("mme-server"), rollout_enabled=False)
    ctx = open_context(settings)
    ProjectService(ctx).create(PROJECT)
    versions = [
        register_as(ctx, model_dirs[0], "a"),
        register_as(ctx, model_dirs[1], "b"),
        register_as(ctx, model_dirs[0], "c"),
        register_as(ctx, own, "d"),
    ]
    size = size_of(ctx, versions[0])
    app = create_app(settings)
    with serve(app) as url:
        yield url, (ctx, size)
    app.state.serving.close()
    ctx.db.close()


@pytest.fixture
def api(server: tuple[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=60) as client:
        yield client


def deploy(api: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "model": "a",
        "version": 1,
        "mode": "multi-model",
        "models": [{"model": "b", "version": 1}, {"model": "c", "version": "1"}],
        **extra,
    }
    made = api.post(BASE, json=body)
    assert made.status_code == 201, made.text
    return dict(made.json())


def cache(api: httpx.Client, name: str) -> dict[str, Any]:
    return dict(api.get(f"{BASE}/{name}").json()["model_cache"])


def test_routing_by_header_and_by_path(api: httpx.Client, model_dirs: tuple[Path, Path]) -> None:
    info = deploy(api, "route")
    assert info["mode"] == "multi-model"
    assert [m["target"] for m in info["models"]] == ["a/1", "b/1", "c/1"]
    rows = records(10)
    expected = {
        "a/1": TabularModel.load(model_dirs[0]).predict(rows).tolist(),
        "b/1": TabularModel.load(model_dirs[1]).predict(rows).tolist(),
    }
    for url, headers, target in [
        (f"{BASE}/route/invocations", {TARGET: "a"}, "a/1"),
        (f"{BASE}/route/invocations", {TARGET: "B/1"}, "b/1"),
        (f"{BASE}/route/models/b/invocations", {}, "b/1"),
        (f"{BASE}/route/models/a/invocations?version=1", {}, "a/1"),
        (f"/endpoints/route/models/b/invocations?project={PROJECT}", {}, "b/1"),
        (f"/endpoints/route/invocations?project={PROJECT}", {TARGET: "a/1"}, "a/1"),
    ]:
        answer = api.post(url, json={"records": rows}, headers=headers)
        assert answer.status_code == 200, (url, answer.text)
        assert answer.headers[TARGET] == answer.headers["civicml-variant"] == target
        body = answer.json()
        assert (body["target_model"], body["model_version"]) == (target, 1)
        assert body["predictions"] == expected[target]
    stats = cache(api, "route")
    assert (stats["loads"], stats["loaded"]) == (2, ["b/1", "a/1"])
    assert stats["hits"] == 4


def test_the_lru_cache_unloads_and_reloads(api: httpx.Client, server: tuple[str, Any]) -> None:
    size = server[1][1]
    deploy(api, "lru", model_cache_mb=2.5 * size / MB)  # room for two of the three
    for target in ("a", "b", "c", "a"):  # c unloads a, a unloads b
        answer = api.post(f"{BASE}/lru/invocations", json=records(1), headers={TARGET: target})
        assert answer.status_code == 200, answer.text
    stats = cache(api, "lru")
    assert (stats["loads"], stats["evictions"], stats["hits"]) == (4, 2, 0)
    assert stats["loaded"] == ["c/1", "a/1"]
    assert stats["used_bytes"] == 2 * size <= stats["limit_bytes"]


def test_concurrent_clients_over_three_models_under_a_limit_of_two(
    server: tuple[str, Any],
) -> None:
    url, (_, size) = server
    with httpx.Client(base_url=url, timeout=60) as api:
        deploy(api, "busy", model_cache_mb=2.5 * size / MB)
    statuses: Counter[int] = Counter()
    answered: Counter[str] = Counter()
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for n in range(20):
                target = "abc"[(i + n) % 3]
                got = http.post(
                    f"{BASE}/busy/invocations", json=records(2, seed=n), headers={TARGET: target}
                )
                with lock:
                    statuses[got.status_code] += 1
                    if got.status_code == 200:
                        answered[got.json()["target_model"]] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == {200: 120}
    assert answered == {"a/1": 40, "b/1": 40, "c/1": 40}
    with httpx.Client(base_url=url, timeout=60) as api:
        stats = cache(api, "busy")
    assert len(stats["loaded"]) <= 2 and stats["loads"] >= 3
    assert stats["evictions"] == stats["loads"] - len(stats["loaded"])


def test_a_tampered_model_is_refused_and_the_others_served(
    api: httpx.Client, server: tuple[str, Any]
) -> None:
    ctx = server[1][0]
    body = {"name": "tamper", "model": "a", "version": 1, "mode": "multi-model"}
    body["models"] = [{"model": "d", "version": 1}]
    assert api.post(BASE, json=body).status_code == 201
    mv = RegistryService(ctx).get_version(PROJECT, "d", 1)
    tamper(ctx, RegistryService(ctx).get_manifest(mv)["files"]["model.skops"]["digest"])
    refused = api.post(f"{BASE}/tamper/invocations", json=records(1), headers={TARGET: "d"})
    assert_error(refused, 500, "ArtifactIntegrityError", "failed its integrity check")
    ok = api.post(f"{BASE}/tamper/invocations", json=records(1), headers={TARGET: "a"})
    assert ok.status_code == 200
    stats = cache(api, "tamper")
    assert (stats["loaded"], stats["load_failures"]) == (["a/1"], 1)


@pytest.mark.parametrize(
    ("url", "headers", "status", "error", "message"),
    [
        ("/invocations", {}, 400, "BadRequestError", "must name its model"),
        ("/invocations", {TARGET: "a" * 300}, 400, "BadRequestError", "at most 257"),
        ("/invocations", {TARGET: "a b"}, 400, "BadRequestError", "MODEL or MODEL/VERSION"),
        ("/invocations", {TARGET: "a/../../x"}, 400, "BadRequestError", "MODEL or MODEL/VER"),
        ("/invocations", {TARGET: "é".encode()}, 400, "BadRequestError", "MODEL or MODEL/VERSION"),
        ("/invocations", {TARGET: "aa"}, 404, "NotFoundError", "serves no model 'aa'"),
        ("/invocations", {TARGET: "a/9"}, 404, "NotFoundError", "no version '9' of model 'a'"),
        ("/invocations", {TARGET: "a", "civicml-variant": "x"}, 400, "BadRequestError", "pin"),
        ("/models/a%20b/invocations", {}, 400, "BadRequestError", "MODEL or MODEL/VERSION"),
        ("/models/zz/invocations", {}, 404, "NotFoundError", "serves no model 'zz'"),
        ("/models/a/invocations", {TARGET: "b"}, 400, "BadRequestError", "another one"),
    ],
)
def test_hostile_and_unknown_targets(
    api: httpx.Client,
    url: str,
    headers: dict[str, Any],
    status: int,
    error: str,
    message: str,
) -> None:
    if api.get(f"{BASE}/hostile").status_code == 404:
        deploy(api, "hostile")
    got = api.post(f"{BASE}/hostile{url}", json=records(1), headers=headers)
    assert_error(got, status, error, message)
    assert cache(api, "hostile")["loads"] == 0


def test_a_single_model_endpoint_refuses_a_target(api: httpx.Client) -> None:
    body = {"name": "single", "model": "a", "version": 1}
    assert api.post(BASE, json=body).status_code == 201
    got = api.post(f"{BASE}/single/invocations", json=records(1), headers={TARGET: "a"})
    assert_error(got, 400, "BadRequestError", "takes no target model")
    got = api.post(f"{BASE}/single/models", json={"model": "b", "version": 1})
    assert_error(got, 409, "ConflictError", "single-model endpoint")


def test_models_change_without_a_redeploy_from_the_remote_sdk(server: tuple[str, Any]) -> None:
    ml = connect(server[0])
    endpoints = ml.project(PROJECT).endpoints
    ep = endpoints.deploy("sdk", model="a", version=1, mode="multi-model", models={"b": 1})
    assert ep.predict(records(2), target_model="b").target_model == "b/1"
    ep.add_model("c", 1)
    assert [m.target for m in ep.models()] == ["a/1", "b/1", "c/1"]
    assert ep.predict(records(1), target_model="c/1").target_model == "c/1"
    ep.remove_model("b")
    assert [m.target for m in ep.info.models] == ["a/1", "c/1"]
    from civicml.core import NotFoundError
    from civicml.core.errors import BadRequestError

    with pytest.raises(NotFoundError, match="serves no model 'b'"):
        ep.predict(records(1), target_model="b")
    with pytest.raises(BadRequestError, match="MODEL or MODEL/VERSION"):
        ep.predict(records(1), target_model="b c")
    assert endpoints.get("sdk").info.model_cache is not None


def test_the_cli_against_the_server(
    server: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url = server[0]

    def cli(*args: str, code: int = 0) -> str:
        capsys.readouterr()
        got = main(["--url", url, "endpoints", *args, "-p", PROJECT])
        out, err = capsys.readouterr()
        assert got == code, (out, err)
        return out + err

    out = cli(
        "deploy", "shell", "a", "1", "--multi-model", "--add-model", "b:1", "--cache-mb", "64"
    )
    assert "shell: multi-model, 2 models" in out and "cache 64 MB" in out
    cli("models", "add", "shell", "c", "1")
    record = json.dumps(records(1)[0])
    answer = json.loads(cli("invoke", "shell", "--record", record, "--target-model", "c", "--json"))
    assert answer["target_model"] == "c/1"
    listed = json.loads(cli("models", "list", "shell", "--json"))
    assert [m["target"] for m in listed] == ["a/1", "b/1", "c/1"]
    assert "c/1" in cli("models", "list", "shell")
    cli("models", "remove", "shell", "b", "--version", "1")
    assert "cache 32 MB" in cli("update", "shell", "--cache-mb", "32")
    shown = cli("show", "shell")
    assert "model b/1" not in shown and "model c/1" in shown and "1 loads" in shown
    err = cli("invoke", "shell", "--record", record, "--target-model", "x y", code=2)
    assert "Error: " in err and "MODEL or MODEL/VERSION" in err
    err = cli("deploy", "bad", "a", "1", "--multi-model", "--add-model", "b", code=2)
    assert "is not MODEL:VERSION" in err
