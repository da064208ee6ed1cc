"""Pipeline executions through a real server: list (paged), get, graph.html, cancel; the remote
SDK reads them and refuses to run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import civicml as cm
from civicml.core.errors import ConfigurationError, ConflictError, NotFoundError
from civicml.core.identity import Principal
from civicml.pipelines.schemas import ExecutionStatus
from civicml.pipelines.service import PipelineService
from civicml.sdk.client import connect
from civicml.sdk.embedded import open_context
from civicml.server import create_app
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

ALICE = Principal(user="alice", roles=frozenset({"admin"}))


@cm.step
def make(n: int) -> list[int]:
    return list(range(n))


@cm.step
def total(values: list[int]) -> int:
    return sum(values)


@cm.step
def count(values: list[int]) -> int:
    return len(values)


@cm.pipeline(name="api-pipe")
def api_pipe(n: int = 5) -> None:
    values = make(n)
    total(values)
    count(values)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    settings = isolated_settings(tmp_path_factory.mktemp("pipelines-api"))
    ctx = open_context(settings, ALICE)
    try:
        from civicml.governance.projects import ProjectService

        ProjectService(ctx).ensure("pp", "projects.read")
        service = PipelineService(ctx)
        ids = [service.run(api_pipe, project="pp", params={"n": n}).id for n in (3, 4, 3)]
    finally:
        ctx.db.close()
    with serve_app(create_app(settings)) as url:
        yield url, ids


def test_list_is_paged_newest_first(server: tuple[str, list[str]]) -> None:
    url, ids = server
    with httpx.Client(base_url=url) as http:
        everything = http.get(f"{API}/projects/pp/pipelines/executions")
        assert everything.status_code == 200
        assert [e["id"] for e in everything.json()] == ids[::-1]
        first = http.get(f"{API}/projects/pp/pipelines/executions", params={"limit": 2})
        assert len(first.json()) == 2
        assert first.headers["x-total-count"] == "3"
        assert 'rel="next"' in first.headers["link"]
        only = http.get(
            f"{API}/projects/pp/pipelines/executions", params={"pipeline": "other"}
        ).json()
        assert only == []
        missing = http.get(f"{API}/projects/nope/pipelines/executions")
        assert_error(missing, 404, "NotFoundError")


def test_get_and_graph_html(server: tuple[str, list[str]]) -> None:
    url, ids = server
    with httpx.Client(base_url=url) as http:
        body = http.get(f"{API}/pipelines/executions/{ids[2]}").json()
        assert body["status"] == "succeeded"
        assert [s["status"] for s in body["steps"]] == ["cached"] * 3
        assert sorted(map(tuple, body["edges"])) == [("make", "count"), ("make", "total")]
        page = http.get(f"{API}/pipelines/executions/{ids[0]}/graph.html")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert policy.startswith("default-src 'none'; style-src 'sha256-")
        assert "<script" not in page.text
        for name in ("make", "total", "count"):
            assert f">{name}<" in page.text
        missing = http.get(f"{API}/pipelines/executions/nope")
        assert_error(missing, 404, "NotFoundError")
        assert http.get(f"{API}/pipelines/executions/nope/graph.html").status_code == 404


def test_cancel_a_waiting_execution_and_refuse_an_ended_one(
    server: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, ids = server
    with httpx.Client(base_url=url) as http:
        ended = http.post(f"{API}/pipelines/executions/{ids[0]}/cancel")
        assert_error(ended, 409, "ConflictError", "only running or waiting")
    with connect(url) as ml:
        with pytest.raises(ConflictError):
            ml.pipelines.cancel(ids[1])


def test_cancel_marks_open_steps_skipped_and_audits(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    ctx = open_context(settings, ALICE)
    try:
        from sqlalchemy import update

        from civicml.governance.audit import AuditTrail
        from civicml.governance.projects import ProjectService
        from civicml.pipelines._tables import pipeline_executions, step_executions

        ProjectService(ctx).ensure("pp", "projects.read")
        service = PipelineService(ctx)
        done = service.run(api_pipe, project="pp")
        with ctx.db.write() as uow:  # as if it were still running: one step left to do
            uow.conn.execute(
                update(pipeline_executions)
                .where(pipeline_executions.c.id == done.id)
                .values(status="running", ended_at=None)
            )
            uow.conn.execute(
                update(step_executions)
                .where(step_executions.c.execution_id == done.id, step_executions.c.step == "count")
                .values(status="pending")
            )
        cancelled = service.cancel(done.id)
        assert cancelled.status is ExecutionStatus.CANCELLED
        assert cancelled.step("count").status.value == "skipped"
        assert cancelled.step("count").error == "cancelled"
        assert cancelled.step("total").status.value == "succeeded"
        events = AuditTrail(ctx).list(action="pipeline.execution.cancelled", limit=10)
        assert [e.entity_id for e in events] == [done.id]
        again = service.retry(done.id, api_pipe)
        assert again.status is ExecutionStatus.SUCCEEDED
    finally:
        ctx.db.close()


def test_remote_sdk_reads_and_refuses_to_run(server: tuple[str, list[str]]) -> None:
    url, ids = server
    with connect(url) as ml:
        listed = ml.pipelines.list("pp")
        assert [e.id for e in listed] == ids[::-1]
        assert ml.pipelines.list("pp", pipeline="api-pipe")[0].id == ids[2]
        got = ml.pipelines.get(ids[0])
        assert got.pipeline == "api-pipe" and got.parameters == {"n": 3}
        assert got.step("total").run_id is not None
        assert ">total<" in ml.pipelines.graph_html(ids[0])
        with pytest.raises(NotFoundError):
            ml.pipelines.get("nope")
        with pytest.raises(ConfigurationError, match="remote civicml server cannot run"):
            ml.pipelines.run(api_pipe, project="pp")
        with pytest.raises(ConfigurationError):
            ml.pipelines.retry(ids[0], api_pipe)
