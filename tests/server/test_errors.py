"""Every failure answers the one error body, and a failed request changes nothing.

Mirrors ``src/civicml/server/errors.py``: a table of bad requests → status, error class and message;
after each, the data stored before reads back identical and no file appeared outside the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.core import Settings
from civicml.server import create_app
from tests.server.helpers import (
    API,
    OCTET,
    SECURITY_HEADERS,
    RawResponse,
    Server,
    assert_error,
    audit_count,
    create_run,
    files_under,
    model_run,
    raw_request,
    register,
    serve,
    upload,
)

UNKNOWN_RUN = "0" * 32


@dataclass(frozen=True)
class Seed:
    """What exists before each bad request."""

    base_url: str
    project: str
    run: str  # running, with params, tags, metrics and an artifact
    finished: str  # a finished run whose model is registered as eligibility v1 (alias production)
    model: str


def make_seed(api: httpx.Client, base_url: str) -> Seed:
    assert api.post(f"{API}/projects", json={"name": "benefits"}).status_code == 201
    run = create_run(api, "benefits", params={"lr": "0.1"}, tags={"team": "ml"})
    logged = api.post(
        f"{API}/runs/{run['id']}/metrics",
        json={
            "metrics": [
                {"key": "auc", "value": 0.5, "step": 0},
                {"key": "auc", "value": 0.9, "step": 1},
            ]
        },
    )
    assert logged.status_code == 200
    assert upload(api, run["id"], "model/model.bin", b"\x00weights\xff").status_code == 201
    finished = model_run(api, "benefits")
    register(api, "benefits", "eligibility", finished["id"])
    approved = api.post(  # production needs an Approved version, approved by someone else
        f"{API}/projects/benefits/models/eligibility/versions/1/approve",
        json={"note": "reviewed"},
        headers={"x-civicml-user": "reviewer"},
    )
    assert approved.status_code == 200, approved.text
    alias = api.put(
        f"{API}/projects/benefits/models/eligibility/aliases/production", json={"version": 1}
    )
    assert alias.status_code == 200
    return Seed(base_url, "benefits", run["id"], finished["id"], "eligibility")


@dataclass(frozen=True)
class Table:
    api: httpx.Client
    seed: Seed
    settings: Settings


@pytest.fixture(scope="module")
def table(server: Server) -> Iterator[Table]:
    """The module's server, seeded once: each case checks that it changed nothing, so the
    cases cannot disturb each other (and the seed is written once, not 40 times)."""
    with httpx.Client(base_url=server.url, timeout=30) as api:
        yield Table(api, make_seed(api, server.url), server.settings)


@dataclass(frozen=True)
class Fresh:
    api: httpx.Client
    seed: Seed
    settings: Settings


@pytest.fixture
def fresh(live_server: str, settings: Settings) -> Iterator[Fresh]:
    """A seeded server of its own, for tests that damage the store."""
    with httpx.Client(base_url=live_server, timeout=30) as api:
        yield Fresh(api, make_seed(api, live_server), settings)


def snapshot(api: httpx.Client, seed: Seed, tree: Path) -> dict[str, Any]:
    """Everything a bad request could have changed, read back over HTTP and from disk."""
    run = seed.run
    return {
        "projects": api.get(f"{API}/projects").json(),
        "run": api.get(f"{API}/runs/{run}").json(),
        "finished": api.get(f"{API}/runs/{seed.finished}").json(),
        "history": api.get(f"{API}/runs/{run}/metrics/auc").json(),
        "artifacts": api.get(f"{API}/runs/{run}/artifacts").json(),
        "bytes": api.get(f"{API}/runs/{run}/artifacts/model/model.bin").content,
        "versions": api.get(
            f"{API}/projects/benefits/models/eligibility/versions",
            params={"include_archived": True},
        ).json(),
        "experiments": api.get(f"{API}/projects/benefits/experiments").json(),
        "audit_events": audit_count(api),
        "files": files_under(tree),
    }


Request = Callable[[httpx.Client, Seed], "httpx.Response | RawResponse"]


@dataclass(frozen=True)
class Case:
    id: str
    request: Request
    status: int
    error: str
    message: str  # substring of the message; {run}, {finished} are filled from the seed
    hint: str | None = None  # substring of the hint
    loc: list[str] | None = None  # the first field path in details


def _raw_put(path: str) -> Request:
    return lambda api, s: raw_request(
        s.base_url, "PUT", f"{API}/runs/{s.run}/artifacts/{path}", body=b"evil", headers=OCTET
    )


def _raw_get(path: str) -> Request:
    return lambda api, s: raw_request(s.base_url, "GET", f"{API}/runs/{s.run}/artifacts/{path}")


def _metric(api: httpx.Client, s: Seed, value: Any, step: int = 0) -> httpx.Response:
    return api.post(
        f"{API}/runs/{s.run}/metrics",
        json={"metrics": [{"key": "auc", "value": value, "step": step}]},
    )


MODELS = f"{API}/projects/benefits/models/eligibility"
CASES = [
    Case(
        "unknown-project",
        lambda api, s: api.get(f"{API}/projects/benefit"),
        404,
        "NotFoundError",
        "Project 'benefit' does not exist.",
        hint="Did you mean 'benefits'?",
    ),
    Case(
        "unknown-project-runs",
        lambda api, s: api.get(f"{API}/projects/benefit/runs"),
        404,
        "NotFoundError",
        "Project 'benefit' does not exist.",
        hint="Did you mean 'benefits'?",
    ),
    Case(
        "unknown-run",
        lambda api, s: api.get(f"{API}/runs/{UNKNOWN_RUN}"),
        404,
        "NotFoundError",
        f"Run '{UNKNOWN_RUN}' does not exist.",
    ),
    Case(
        "unknown-run-params",
        lambda api, s: api.post(f"{API}/runs/{UNKNOWN_RUN}/params", json={"params": {"a": 1}}),
        404,
        "NotFoundError",
        f"Run '{UNKNOWN_RUN}' does not exist.",
    ),
    Case(
        "invalid-project-name",
        lambda api, s: api.post(f"{API}/projects", json={"name": "bad name!"}),
        422,
        "InvalidInputError",
        "Project name 'bad name!' is not valid.",
    ),
    Case(
        "duplicate-project",
        lambda api, s: api.post(f"{API}/projects", json={"name": "benefits"}),
        409,
        "ConflictError",
        "Project 'benefits' already exists.",
    ),
    Case(
        "metric-value-not-a-number",
        lambda api, s: _metric(api, s, "abc"),
        422,
        "InvalidInputError",
        "Invalid input at body.metrics.0.value",
        loc=["body", "metrics", "0", "value"],
    ),
    Case(
        "metric-value-boolean",
        lambda api, s: _metric(api, s, True),
        422,
        "InvalidInputError",
        "not a boolean",
        loc=["body", "metrics", "0", "value"],
    ),
    Case(
        "metric-negative-step",
        lambda api, s: _metric(api, s, 1.0, step=-1),
        422,
        "InvalidInputError",
        "Invalid input at body.metrics.0.step",
        loc=["body", "metrics", "0", "step"],
    ),
    Case(
        "extra-field-in-run-body",
        lambda api, s: api.post(f"{API}/projects/benefits/runs", json={"colour": "red"}),
        422,
        "InvalidInputError",
        "Extra inputs are not permitted",
        loc=["body", "colour"],
    ),
    Case(
        "extra-field-in-metric",
        lambda api, s: api.post(
            f"{API}/runs/{s.run}/metrics", json={"metrics": [{"key": "a", "value": 1, "unit": "s"}]}
        ),
        422,
        "InvalidInputError",
        "Extra inputs are not permitted",
        loc=["body", "metrics", "0", "unit"],
    ),
    Case(
        "malformed-json",
        lambda api, s: api.post(
            f"{API}/projects", content=b'{"name": ', headers={"content-type": "application/json"}
        ),
        400,
        "BadRequestError",
        "The request body is not valid JSON",
        hint="Check the JSON syntax",
    ),
    Case(
        "missing-required-field",
        lambda api, s: api.post(f"{API}/projects", json={}),
        422,
        "InvalidInputError",
        "Invalid input at body.name",
        loc=["body", "name"],
    ),
    Case(
        "metrics-to-finished-run",
        lambda api, s: api.post(
            f"{API}/runs/{s.finished}/metrics", json={"metrics": [{"key": "auc", "value": 1}]}
        ),
        409,
        "ConflictError",
        "Cannot log metrics to run {finished}: it is finished, not running.",
        hint="Start a new run",
    ),
    Case(
        "params-to-finished-run",
        lambda api, s: api.post(f"{API}/runs/{s.finished}/params", json={"params": {"x": 1}}),
        409,
        "ConflictError",
        "Cannot log parameters to run {finished}: it is finished",
    ),
    Case(
        "artifact-to-finished-run",
        lambda api, s: upload(api, s.finished, "late.txt", b"late"),
        409,
        "ConflictError",
        "Cannot log artifacts to run {finished}: it is finished",
    ),
    Case(
        "end-finished-run-as-failed",
        lambda api, s: api.post(f"{API}/runs/{s.finished}/end", json={"status": "failed"}),
        409,
        "ConflictError",
        "Cannot end run {finished}: it is finished, not running.",
    ),
    Case(
        "immutable-param",
        lambda api, s: api.post(f"{API}/runs/{s.run}/params", json={"params": {"lr": "0.2"}}),
        409,
        "ConflictError",
        "Parameter 'lr' of run {run} is already '0.1'; it cannot become '0.2'.",
        hint="Parameters are immutable",
    ),
    Case(
        "bad-filter-get",
        lambda api, s: api.get(
            f"{API}/projects/benefits/runs",
            params={"filter": "metrics.auc > 0.8 or params.lr = '1'"},
        ),
        422,
        "InvalidInputError",
        "Cannot parse the filter at position 17",
    ),
    Case(
        "bad-filter-post",
        lambda api, s: api.post(
            f"{API}/projects/benefits/runs/search",
            json={"filter": "metrics.auc > 0.8 or params.lr = '1'"},
        ),
        422,
        "InvalidInputError",
        "Cannot parse the filter at position 17",
    ),
    Case(
        "bad-order-by",
        lambda api, s: api.get(f"{API}/projects/benefits/runs", params={"order_by": "auc"}),
        422,
        "InvalidInputError",
        "Cannot order by 'auc'.",
    ),
    Case(
        "max-results-out-of-range",
        lambda api, s: api.get(f"{API}/projects/benefits/runs", params={"max_results": 0}),
        422,
        "InvalidInputError",
        "Invalid input at query.max_results",
    ),
    Case(
        "traversal-encoded-slashes",
        _raw_put("..%2F..%2Fetc%2Fpasswd"),
        422,
        "InvalidInputError",
        "Artifact path '../../etc/passwd' has an empty, '.' or '..'",
    ),
    Case(
        "traversal-dot-segments",
        _raw_put("a/../../b"),
        422,
        "InvalidInputError",
        "Artifact path 'a/../../b' has an empty, '.' or '..'",
    ),
    Case(
        "traversal-absolute",
        _raw_put("/etc/passwd"),
        422,
        "InvalidInputError",
        "Artifact path '/etc/passwd' is absolute.",
    ),
    Case(
        "traversal-backslash",
        _raw_put("a\\b"),
        422,
        "InvalidInputError",
        "contains the character '\\\\'",
    ),
    Case(
        "traversal-encoded-dots",
        _raw_put("%2e%2e/x"),
        422,
        "InvalidInputError",
        "Artifact path '../x' has an empty, '.' or '..'",
    ),
    Case(
        "traversal-read",
        _raw_get("..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
        422,
        "InvalidInputError",
        "has an empty, '.' or '..' segment",
    ),
    Case(
        "unknown-artifact",
        lambda api, s: api.get(f"{API}/runs/{s.run}/artifacts/model/x.bin"),
        404,
        "NotFoundError",
        "has no artifact 'model/x.bin'",
    ),
    Case(
        "approve-empty-note",
        lambda api, s: api.post(f"{MODELS}/versions/1/approve", json={"note": "  "}),
        422,
        "InvalidInputError",
        "Approving model 'eligibility' version 1 needs a note saying why.",
        hint="note=",
    ),
    Case(
        "approve-without-note",
        lambda api, s: api.post(f"{MODELS}/versions/1/approve", json={}),
        422,
        "InvalidInputError",
        "Invalid input at body.note",
        loc=["body", "note"],
    ),
    Case(
        "approve-unknown-version",
        lambda api, s: api.post(f"{MODELS}/versions/99/approve", json={"note": "ok"}),
        404,
        "NotFoundError",
        "Model 'eligibility' in project 'benefits' has no version 99.",
        hint="Its versions are 1.",
    ),
    Case(
        "unknown-model",
        lambda api, s: api.get(f"{API}/projects/benefits/models/eligibilty/versions/1"),
        404,
        "NotFoundError",
        "Model 'eligibilty' does not exist in project 'benefits'.",
        hint="Did you mean 'eligibility'?",
    ),
    Case(
        "unknown-alias",
        lambda api, s: api.get(f"{MODELS}/versions/prodution"),
        404,
        "NotFoundError",
        "has no alias 'prodution'",
        hint="Did you mean 'production'?",
    ),
    Case(
        "alias-named-like-a-number",
        lambda api, s: api.put(f"{MODELS}/aliases/3", json={"version": 1}),
        422,
        "InvalidInputError",
        "Alias '3' looks like a version number",
    ),
    Case(
        "alias-to-version-zero",
        lambda api, s: api.put(f"{MODELS}/aliases/staging", json={"version": 0}),
        422,
        "InvalidInputError",
        "Invalid input at body.version",
        loc=["body", "version"],
    ),
    Case(
        "delete-aliased-version",
        lambda api, s: api.delete(f"{MODELS}/versions/1"),
        409,
        "ConflictError",
        "Model version eligibility/1 cannot be deleted: alias 'production' points at it",
        hint="eligibility production",
    ),
    Case(
        "archive-aliased-version",
        lambda api, s: api.post(f"{MODELS}/versions/1/archive"),
        409,
        "ConflictError",
        "cannot be archived: alias 'production' points at it",
    ),
    Case(
        "unknown-approval-status",
        lambda api, s: api.put(
            f"{MODELS}/versions/1/approval", json={"status": "Approvd", "note": "x"}
        ),
        422,
        "InvalidInputError",
        "Invalid input at body.status",
        loc=["body", "status"],
    ),
    Case(
        "unknown-route",
        lambda api, s: api.get(f"{API}/nothing-here"),
        404,
        "NotFoundError",
        "Not Found",
        hint="/openapi.json",
    ),
    Case(
        "wrong-method",
        lambda api, s: api.delete(f"{API}/projects"),
        405,
        "MethodNotAllowedError",
        "Method Not Allowed",
        hint="/openapi.json",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_answers_the_error_body_and_changes_nothing(case: Case, table: Table) -> None:
    api, seed, settings = table.api, table.seed, table.settings
    tree = settings.home.parent
    before = snapshot(api, seed, tree)

    response = case.request(api, seed)

    body = assert_error(
        response, case.status, case.error, case.message.format(run=seed.run, finished=seed.finished)
    )
    if case.hint is not None:
        assert body["hint"] is not None and case.hint in body["hint"], body["hint"]
    if case.loc is not None:
        assert body["details"][0]["loc"] == case.loc, body["details"]
        assert {"loc", "msg", "type"} <= set(body["details"][0])
    assert snapshot(api, seed, tree) == before
    root = settings.artifacts_root
    assert sorted(p.name for p in root.iterdir()) == ["objects", "tmp"]
    assert list((root / "tmp").iterdir()) == []


def test_every_validation_problem_is_listed_with_its_field_path(table: Table) -> None:
    response = table.api.post(
        f"{API}/runs/{table.seed.run}/metrics",
        json={"metrics": [{"key": "", "value": "abc", "step": -1}]},
    )

    body = assert_error(response, 422, "InvalidInputError", "Invalid input at body.metrics.0.")
    assert sorted(tuple(d["loc"]) for d in body["details"]) == [
        ("body", "metrics", "0", "key"),
        ("body", "metrics", "0", "step"),
        ("body", "metrics", "0", "value"),
    ]
    assert body["hint"] == "Check the request against /openapi.json."


@pytest.mark.parametrize("path", ["/projects", "/projects/{project}/experiments"])
def test_extra_field_in_project_and_experiment_bodies_is_refused(
    api: httpx.Client, project: str, path: str
) -> None:
    before = (
        api.get(f"{API}/projects").json(),
        api.get(f"{API}/projects/{project}/experiments").json(),
    )

    response = api.post(
        API + path.format(project=project), json={"name": f"{project}-2", "descripton": "x"}
    )

    assert_error(response, 422, "InvalidInputError", "Extra inputs are not permitted")
    after = (
        api.get(f"{API}/projects").json(),
        api.get(f"{API}/projects/{project}/experiments").json(),
    )
    assert after == before


def test_a_bug_answers_a_generic_500_without_the_traceback(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail at /srv/civicml")

    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/api/v1/boom")

    body = assert_error(
        response, 500, "InternalError", "Internal server error; the server log has the details."
    )
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text
    assert body["hint"] == "This is a bug in civicml; please report it with the log."


def test_a_bug_answer_carries_the_security_headers(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/api/v1/boom")

    assert response.status_code == 500
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


def test_a_tampered_artifact_is_refused_not_served(fresh: Fresh) -> None:
    api, seed, settings = fresh.api, fresh.seed, fresh.settings
    info = api.get(f"{API}/runs/{seed.run}/artifacts", params={"prefix": "model"}).json()[0]
    digest = info["digest"]
    stored = settings.artifacts_root / "objects" / digest[:2] / digest[2:4] / digest
    stored.chmod(0o644)
    stored.write_bytes(b"EVIL-BYTES")

    response = api.get(f"{API}/runs/{seed.run}/artifacts/model/model.bin")

    assert_error(response, 500, "ArtifactIntegrityError", "failed its integrity check")
    assert b"EVIL-BYTES" not in response.content
    assert response.headers["x-content-type-options"] == "nosniff"


def test_an_integrity_error_does_not_reveal_server_paths(fresh: Fresh) -> None:
    api, seed, settings = fresh.api, fresh.seed, fresh.settings
    digest = api.get(f"{API}/runs/{seed.run}/artifacts").json()[0]["digest"]
    stored = settings.artifacts_root / "objects" / digest[:2] / digest[2:4] / digest
    stored.chmod(0o644)
    stored.write_bytes(b"EVIL-BYTES")

    response = api.get(f"{API}/runs/{seed.run}/artifacts/model/model.bin")

    assert response.status_code == 500
    assert str(settings.home) not in response.text


def test_a_deleted_artifact_blob_is_a_404_without_the_server_path(fresh: Fresh) -> None:
    api, seed, settings = fresh.api, fresh.seed, fresh.settings
    digest = api.get(f"{API}/runs/{seed.run}/artifacts").json()[0]["digest"]
    (settings.artifacts_root / "objects" / digest[:2] / digest[2:4] / digest).unlink()

    response = api.get(f"{API}/runs/{seed.run}/artifacts/model/model.bin")

    body = assert_error(
        response, 404, "NotFoundError", f"Artifact sha256:{digest} is not in the artifact store"
    )
    assert "Restore them from a backup" in body["hint"]
    for leak in (str(settings.home), str(settings.artifacts_root), "/objects/"):
        assert leak not in response.text
