"""The REST router, the SDK handle (embedded and remote) and the CLI group for datasets.

They are not wired into ``create_app`` / the ``civicml`` command yet, so these tests mount them
themselves (``_app`` below); once wired, ``_app`` reduces to ``create_app(settings)``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from civicml.cli import _common
from civicml.cli.data import datasets_app
from civicml.core import InvalidInputError
from civicml.sdk.client import connect
from civicml.sdk.datasets import DatasetsHandle
from tests.data.helpers import PROJECT, frame, write_csv, write_jsonl
from tests.server.helpers import API, OCTET, assert_error

UPLOAD = r"/api/v1/projects/[^/]+/datasets/[^/]+/versions"


def test_rest_ingest_list_show_download(api: httpx.Client, tmp_path: Path) -> None:
    base = f"{API}/projects/{PROJECT}/datasets"
    body = write_csv(tmp_path / "a.csv").read_bytes()
    created = api.post(
        f"{base}/rest/versions", params={"format": "csv"}, content=body, headers=OCTET
    )
    assert created.status_code == 201, created.text
    version = created.json()
    assert created.headers["location"] == f"{base}/rest/versions/1"
    assert version["row_count"] == 5 and version["source_format"] == "csv"
    again = api.post(f"{base}/rest/versions", params={"format": "csv"}, content=body, headers=OCTET)
    assert again.json()["id"] == version["id"]  # identical content: the same version
    assert [d["name"] for d in api.get(base).json()].count("rest") == 1
    assert api.get(f"{base}/rest").json()["latest_version"] == 1
    assert [v["version"] for v in api.get(f"{base}/rest/versions").json()] == [1]
    shown = api.get(f"{base}/rest/versions/latest").json()
    assert shown["profile"][0]["name"] == "age" and shown["columns"] == version["columns"]
    parquet = api.get(f"{base}/rest/versions/1/data")
    assert parquet.status_code == 200
    assert hashlib.sha256(parquet.content).hexdigest() == version["digest"]
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 5


@pytest.mark.parametrize(
    ("path", "params", "content", "status", "error", "message"),
    [
        ("rest/versions", {"format": "xlsx"}, b"a\n1\n", 422, "InvalidInputError", "'xlsx'"),
        ("rest/versions", {}, b"a\n1\n", 422, "InvalidInputError", "no format"),
        ("rest/versions", {"format": "csv"}, b"", 422, "InvalidInputError", "is empty"),
        ("rest/versions", {"format": "csv"}, b"a,b\n1\n", 422, "InvalidInputError", "line 2"),
        ("bad%20name/versions", {"format": "csv"}, b"a\n1\n", 422, "InvalidInputError", "name"),
    ],
)
def test_rest_bad_uploads(
    api: httpx.Client,
    path: str,
    params: dict[str, str],
    content: bytes,
    status: int,
    error: str,
    message: str,
) -> None:
    response = api.post(
        f"{API}/projects/{PROJECT}/datasets/{path}", params=params, content=content, headers=OCTET
    )
    assert_error(response, status, error, message)


def test_rest_not_found(api: httpx.Client) -> None:
    base = f"{API}/projects/{PROJECT}/datasets"
    assert_error(api.get(f"{base}/missing"), 404, "NotFoundError", "'missing' does not exist")
    assert_error(api.get(f"{base}/missing/versions/1/data"), 404, "NotFoundError")


def test_remote_and_embedded_handles_agree(url: str, tmp_path: Path) -> None:
    with connect(url) as remote, connect(home=tmp_path / "home") as local:
        outcomes = []
        for ml in (remote, local):
            ml.project(PROJECT)
            handle = DatasetsHandle(ml.backend, PROJECT)
            v1 = handle.ingest("sdk", write_csv(tmp_path / "a.csv"))
            v2 = handle.ingest("sdk", frame().assign(extra=1))
            assert handle.ingest("sdk", write_jsonl(tmp_path / "a.jsonl")) == v1
            assert handle.version("sdk") == v2 and handle.version("sdk", 1) == v1
            assert [v.version for v in handle.versions("sdk")] == [1, 2]
            assert handle.get("sdk").latest_version == 2
            assert "sdk" in [d.name for d in handle.list()]
            assert handle.to_pandas(v1).shape == (5, 4)
            assert handle.read(v2).num_rows == 5
            with pytest.raises(InvalidInputError, match="does not exist"):
                handle.ingest("sdk", tmp_path / "missing.csv")
            outcomes.append((v1.digest, v2.digest, v2.schema_changes))
        assert outcomes[0] == outcomes[1]


def test_cli_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = typer.Typer()
    root.add_typer(datasets_app, name="datasets")
    monkeypatch.setattr(_common.STATE, "home", str(tmp_path / "cli-home"))
    runner = CliRunner()
    csv = str(write_csv(tmp_path / "a.csv"))

    def run(*args: str) -> str:
        result = runner.invoke(root, ["datasets", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "apps v1: 5 rows, 4 columns" in run("ingest", "apps", csv, "-p", "cli")
    shown = json.loads(run("show", "apps", "1", "-p", "cli", "--json"))
    assert shown["row_count"] == 5 and shown["profile"][1]["name"] == "income"
    assert "age" in run("show", "apps", "latest", "-p", "cli")
    assert json.loads(run("list", "-p", "cli", "--json"))[0]["name"] == "apps"
    assert "Versions of apps" in run("versions", "apps", "-p", "cli")
    jsonl = str(write_jsonl(tmp_path / "b.txt"))
    out = run("ingest", "apps", jsonl, "-p", "cli", "--format", "jsonl", "--json")
    assert json.loads(out)["version"] == 1  # same content as the CSV
    with pytest.raises(InvalidInputError, match=r"suffix '\.txt'"):
        runner.invoke(root, ["datasets", "ingest", "apps", jsonl], catch_exceptions=False)
