"""Batch jobs through a real server on a loopback port: the remote SDK (POST answers 202, the
server runs the job in the background, the SDK polls), REST error bodies and permissions, and
the CLI against the server and embedded."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.cli.main import main
from civicml.core.errors import InvalidInputError
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.evaluation.helpers import FEATURES, frame, publish
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

P = "scoring"
BASE = f"{API}/projects/{P}/batch-jobs"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("batch-api"), scheduler_enabled=False, roles={"val": ["viewer"]}
    )
    with serve_app(create_app(settings)) as base:
        with connect(base, user="alice") as ml:
            publish(ml, P)  # dataset "applications" (600 rows), model "eligibility" v1
            ml.project(P).datasets.ingest("no-region", frame(50).drop(columns=["region"]))
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120, headers={"x-civicml-user": "alice"}) as client:
        yield client


def _body(**values: Any) -> dict[str, Any]:
    return {
        "model": "eligibility",
        "model_version": 1,
        "input_dataset": "applications",
        "output_dataset": "scored",
        "chunk_rows": 256,
        **values,
    }


def test_the_remote_sdk_runs_a_job_and_reads_its_output(url: str) -> None:
    with connect(url, user="alice") as ml:
        proj = ml.project(P)
        mv = proj.models.version("eligibility", 1)
        job = proj.batch.run(mv, dataset="applications", output="sdk-scored", chunk_rows=200)
        assert job.status.value == "succeeded" and (job.rows, job.chunks) == (600, 3)
        out = proj.datasets.to_pandas(proj.batch.output(job))
        assert len(out) == 600 and {"prediction", "probability_1", *FEATURES} <= set(out.columns)
        assert proj.batch.get(job.id) == job
        assert job.id in [j.id for j in proj.batch.list(status="succeeded")]
        with pytest.raises(InvalidInputError, match="lacks the model's input columns"):
            proj.batch.run(mv, dataset="no-region", output="never")  # refused before it runs


def test_rest_post_answers_202_and_the_job_is_polled_to_the_end(api: httpx.Client) -> None:
    response = api.post(BASE, json=_body(join="none", explain=True))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running", "succeeded")
    location = response.headers["location"]
    assert location == f"{BASE}/{job['id']}"
    for _ in range(600):
        job = api.get(location).json()
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    assert job["output_dataset"] == "scored" and job["output_version"] >= 1
    assert job["rows"] == 600 and job["chunks"] == 3 and job["join"] == "none"
    listed = api.get(BASE, params={"limit": 5}).json()
    assert job["id"] in [j["id"] for j in listed]


def test_bad_requests_are_4xx_with_one_readable_line(api: httpx.Client) -> None:
    assert_error(api.post(BASE, json=_body(model="elegibility")), 404, "NotFoundError")
    assert_error(api.post(BASE, json=_body(input_dataset="nope")), 404, "NotFoundError")
    assert_error(
        api.post(BASE, json=_body(input_dataset="no-region")),
        422,
        "InvalidInputError",
        "lacks the model's input columns 'region'",
    )
    bad_bodies = [
        _body(chunk_rows=0),
        _body(chunk_rows=10**9),
        _body(chunk_rows="5"),
        _body(model_version=True),
        _body(model_version=0),
        _body(explain="yes"),
        _body(join="outer"),
        _body(model="x" * 129),
        _body(x=1),
    ]
    for bad in bad_bodies:
        assert api.post(BASE, json=bad).status_code == 422
    assert api.get(BASE, params={"limit": 0}).status_code == 422
    assert api.get(BASE, params={"status": "done"}).status_code == 422
    assert_error(api.get(f"{BASE}/nope"), 404, "NotFoundError")
    assert_error(api.get(f"{API}/projects/nowhere/batch-jobs"), 404, "NotFoundError")


def test_a_viewer_may_read_jobs_but_not_run_them(api: httpx.Client) -> None:
    viewer = {"x-civicml-user": "val"}
    assert_error(
        api.post(BASE, json=_body(output_dataset="viewer-out"), headers=viewer),
        403,
        "PermissionDeniedError",
        "datasets.write",
    )
    assert api.get(BASE, headers=viewer).status_code == 200


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(args))
    return code, out.getvalue()


def test_the_cli_runs_lists_and_shows_jobs_against_the_server(url: str) -> None:
    remote = ("--url", url, "--user", "alice")
    code, text = _cli(
        *remote, "batch", "run", "eligibility", "1", "--dataset", "applications",
        "--output", "cli-scored", "--chunk-rows", "300", "-p", P, "--json",
    )  # fmt: skip
    assert code == 0, text
    job = json.loads(text)
    assert job["status"] == "succeeded" and job["chunks"] == 2
    code, text = _cli(*remote, "batch", "list", "-p", P, "--json")
    assert code == 0 and job["id"] in [j["id"] for j in json.loads(text)]
    code, text = _cli(*remote, "batch", "list", "-p", P, "--status", "succeeded")
    assert code == 0 and "Batch jobs of scoring" in text
    code, text = _cli(*remote, "batch", "show", job["id"], "-p", P)
    assert code == 0 and "cli-scored v1" in text
    code, _ = _cli(
        *remote, "batch", "run", "eligibility", "1", "--dataset", "no-region",
        "--output", "x", "-p", P,
    )  # fmt: skip
    assert code == 2
    code, _ = _cli(*remote, "batch", "show", "nope", "-p", P)
    assert code == 2


def test_the_cli_embedded(tmp_path: Path) -> None:
    home = str(tmp_path / "embedded")
    with connect(home=home, user="alice") as ml:
        publish(ml, P)
    code, text = _cli(
        "--home", home, "--user", "alice", "batch", "run", "eligibility", "1",
        "--dataset", "applications", "--output", "here", "--join", "none", "-p", P,
    )  # fmt: skip
    assert code == 0, text
    assert "succeeded: 600 row(s) in 1 chunk(s) -> dataset here v1" in text
    code, _ = _cli("--home", home, "batch", "run", "eligibility", "1", "--dataset",
                   "applications", "--output", "x", "--chunk-rows", "0", "-p", P)  # fmt: skip
    assert code == 2
