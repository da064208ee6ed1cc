"""A pickled pipeline served through a real server from the sandbox (pickle_models = "sandbox")."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator

import httpx
import pytest

from civicml.server import create_app
from civicml.serving.sandbox import isolation_problem
from civicml.training._signature import conform
from tests.server.helpers import API, Server, assert_error, isolated_settings, serve, upload
from tests.serving.helpers import records
from tests.serving.test_sandbox import fitted_pipeline

REVIEWER = {"x-civicml-user": "risk-officer"}

_PROBLEM = isolation_problem()
pytestmark = pytest.mark.skipif(
    _PROBLEM is not None, reason=f"this host cannot isolate a model worker: {_PROBLEM}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("server"), pickle_models="sandbox", sandbox_call_timeout_s=5
    )
    with serve(create_app(settings)) as url:
        yield Server(url, settings)


def test_a_registered_pickle_answers_as_in_process(api: httpx.Client) -> None:
    project = f"byo-{uuid.uuid4().hex[:8]}"
    assert api.post(f"{API}/projects", json={"name": project}).status_code == 201
    pipe, signature = fitted_pipeline()
    manifest = {
        "format": "civicml.pickle/1",
        "model_file": "model.pkl",
        "task": "classification",
        "signature": signature,
        "classes": [False, True],
    }
    run = api.post(f"{API}/projects/{project}/runs", json={}).json()
    assert upload(api, run["id"], "model/model.pkl", pickle.dumps(pipe)).status_code == 201
    assert upload(api, run["id"], "model/civicml-model.json", json.dumps(manifest).encode())
    registered = api.post(
        f"{API}/projects/{project}/models/byo/versions", json={"run_id": run["id"]}
    )
    assert registered.status_code == 201, registered.text
    approved = api.post(
        f"{API}/projects/{project}/models/byo/versions/1/approve",
        json={"note": "reviewed"},
        headers=REVIEWER,
    )
    assert approved.status_code == 200, approved.text
    deployed = api.post(
        f"{API}/projects/{project}/endpoints", json={"name": "byo", "model": "byo", "version": 1}
    )
    assert deployed.status_code == 201, deployed.text
    rows = records(10)

    invoked = api.post(
        f"{API}/projects/{project}/endpoints/byo/invocations", json={"records": rows}
    )

    assert invoked.status_code == 200, invoked.text
    frame = conform(rows, signature)
    assert invoked.json()["predictions"] == pipe.predict(frame).tolist()
    explained = api.post(
        f"{API}/projects/{project}/endpoints/byo/invocations",
        params={"explain": "true"},
        json={"records": rows},
    )
    assert_error(explained, 422, "InvalidInputError", "cannot be explained")
