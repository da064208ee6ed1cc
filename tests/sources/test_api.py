"""Sources through a real server on a loopback port: the remote SDK, REST error bodies for
hostile input, the refusal of a caller without ``sources.write``, and the CLI."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import httpx
import pytest

from civicml.cli.main import main
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app
from tests.sources.helpers import PG, PROJECT, need, pg, unique

BASE = f"{API}/projects/{PROJECT}/sources"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("sources-api"),
        scheduler_enabled=False,
        roles={"val": ["viewer"]},
        source_connections={"warehouse": "postgresql+psycopg://postgres:s3cret@127.0.0.1/test"},
    )
    with serve_app(create_app(settings)) as base:
        with connect(base, user="alice") as ml:
            ml.project(PROJECT)
        yield base


@pytest.fixture
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120, headers={"x-civicml-user": "alice"}) as client:
        yield client


@pytest.fixture
def table() -> Iterator[str]:
    need("postgres")
    name = unique("api")
    pg(f"CREATE TABLE {name} (id int PRIMARY KEY, who text)")
    pg(f"INSERT INTO {name} SELECT g, 'r' || g FROM generate_series(1, 50) g")
    yield name
    pg(f"DROP TABLE IF EXISTS {name}")


def test_the_remote_sdk_runs_a_source(url: str, table: str) -> None:
    with connect(url, user="alice") as ml:
        sources = ml.project(PROJECT).sources
        added = sources.add(
            "remote",
            kind="database",
            url=PG,
            database={"table": table, "watermark": "id"},
            every="1h",
        )
        assert added.every_s == 3600 and added.next_run_at is not None
        run = sources.run("remote")
        assert (run.rows, run.versions, run.status.value) == (50, [1], "succeeded")
        pg(f"INSERT INTO {table} VALUES (51, 'late')")
        status = sources.status("remote")
        assert status.lag == 1 and status.last_runs[0].id == run.id
        assert sources.run("remote").rows == 1
        assert [r.rows for r in sources.runs("remote")] == [1, 50]
        assert sources.update("remote", unschedule=True).next_run_at is None
        assert sources.update("remote", enabled=False).enabled is False
        assert [s.name for s in sources.list()] == ["remote"]
        version = ml.project(PROJECT).datasets.version("remote", 2)
        assert version.row_count == 1
        assert sources.remove("remote").name == "remote"


@pytest.mark.parametrize(
    ("body", "status", "error", "message"),
    [
        ({"url": "nope"}, 422, "InvalidInputError", "not a database URL"),
        ({"url": "sqlite:////etc/passwd"}, 422, "InvalidInputError", "not supported"),
        (
            {"url": "ftp://h/x", "kind": "nats", "database": None, "stream": {"subject": "a"}},
            422,
            "InvalidInputError",
            "not a nats URL",
        ),
        ({"url": "postgresql://u:s3cret@h/d"}, 422, "InvalidInputError", "may not carry"),
        ({"database": {"query": "SELECT " + "x" * 20_001}}, 422, "InvalidInputError", None),
        ({"database": {"query": "DROP TABLE t"}}, 422, "InvalidInputError", None),
        ({"kind": "kafka"}, 422, "InvalidInputError", None),
        ({"name": "x" * 200}, 422, "InvalidInputError", None),
        ({"stream": {"subject": "a"}}, 422, "InvalidInputError", "takes 'database'"),
        ({"every": "1s"}, 422, "InvalidInputError", "shorter than a minute"),
        ({"url": None, "connection": "missing"}, 400, "ConfigurationError", "No source"),
    ],
)
def test_hostile_input_is_refused_with_4xx(
    api: httpx.Client,
    body: dict,  # type: ignore[type-arg]
    status: int,
    error: str,
    message: str | None,
) -> None:
    request = {"name": "bad", "kind": "database", "url": PG, "database": {"table": "t"}, **body}
    request = {k: v for k, v in request.items() if v is not None}
    answer = api.post(BASE, json=request)
    assert_error(answer, status, error, message)
    assert "s3cret" not in answer.text


def test_credentials_never_leave_the_settings(api: httpx.Client) -> None:
    body = {
        "name": "wh",
        "kind": "database",
        "connection": "warehouse",
        "database": {"table": "no_such_table_x"},
    }
    made = api.post(BASE, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["target"] == "connection:warehouse"
    assert made.headers["location"] == f"{BASE}/wh"
    ran = api.post(f"{BASE}/wh/run", json={})
    assert ran.status_code == 201 and ran.json()["status"] == "failed"
    for answer in (
        ran,
        api.get(f"{BASE}/wh/status"),
        api.get(f"{BASE}/wh/runs"),
        api.get(f"{API}/audit/events", params={"project": PROJECT}),
    ):
        assert "s3cret" not in answer.text, answer.text
    assert api.delete(f"{BASE}/wh").status_code == 200


def test_missing_and_refused(api: httpx.Client) -> None:
    assert_error(api.get(f"{BASE}/nope"), 404, "NotFoundError", "does not exist")
    assert_error(api.get(f"{BASE}/nope/runs", params={"limit": 0}), 422, "InvalidInputError")
    viewer = {"x-civicml-user": "val"}
    body = {"name": "v", "kind": "database", "url": PG, "database": {"table": "t"}}
    assert_error(api.post(BASE, json=body, headers=viewer), 403, "PermissionDeniedError")
    assert api.get(BASE, headers=viewer).status_code == 200


def _cli(url: str, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--url", url, "--user", "alice", *args])
    return code, out.getvalue()


def test_the_cli_against_the_server(url: str, table: str) -> None:
    code, text = _cli(
        url,
        "sources",
        "add",
        "cli",
        "--kind",
        "database",
        "--url",
        PG,
        "--table",
        table,
        "--watermark",
        "id",
        "-p",
        PROJECT,
    )
    assert code == 0 and "Added database source cli" in text
    code, text = _cli(url, "sources", "run", "cli", "-p", PROJECT)
    assert code == 0 and "succeeded: 50 row(s)" in text
    code, text = _cli(url, "sources", "status", "cli", "-p", PROJECT)
    assert code == 0 and "0 behind" in text
    assert _cli(url, "sources", "list", "-p", PROJECT)[0] == 0
    assert _cli(url, "sources", "show", "cli", "-p", PROJECT)[0] == 0
    assert (
        _cli(
            url,
            "sources",
            "add",
            "x",
            "--kind",
            "database",
            "--url",
            "nope",
            "--table",
            "t",
            "-p",
            PROJECT,
        )[0]
        == 2
    )
    assert _cli(url, "sources", "remove", "cli", "-p", PROJECT)[0] == 0
