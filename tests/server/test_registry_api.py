"""The model registry over REST: versions, approval, aliases, archive, delete
(server/routers/registry.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests.server.helpers import API, OCTET, assert_error, model_run, register

SCIENTIST = {"x-civicml-user": "data-scientist"}
REVIEWER = {"x-civicml-user": "risk-officer"}


def _models(project: str, name: str = "eligibility") -> str:
    return f"{API}/projects/{project}/models/{name}"


def _approve(
    api: httpx.Client,
    project: str,
    version: int | str,
    note: str = "meets policy",
    headers: dict[str, str] = REVIEWER,
) -> httpx.Response:
    return api.post(
        f"{_models(project)}/versions/{version}/approve", json={"note": note}, headers=headers
    )


def _actions(api: httpx.Client, entity_id: str) -> list[str]:
    return [
        e["action"] for e in api.get(f"{API}/audit/events", params={"entity_id": entity_id}).json()
    ]


@pytest.fixture
def two_versions(api: httpx.Client, project: str) -> list[dict[str, Any]]:
    """eligibility v1 and v2, registered by data-scientist from two finished runs."""
    return [
        register(api, project, "eligibility", model_run(api, project, auc=auc)["id"])
        for auc in (0.81, 0.88)
    ]


def test_registering_from_a_run_answers_201_with_its_location(
    api: httpx.Client, project: str
) -> None:
    run = model_run(api, project, auc=0.91)

    response = api.post(
        f"{_models(project)}/versions",
        json={
            "run_id": run["id"],
            "description": "gbm baseline",
            "signature": [{"name": "income", "type": "float64"}],
        },
        headers=SCIENTIST,
    )

    assert response.status_code == 201
    mv = response.json()
    assert response.headers["location"] == f"{_models(project)}/versions/1"
    assert (mv["name"], mv["version"], mv["run_id"], mv["artifact_path"]) == (
        "eligibility",
        1,
        run["id"],
        "model",
    )
    assert mv["approval_status"] == "PendingManualApproval"
    assert mv["approval_by"] is None
    assert mv["metrics"] == {"auc": 0.91}  # the run's latest metrics by default
    assert mv["signature"] == [{"name": "income", "type": "float64", "nullable": True}]
    assert mv["created_by"] == "data-scientist"
    assert api.get(response.headers["location"]).json() == mv
    assert _actions(api, mv["id"]) == ["model_version.registered"]


def test_the_manifest_names_every_file_of_the_run_folder(api: httpx.Client, project: str) -> None:
    run = model_run(api, project, model=b"the weights")
    mv = register(api, project, "eligibility", run["id"])

    manifest = api.get(f"{_models(project)}/versions/1/manifest").json()

    assert manifest == {
        "files": {
            "meta.json": {"digest": hashlib.sha256(b'{"k": 1}').hexdigest(), "size": 8},
            "model.bin": {"digest": hashlib.sha256(b"the weights").hexdigest(), "size": 11},
        }
    }
    assert len(mv["artifact_digest"]) == 64


def test_registering_from_uploaded_blobs(api: httpx.Client, project: str) -> None:
    blob = api.post(f"{API}/projects/{project}/blobs", content=b"onnx bytes", headers=OCTET)
    digest = blob.json()["digest"]

    response = api.post(
        f"{_models(project)}/versions",
        json={"artifacts": {"model.onnx": digest}, "metrics": {"auc": 0.8}},
    )

    assert response.status_code == 201
    assert response.json()["run_id"] is None
    assert response.json()["metrics"] == {"auc": 0.8}
    assert api.get(f"{_models(project)}/versions/1/manifest").json() == {
        "files": {"model.onnx": {"digest": digest, "size": 10}}
    }


@pytest.mark.parametrize(
    "body,status,error,message",
    [
        (
            {},
            422,
            "InvalidInputError",
            "Registering a version of model 'eligibility' needs its files.",
        ),
        ({"run_id": "0" * 32}, 404, "NotFoundError", f"Run '{'0' * 32}' does not exist."),
        ({"artifacts": {"m.bin": "ab" * 32}}, 404, "NotFoundError", "is not in the artifact store"),
        (
            {"artifacts": {"m.bin": "not-a-digest"}},
            422,
            "InvalidInputError",
            "Digest 'not-a-digest' of artifact 'm.bin' is not a SHA-256 digest.",
        ),
        ({"artifacts": {"../m.bin": "ab" * 32}}, 422, "InvalidInputError", "'..' segment"),
        (
            {
                "signature": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}],
                "artifacts": {"m": "ab" * 32},
            },
            422,
            "InvalidInputError",
            "appears twice",
        ),
    ],
)
def test_a_bad_registration_is_refused_and_creates_no_version(
    api: httpx.Client, project: str, body: dict[str, Any], status: int, error: str, message: str
) -> None:
    response = api.post(f"{_models(project)}/versions", json=body)

    assert_error(response, status, error, message)
    assert api.get(f"{API}/projects/{project}/models").json() == []


def test_a_run_of_another_project_cannot_be_registered(api: httpx.Client, project: str) -> None:
    other = f"{project}-other"
    run = model_run(api, other)

    response = api.post(f"{_models(project)}/versions", json={"run_id": run["id"]})

    assert_error(response, 422, "InvalidInputError", "belongs to another project")


def test_versions_are_listed_and_read_by_number(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    listed = api.get(f"{_models(project)}/versions").json()
    model = api.get(_models(project)).json()

    assert [v["version"] for v in listed] == [1, 2]
    assert listed == two_versions
    assert api.get(f"{_models(project)}/versions/2").json() == two_versions[1]
    assert (model["name"], model["latest_version"], model["aliases"]) == ("eligibility", 2, {})
    assert [m["name"] for m in api.get(f"{API}/projects/{project}/models").json()] == [
        "eligibility"
    ]


def test_approve_records_the_caller_the_note_and_the_history(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    approved = _approve(api, project, 1, "AUC above the agreed 0.8")

    assert approved.status_code == 200
    mv = approved.json()
    assert mv["approval_status"] == "Approved"
    assert mv["approval_by"] == "risk-officer"
    assert mv["approval_note"] == "AUC above the agreed 0.8"
    assert mv["approval_at"] is not None
    history = api.get(f"{_models(project)}/versions/1/approvals").json()
    assert [(h["from_status"], h["to_status"], h["by"], h["note"]) for h in history] == [
        ("PendingManualApproval", "Approved", "risk-officer", "AUC above the agreed 0.8")
    ]
    events = api.get(f"{API}/audit/events", params={"entity_id": mv["id"]}).json()
    assert [e["action"] for e in events] == [
        "model_version.registered",
        "model_version.approval_changed",
    ]
    assert events[1]["actor"] == "risk-officer"
    assert events[1]["after"]["approval_status"] == "Approved"


def test_reject_then_reconsider_keeps_the_whole_history(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    rejected = api.post(
        f"{_models(project)}/versions/2/reject",
        json={"note": "bias review failed"},
        headers=REVIEWER,
    )
    again = api.post(
        f"{_models(project)}/versions/2/reject", json={"note": "still"}, headers=REVIEWER
    )
    pending = api.put(
        f"{_models(project)}/versions/2/approval",
        json={"status": "PendingManualApproval", "note": "retrained"},
        headers=SCIENTIST,
    )
    approved = api.put(
        f"{_models(project)}/versions/2/approval",
        json={"status": "Approved", "note": "passes now"},
        headers=REVIEWER,
    )

    assert rejected.json()["approval_status"] == "Rejected"
    assert_error(again, 409, "ConflictError", "eligibility/2")
    assert pending.json()["approval_status"] == "PendingManualApproval"
    assert approved.json()["approval_by"] == "risk-officer"
    history = api.get(f"{_models(project)}/versions/2/approvals").json()
    assert [(h["to_status"], h["by"]) for h in history] == [
        ("Rejected", "risk-officer"),
        ("PendingManualApproval", "data-scientist"),
        ("Approved", "risk-officer"),
    ]


def test_an_alias_points_at_one_version_and_moves(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    # production points only at an Approved version, even without an approval policy
    refused = api.put(f"{_models(project)}/aliases/production", json={"version": 1})
    body = assert_error(
        refused,
        409,
        "ConflictError",
        "Alias 'production' may only point at an Approved version; model version "
        "eligibility/1 is PendingManualApproval.",
    )
    assert "civicml models approve eligibility 1" in body["hint"]
    assert api.get(_models(project)).json()["aliases"] == {}
    assert api.put(f"{_models(project)}/aliases/staging", json={"version": 2}).status_code == 200
    for version in (1, 2):
        assert _approve(api, project, version).status_code == 200
    first = api.put(f"{_models(project)}/aliases/production", json={"version": 1})
    by_alias = api.get(f"{_models(project)}/versions/production").json()
    moved = api.put(f"{_models(project)}/aliases/production", json={"version": 2})

    assert first.json()["version"] == 1
    assert by_alias["version"] == 1
    assert by_alias["aliases"] == ["production"]
    assert moved.json()["aliases"] == ["production", "staging"]
    assert api.get(f"{_models(project)}/versions/production").json()["version"] == 2
    assert api.get(f"{_models(project)}/versions/1").json()["aliases"] == []
    assert api.get(_models(project)).json()["aliases"] == {"production": 2, "staging": 2}
    alias_events = api.get(
        f"{API}/audit/events", params={"project": project, "action": "model_alias.set"}
    ).json()
    assert [(e["before"], e["after"]) for e in alias_events] == [
        (None, {"name": "eligibility", "alias": "staging", "version": 2}),
        (None, {"name": "eligibility", "alias": "production", "version": 1}),
        (
            {"name": "eligibility", "alias": "production", "version": 1},
            {"name": "eligibility", "alias": "production", "version": 2},
        ),
    ]


def test_a_stale_if_match_refuses_an_alias_move_or_delete_with_412(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    from civicml.oversight import etag
    from civicml.registry.schemas import ModelAlias, ModelVersion

    url = f"{_models(project)}/aliases/production"
    for version in (1, 2):
        assert _approve(api, project, version).status_code == 200
    first = api.put(url, json={"version": 1}, headers=REVIEWER)
    read = api.get(url)
    assert read.status_code == 200
    alias = read.json()
    assert {k: alias[k] for k in ("model", "alias", "version", "updated_by")} == {
        "model": "eligibility",
        "alias": "production",
        "version": 1,
        "updated_by": "risk-officer",
    }
    tag = read.headers["etag"]
    assert tag == first.headers["etag"] == etag(ModelAlias.model_validate(alias))
    assert tag.startswith('"') and tag.endswith('"')

    # one reviewer moves it with the tag they read ...
    moved = api.put(url, json={"version": 2}, headers={"if-match": tag})
    assert moved.status_code == 200, moved.text
    assert moved.headers["etag"] != tag
    # ... a second one, who read it before, is refused instead of silently undoing the move
    stale = api.put(url, json={"version": 1}, headers={"if-match": tag})
    body = assert_error(stale, 412, "PreconditionFailedError", "alias 'production' of model")
    assert f"If-Match {tag} does not match" in body["message"]
    assert body["hint"].startswith("Read it again (GET /api/v1/projects/")
    assert_error(api.delete(url, headers={"if-match": tag}), 412, "PreconditionFailedError")
    assert_error(
        api.put(url, json={"version": 1}, headers={"if-match": "W/" + moved.headers["etag"]}),
        412,
        "PreconditionFailedError",
    )
    assert api.get(url).json()["version"] == 2
    events = api.get(
        f"{API}/audit/events", params={"project": project, "action": "model_alias.set"}
    )
    assert [e["after"]["version"] for e in events.json()] == [1, 2]

    # '*' means "if it exists"; a tag among several matches
    assert api.put(url, json={"version": 2}, headers={"if-match": "*"}).status_code == 200
    absent = api.put(f"{_models(project)}/aliases/champion", json={"version": 1},
                     headers={"if-match": "*"})  # fmt: skip
    assert_error(absent, 412, "PreconditionFailedError", "it does not exist now")
    both = f'"0123", {moved.headers["etag"]}'
    assert api.delete(url, headers={"if-match": both}).status_code == 204
    assert_error(api.get(url), 404, "NotFoundError", "has no alias 'production'")

    # a model version's ETag changes with its state, and is the SDK's etag() of the body
    version = api.get(f"{_models(project)}/versions/2")
    assert version.headers["etag"] == etag(ModelVersion.model_validate(version.json()))
    rejected = api.post(
        f"{_models(project)}/versions/2/reject", json={"note": "drifted"}, headers=REVIEWER
    )
    assert rejected.headers["etag"] not in (version.headers["etag"], None)
    assert rejected.headers["etag"] == api.get(f"{_models(project)}/versions/2").headers["etag"]


def test_an_alias_is_deleted_and_its_version_stays(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    api.put(f"{_models(project)}/aliases/champion", json={"version": 2})

    deleted = api.delete(f"{_models(project)}/aliases/champion")

    assert deleted.status_code == 204
    assert_error(
        api.get(f"{_models(project)}/versions/champion"),
        404,
        "NotFoundError",
        "has no alias 'champion'",
    )
    assert api.get(f"{_models(project)}/versions/2").json()["aliases"] == []
    assert_error(api.delete(f"{_models(project)}/aliases/champion"), 404, "NotFoundError")


def test_archive_hides_a_version_and_blocks_approval_until_unarchived(
    api: httpx.Client, project: str, two_versions: list[dict[str, Any]]
) -> None:
    archived = api.post(f"{_models(project)}/versions/1/archive")

    assert archived.json()["archived"] is True
    assert [v["version"] for v in api.get(f"{_models(project)}/versions").json()] == [2]
    assert [
        v["version"]
        for v in api.get(f"{_models(project)}/versions", params={"include_archived": True}).json()
    ] == [1, 2]
    assert_error(_approve(api, project, 1), 409, "ConflictError", "is archived")
    assert_error(
        api.put(f"{_models(project)}/aliases/production", json={"version": 1}),
        409,
        "ConflictError",
        "is archived",
    )
    assert_error(
        api.post(f"{_models(project)}/versions/1/archive"), 409, "ConflictError", "already archived"
    )

    unarchived = api.post(f"{_models(project)}/versions/1/unarchive")

    assert unarchived.json()["archived"] is False
    assert _approve(api, project, 1).json()["approval_status"] == "Approved"


def test_delete_rules(api: httpx.Client, project: str, two_versions: list[dict[str, Any]]) -> None:
    _approve(api, project, 1)
    api.put(f"{_models(project)}/aliases/staging", json={"version": 2})

    approved = api.delete(f"{_models(project)}/versions/1")
    aliased = api.delete(f"{_models(project)}/versions/2")

    assert_error(
        approved,
        409,
        "ConflictError",
        "Model version eligibility/1 cannot be deleted: it is Approved.",
    )
    assert_error(
        aliased,
        409,
        "ConflictError",
        "Model version eligibility/2 cannot be deleted: alias 'staging' points at it.",
    )
    api.delete(f"{_models(project)}/aliases/staging")
    assert api.delete(f"{_models(project)}/versions/2").status_code == 204
    assert_error(
        api.get(f"{_models(project)}/versions/2"), 404, "NotFoundError", "has no version 2"
    )
    assert _actions(api, two_versions[1]["id"])[-1] == "model_version.deleted"
    # A number is never reused.
    again = register(api, project, "eligibility", model_run(api, project)["id"])
    assert again["version"] == 3


def test_a_model_can_be_created_empty(api: httpx.Client, project: str) -> None:
    created = api.post(
        f"{API}/projects/{project}/models", json={"name": "fraud", "description": "card fraud"}
    )
    duplicate = api.post(f"{API}/projects/{project}/models", json={"name": "fraud"})

    assert created.status_code == 201
    assert created.headers["location"] == f"{API}/projects/{project}/models/fraud"
    assert created.json()["latest_version"] is None
    assert api.get(created.headers["location"]).json() == created.json()
    assert_error(
        duplicate, 409, "ConflictError", f"Model 'fraud' already exists in project '{project}'."
    )
    assert api.get(f"{API}/projects/{project}/models/fraud/versions").json() == []
