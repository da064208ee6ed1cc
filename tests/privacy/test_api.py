"""Privacy and the catalog through a real server on a loopback port: the erasure end to end
over REST and the remote SDK, retention and legal holds, the catalog's search (only readable
projects), error bodies, refusals, and the CLI against the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from civicml.cli.main import main
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.privacy.helpers import DATASET, KEY, PROJECT, SUBJECT, World, build
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

BASE = f"{API}/projects/{PROJECT}/privacy"
ALICE = {"x-civicml-user": "alice"}
VAL = {"x-civicml-user": "val"}  # a data scientist: may ingest, may not erase
NOBODY = {"x-civicml-user": "nobody"}  # no role anywhere


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World]]:
    root = tmp_path_factory.mktemp("privacy-api")
    settings = isolated_settings(root, roles={"val": ["data-scientist"], "nobody": ["guest"]})
    with serve_app(create_app(settings)) as url:
        world = build(settings.home, lambda user: connect(url, user=user))
        yield url, world


@pytest.fixture
def api(server: tuple[str, World]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=60, headers=ALICE) as client:
        yield client


def test_erasure_over_rest(api: httpx.Client, server: tuple[str, World]) -> None:
    refused = api.post(f"{BASE}/erasures", json={"key_column": KEY, "value": SUBJECT}, headers=VAL)
    assert_error(refused, 403, "PermissionDeniedError", "privacy.erase")
    assert_error(
        api.post(f"{BASE}/erasures", json={"key_column": KEY, "value": "x" * 2000}),
        422,
        "InvalidInputError",
    )
    assert api.post(f"{BASE}/erasures", json={"key_column": KEY}).status_code == 422
    assert (
        api.post(f"{BASE}/erasures", json={"key_column": KEY, "value": 1, "x": 1}).status_code
        == 422
    )
    made = api.post(f"{BASE}/erasures", json={"key_column": KEY, "value": SUBJECT})
    assert made.status_code == 201, made.text
    done = made.json()
    assert made.headers["location"].endswith(f"/privacy/erasures/{done['id']}")
    assert [v["version"] for v in done["summary"]["versions"]] == [1, 2, 3]
    assert [c["records_removed"] for c in done["summary"]["captures"]] == [2]
    assert [m["model"] for m in done["summary"]["models"]] == ["eligibility"]
    assert SUBJECT not in made.text
    assert api.get(f"{BASE}/erasures").json()[0]["id"] == done["id"]
    assert api.get(f"{BASE}/erasures/{done['id']}").json()["status"] == "completed"
    assert_error(api.get(f"{BASE}/erasures/nope"), 404, "NotFoundError")
    cert = api.get(f"{BASE}/erasures/{done['id']}/certificate")
    assert cert.status_code == 200 and json.loads(cert.content)["erasure_id"] == done["id"]
    page = api.get(f"{BASE}/erasures/{done['id']}/certificate", params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html")
    assert "content-security-policy" in page.headers and SUBJECT not in page.text
    with connect(server[0], user="alice") as ml:
        assert ml.verify_audit().ok
        [row] = ml.project(PROJECT).models.dashboard().rows
        assert row.trained_on_erased_data
        frame = ml.project(PROJECT).endpoints.get("web")
        assert frame.name == "web"
        left = ml.project(PROJECT).privacy.erasure(done["id"])
        assert left.summary.captures[0].records_removed == 2


def test_retention_and_holds_over_rest(api: httpx.Client) -> None:
    where = f"{BASE}/retention/dataset/households"
    assert_error(api.put(where, json={"days": 0}), 422, "InvalidInputError")
    assert_error(api.put(f"{BASE}/retention/table/x", json={"days": 3}), 422, "InvalidInputError")
    assert_error(api.put(f"{BASE}/retention/dataset/nope", json={"days": 3}), 404, "NotFoundError")
    assert_error(api.put(where, json={"days": 3}, headers=VAL), 403, "PermissionDeniedError")
    assert api.put(where, json={"days": 3650}).json()["days"] == 3650
    held = api.put(f"{BASE}/holds/endpoint/web", json={"reason": "case 7"})
    assert held.status_code == 200 and held.json()["legal_hold"] is True
    assert_error(
        api.put(f"{BASE}/holds/endpoint/web", json={"reason": ""}), 422, "InvalidInputError"
    )
    rules = api.get(f"{BASE}/retention", headers=VAL).json()
    assert [(r["kind"], r["name"]) for r in rules] == [
        ("dataset", "households"),
        ("endpoint", "web"),
    ]
    done = api.post(f"{BASE}/retention/enforce").json()
    assert done["expired_versions"] == [] and done["held"] == []  # the hold has no period
    assert api.delete(f"{BASE}/holds/endpoint/web").json()["legal_hold"] is False


def test_catalog_over_rest(api: httpx.Client) -> None:
    search = f"{API}/catalog/search"
    found = api.get(search, params={"q": "applic", "kind": "dataset"}).json()
    assert [(h["project"], h["name"]) for h in found["hits"]] == [(PROJECT, DATASET)]
    assert api.get(search, params={"column": KEY}, headers=NOBODY).json()["total"] == 0
    assert api.get(search, params={"q": "x" * 201}).status_code == 422
    assert api.get(search, params={"limit": 500}).status_code == 422
    assert api.get(search, params={"classification": "secret"}).status_code == 422
    entry = f"{API}/projects/{PROJECT}/catalog/datasets/{DATASET}"
    described = api.put(
        entry, json={"classification": "personal", "columns": {"age": "Age in years"}}
    )
    assert described.status_code == 200, described.text
    assert {c["name"]: c["note"] for c in described.json()["columns"]}["age"] == "Age in years"
    assert_error(api.put(entry, json={"columns": {"agee": "x"}}), 422, "InvalidInputError", "agee")
    assert_error(api.put(entry, json={"classification": "x"}), 422, "InvalidInputError")
    nul = {"description": "a\u0000b"}  # no database column can hold a NUL: refused up front
    assert_error(api.put(entry, json=nul), 422, "InvalidInputError", "NUL")
    held = api.put(f"{BASE}/holds/dataset/{DATASET}", json={"reason": "x\u0000"})
    assert_error(held, 422, "InvalidInputError", "NUL")
    erase = api.post(f"{BASE}/erasures", json={"key_column": "a\u0000", "value": "x"})
    assert_error(erase, 422, "InvalidInputError", "NUL")
    assert api.get(entry, headers=NOBODY).status_code == 404
    hits = api.get(search, params={"classification": "personal"}).json()["hits"]
    assert [h["name"] for h in hits] == [DATASET]
    graph = api.get(f"{entry}/lineage", params={"version": 2, "direction": "downstream"})
    assert graph.status_code == 200 and graph.json()["root"]["name"] == f"{DATASET} v2"
    model = api.get(f"{API}/projects/{PROJECT}/catalog/models/eligibility/lineage")
    assert model.status_code == 200 and model.json()["root"]["kind"] == "model_version"


def test_the_cli_against_the_server(
    server: tuple[str, World], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--url", server[0], "--user", "alice", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli("catalog", "search", "applic", "--kind", "dataset", "--json")
    assert code == 0 and json.loads(out)["hits"][0]["name"] == DATASET
    code, out, _ = cli(
        "catalog",
        "describe",
        "dataset",
        DATASET,
        "-p",
        PROJECT,
        "--column",
        "income",
        "Monthly income",
    )
    assert code == 0 and "Monthly income" in out
    code, out, _ = cli("catalog", "lineage", "model", "eligibility:1", "-p", PROJECT)
    assert code == 0 and "Produced" in out
    code, _, err = cli("catalog", "search", "--classification", "secret")
    assert code == 2 and "classification" in err
    code, _, err = cli("catalog", "lineage", "dataset", f"{DATASET}:x", "-p", PROJECT)
    assert code == 2 and "NAME:VERSION" in err
    code, out, _ = cli(
        "privacy", "retention", "set", "endpoint", "web", "--days", "90", "-p", PROJECT
    )
    assert code == 0 and "90 days" in out
    code, _, err = cli("privacy", "retention", "set", "endpoint", "web", "-p", PROJECT)
    assert code == 2 and "--days" in err
    code, out, _ = cli("privacy", "erase", "--key", KEY, "--value", "A-0008", "-p", PROJECT)
    assert code == 0 and "Erasure" in out
    code, out, _ = cli("privacy", "erasures", "-p", PROJECT, "--json")
    erasure_id = json.loads(out)[0]["id"]
    target = tmp_path / "cert.html"
    code, out, _ = cli(
        "privacy", "certificate", erasure_id, "-p", PROJECT, "--html", "-o", str(target)
    )
    assert code == 0 and "Erasure certificate" in target.read_text()
    code, out, _ = cli("audit", "verify")
    assert code == 0 and out.startswith("OK")
    code, out, _ = cli("models", "dashboard", "-p", PROJECT, "--json")
    assert code == 0 and json.loads(out)["rows"][0]["trained_on_erased_data"] is True
    code, out, _ = cli("models", "dashboard", "-p", PROJECT)
    assert code == 0 and "erased" in out
