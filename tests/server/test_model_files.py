"""Issue 9 item 0 through the real server: a pickle uploaded as a model never runs, and a
registration cannot name bytes that belong to another project."""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path

import httpx
import pytest

from civicml.sdk.client import connect
from civicml.training.model import LEGACY_FORMAT
from tests.evaluation.helpers import DATASET, MODEL, publish
from tests.server.helpers import API, Server, assert_error, model_run, upload

SCIENTIST = {"x-civicml-user": "data-scientist"}
ATTACKER = {"x-civicml-user": "mallory"}
REVIEWER = {"x-civicml-user": "risk-officer"}


class Payload:
    """Creates ``path`` when unpickled: what the attacker in issue 9 uploaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def published(server: Server) -> str:
    """A project with a dataset and a genuine civicml model (eligibility v1)."""
    name = f"files-{uuid.uuid4().hex[:8]}"
    with connect(server.url, user="data-scientist") as ml:
        publish(ml, name)
    return name


def _genuine_manifest(api: httpx.Client, project: str) -> dict[str, object]:
    mv = api.get(f"{API}/projects/{project}/models/{MODEL}/versions/1").json()
    got = api.get(f"{API}/runs/{mv['run_id']}/artifacts/model/civicml-model.json")
    assert got.status_code == 200, got.text
    return json.loads(got.content)  # type: ignore[no-any-return]


@pytest.mark.parametrize("disguise", ["old-format", "new-format"])
def test_an_uploaded_pickle_never_runs_in_the_server(
    api: httpx.Client, published: str, tmp_path: Path, disguise: str
) -> None:
    marker = tmp_path / f"pwned-{disguise}"
    manifest = _genuine_manifest(api, published)
    if disguise == "old-format":  # model.joblib with the manifest civicml wrote before 0.9
        manifest.update(format=LEGACY_FORMAT, model_file="model.joblib")
        model_file = "model.joblib"
    else:  # the pickle named as the safe file
        model_file = str(manifest["model_file"])
    run = api.post(f"{API}/projects/{published}/runs", json={}, headers=ATTACKER).json()
    uploaded = api.put(
        f"{API}/runs/{run['id']}/artifacts/model/{model_file}",
        content=pickle.dumps(Payload(marker)),
        headers={"content-type": "application/octet-stream", **ATTACKER},
    )
    assert uploaded.status_code == 201, uploaded.text
    assert upload(api, run["id"], "model/civicml-model.json", json.dumps(manifest).encode())
    name = f"evil-{disguise}"
    registered = api.post(
        f"{API}/projects/{published}/models/{name}/versions",
        json={"run_id": run["id"]},
        headers=ATTACKER,
    )
    assert registered.status_code == 201, registered.text

    explained = api.post(
        f"{API}/projects/{published}/evaluations/explanation",
        json={"model": {"name": name, "version": 1}, "dataset": {"dataset": DATASET}, "rows": 50},
        headers=ATTACKER,
    )

    body = assert_error(explained, 422, "UnsafeModelFormatError", f"Model {name} v1")
    assert "pickle" in body["message"] or "not a skops file" in body["message"]
    assert body["hint"] and "convert" in body["hint"]
    assert not marker.exists()

    approved = api.post(
        f"{API}/projects/{published}/models/{name}/versions/1/approve",
        json={"note": "looks fine"},
        headers=REVIEWER,
    )
    if approved.status_code == 200:  # deploying loads the model: refused the same way
        deployed = api.post(
            f"{API}/projects/{published}/endpoints",
            json={"name": name, "model": name, "version": 1},
            headers=REVIEWER,
        )
        assert_error(deployed, 422, "UnsafeModelFormatError")
        invoked = api.post(
            f"{API}/projects/{published}/endpoints/{name}/invocations",
            json={"instances": [{"income": 1.0}]},
        )
        assert 400 <= invoked.status_code < 500
    else:  # an approval gate refused it first: still a 4xx, and nothing ran
        assert 400 <= approved.status_code < 500, approved.text
    assert not marker.exists()


def test_the_genuine_model_still_explains(api: httpx.Client, published: str) -> None:
    explained = api.post(
        f"{API}/projects/{published}/evaluations/explanation",
        json={"model": {"name": MODEL, "version": 1}, "dataset": {"dataset": DATASET}, "rows": 50},
        headers=SCIENTIST,
    )
    assert explained.status_code == 201, explained.text


def test_a_registration_cannot_name_another_projects_bytes(api: httpx.Client, project: str) -> None:
    secret = f"weights of {project}".encode()
    owner_run = model_run(api, project, model=secret)
    listed = api.get(f"{API}/runs/{owner_run['id']}/artifacts").json()
    digest = next(a["digest"] for a in listed if a["path"] == "model/model.bin")
    other = f"other-{uuid.uuid4().hex[:8]}"
    assert api.post(f"{API}/projects", json={"name": other}).status_code == 201

    stolen = api.post(
        f"{API}/projects/{other}/models/copied/versions",
        json={"artifacts": {"model.bin": digest}},
        headers=ATTACKER,
    )

    body = assert_error(stolen, 404, "NotFoundError", f"is not in project {other!r}")
    assert project not in body["message"] + (body["hint"] or "")
    own = api.post(
        f"{API}/projects/{project}/models/mine/versions",
        json={"artifacts": {"model.bin": digest}},
        headers=SCIENTIST,
    )
    assert own.status_code == 201, own.text


def test_a_blob_uploaded_to_one_project_cannot_be_registered_in_another(
    api: httpx.Client, project: str
) -> None:
    blob = api.post(
        f"{API}/projects/{project}/blobs",
        content=f"onnx weights of {project}".encode(),
        headers={"content-type": "application/octet-stream", **SCIENTIST},
    )
    assert blob.status_code == 201, blob.text
    digest = blob.json()["digest"]
    other = f"other-{uuid.uuid4().hex[:8]}"
    assert api.post(f"{API}/projects", json={"name": other}).status_code == 201

    stolen = api.post(
        f"{API}/projects/{other}/models/copied/versions",
        json={"artifacts": {"model.onnx": digest}},
        headers=ATTACKER,
    )

    assert_error(stolen, 404, "NotFoundError", f"is not in project {other!r}")
    own = api.post(
        f"{API}/projects/{project}/models/onnx/versions",
        json={"artifacts": {"model.onnx": digest}},
        headers=SCIENTIST,
    )
    assert own.status_code == 201, own.text
