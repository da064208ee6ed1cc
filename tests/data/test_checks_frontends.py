"""Quality expectations and personal data through the real server (REST on a loopback port),
the remote SDK and the CLI: the same results, 4xx for bad input, refusals by permission."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from civicml.cli import _common
from civicml.cli.data import datasets_app
from civicml.core import ConflictError, InvalidInputError
from civicml.sdk.client import connect
from tests.data.helpers import PROJECT
from tests.server.helpers import API, assert_error

PEOPLE = pd.DataFrame(
    {
        "name": ["Mary Smith", "John Okafor", "Aisha Khan", "Wei Chen"] * 5,
        "email": [f"p{i}@mail.example.org" for i in range(20)],
        "age": [25, 37, 12, 58] * 5,
        "region": ["north", "south"] * 10,
    }
)


def _upload(api: httpx.Client, name: str, frame: pd.DataFrame) -> dict[str, object]:
    body = frame.to_csv(index=False).encode()
    created = api.post(
        f"{API}/projects/{PROJECT}/datasets/{name}/versions",
        params={"format": "csv"},
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def test_rest_expectations_quarantine_pii_and_redaction(api: httpx.Client) -> None:
    base = f"{API}/projects/{PROJECT}/datasets/people"
    v1 = _upload(api, "people", PEOPLE)
    assert (v1["classification"], v1["quality_status"]) == ("personal", None)
    added = api.post(
        f"{base}/expectations",
        json={"name": "adult", "kind": "between", "column": "age", "min": 18},
    )
    assert added.status_code == 201, added.text
    assert added.headers["location"].endswith("/expectations/adult")
    assert [e["name"] for e in api.get(f"{base}/expectations").json()] == ["adult"]
    report = api.post(f"{base}/versions/1/quality", params={"sample_rows": 2})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["status"] == "quarantined" and body["results"][0]["failing_rows"] == 5
    assert len(body["results"][0]["sample"]) == 2
    assert api.get(f"{base}/versions/1/quality").json()["id"] == body["id"]
    html = api.get(f"{base}/versions/1/quality/html")
    assert html.status_code == 200 and "adult" in html.text
    assert html.headers["content-type"].startswith("text/html")
    assert_error(api.get(f"{base}/versions/1/usable"), 409, "ConflictError", "quarantined")
    released = api.post(
        f"{base}/versions/1/quarantine/override",
        json={"justification": "the minors are synthetic test records"},
    )
    assert released.status_code == 200 and released.json()["quality_status"] == "released"
    assert api.get(f"{base}/versions/1/usable").json() == {"usable": True, "purpose": "training"}

    scan = api.post(f"{base}/versions/1/pii").json()
    assert scan["classification"] == "personal"
    assert {f["column"] for f in scan["findings"]} >= {"name", "email"}
    assert api.get(f"{base}/versions/1/pii").json()["id"] == scan["id"]
    assert "email" in api.get(f"{base}/versions/1/pii/html").text
    redacted = api.post(
        f"{base}/versions/1/redact",
        json={
            "rules": [{"column": "name", "action": "drop"}, {"column": "email", "action": "hash"}],
            "target": "people-safe",
            "quasi_identifiers": ["region"],
        },
    )
    assert redacted.status_code == 201, redacted.text
    result = redacted.json()
    assert result["k_anonymity"]["k"] == 10 and result["classification"] == "confidential"
    assert redacted.headers["location"].endswith("/datasets/people-safe/versions/1")
    assert api.get(f"{API}/projects/{PROJECT}/datasets/people").json()["classification"] == (
        "personal"
    )
    assert api.delete(f"{base}/expectations/adult").status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error", "message"),
    [
        (
            "POST",
            "expectations",
            {"name": "s", "kind": "sql", "sql": "DROP TABLE data"},
            422,
            "InvalidInputError",
            "exactly one SELECT",
        ),
        (
            "POST",
            "expectations",
            {"name": "s", "kind": "sql", "sql": "SELECT * FROM read_text('/etc/passwd')"},
            422,
            "InvalidInputError",
            "does not run on the dataset",
        ),
        (
            "POST",
            "expectations",
            {"name": "r", "kind": "match_regex", "column": "email", "pattern": "(a)\\1"},
            422,
            "InvalidInputError",
            "RE2",
        ),
        ("POST", "expectations", {"name": "r", "kind": "between"}, 422, None, "needs column"),
        ("POST", "expectations", {"name": "r", "kind": "nope", "column": "a"}, 422, None, None),
        (
            "POST",
            "expectations",
            {"name": "r", "kind": "sql", "sql": "x" * 10_001},
            422,
            None,
            None,
        ),
        ("DELETE", "expectations/missing", None, 404, "NotFoundError", "no expectation"),
        (
            "POST",
            "versions/1/quarantine/override",
            {"justification": "not quarantined at all"},
            409,
            "ConflictError",
            "is not quarantined",
        ),
        ("POST", "versions/1/redact", {"rules": []}, 422, None, None),
        (
            "POST",
            "versions/1/redact",
            {"rules": [{"column": "zz", "action": "drop"}]},
            422,
            "InvalidInputError",
            "'zz'",
        ),
        ("POST", "versions/9/pii", None, 404, "NotFoundError", "has no version 9"),
        ("GET", "versions/1/usable?purpose=fun", None, 422, None, None),
    ],
)
def test_rest_bad_input_is_4xx(
    api: httpx.Client,
    method: str,
    path: str,
    body: object,
    status: int,
    error: str | None,
    message: str | None,
) -> None:
    _upload(api, "bad-input", PEOPLE.head(4))
    response = api.request(method, f"{API}/projects/{PROJECT}/datasets/bad-input/{path}", json=body)
    if error is None:
        assert response.status_code == status, response.text
    else:
        assert_error(response, status, error, message)


def test_remote_sdk_matches_embedded(url: str, tmp_path: Path) -> None:
    with connect(url) as remote, connect(home=tmp_path / "home") as local:
        outcomes = []
        for ml in (remote, local):
            datasets = ml.project(PROJECT).datasets
            v = datasets.ingest("sdk-checks", PEOPLE)
            datasets.expectations.add("sdk-checks", "adult", kind="between", column="age", min=18)
            report = datasets.expectations.run("sdk-checks")
            assert report is not None and report.status.value == "quarantined"
            with pytest.raises(ConflictError, match="quarantined"):
                datasets.check_usable(v)
            with pytest.raises(InvalidInputError, match="Invalid expectation"):
                datasets.expectations.add("sdk-checks", "x", kind="between")
            scan = datasets.scan_pii("sdk-checks")
            result = datasets.redact(
                "sdk-checks", 1, rules=[{"column": "name", "action": "drop"}], target="sdk-red"
            )
            assert datasets.classification("sdk-checks") is not None
            outcomes.append(
                (
                    [(r.name, r.failing_rows) for r in report.results],
                    scan.classification,
                    [f.column for f in scan.findings],
                    result.version.row_count,
                    [e.name for e in datasets.expectations.list("sdk-checks")],
                )
            )
        assert outcomes[0] == outcomes[1]


def test_cli_expect_pii_redact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = typer.Typer()
    root.add_typer(datasets_app, name="datasets")
    monkeypatch.setattr(_common.STATE, "home", str(tmp_path / "cli-home"))
    runner = CliRunner()
    csv = tmp_path / "people.csv"
    PEOPLE.to_csv(csv, index=False)

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(root, ["datasets", *args, "-p", "cli"])
        assert result.exit_code == code, result.output
        return result.output

    run("ingest", "people", str(csv))
    run("expect", "add", "people", "adult", "--kind", "between", "--column", "age", "--min", "18")
    run(
        "expect",
        "add",
        "people",
        "known",
        "--kind",
        "in_set",
        "--column",
        "region",
        "--value",
        "north",
        "--value",
        "south",
        "--non-blocking",
    )
    assert "adult" in run("expect", "list", "people")
    out = run("expect", "run", "people", code=1)  # quarantined: exit 1
    assert "people v1: quarantined" in out and "1 failed (1 blocking)" in out
    assert json.loads(run("expect", "report", "people", "1", "--json"))["status"] == "quarantined"
    assert "personal" in run("pii", "scan", "people")
    out = run(
        "redact",
        "people",
        "1",
        "--drop",
        "name",
        "--hash",
        "email",
        "--age-band",
        "age",
        "--target",
        "people-safe",
        "--quasi",
        "age",
        "--quasi",
        "region",
    )
    assert "people-safe v1" in out and "-anonymous over age, region" in out
    assert "Quality: quarantined" in run("show", "people", "1")
    run("expect", "remove", "people", "known")
    with pytest.raises(InvalidInputError, match="not valid SQL"):  # exit 2 in `civicml`
        runner.invoke(
            root,
            [
                "datasets",
                "expect",
                "add",
                "people",
                "x",
                "--kind",
                "sql",
                "--sql",
                "DELETE",
                "-p",
                "cli",
            ],
            catch_exceptions=False,
        )
