"""Costs through a real server on a loopback port: the report (JSON and HTML), budgets with
their permission, run usage from a remote client, and the one error shape for bad input."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from civicml.core.errors import PermissionDeniedError
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

RATES = {"cpu_hour": 3600.0}  # one per CPU-second


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("costs-api"), rates=RATES, roles={"vic": ["viewer"]}
    )
    with serve_app(create_app(settings)) as found:
        yield found


def test_remote_usage_reaches_the_report(url: str) -> None:
    with connect(url, user="alice") as ml:
        run = ml.project("cp").start_run(experiment="remote")
        ml.backend.call("POST", f"{API}/runs/{run.id}/usage", json_body={"wall_s": 2, "cpu_s": 1.5})
        run.end()
        report = ml.costs.report("cp", by="run")
        assert report.currency == "EUR" and report.rates["cpu_hour"] == 3600.0
        (line,) = [r for r in report.lines if r.id == run.id]
        assert (line.cpu_s, line.wall_s, line.cost) == (1.5, 2.0, pytest.approx(1.5))
        assert "cp" in ml.costs.report().projects  # every project the caller may read
        page = ml.costs.report_html("cp", by="run")
        assert "<svg" in page and "<script" not in page


def test_budgets_over_rest_and_the_remote_sdk(url: str) -> None:
    with connect(url, user="alice") as ml:
        ml.project("bp")
        status = ml.costs.set_budget("bp", amount=50, warn_fraction=0.5, hard_stop=True)
        assert (status.budget.amount, status.budget.hard_stop, status.state.value) == (
            50,
            True,
            "ok",
        )
        assert ml.costs.budget("bp") == status
        ml.costs.clear_budget("bp")
        assert ml.costs.budget("bp") is None
    with httpx.Client(base_url=url) as http:
        body = {"amount": 10}
        forbidden = http.put(
            f"{API}/projects/bp/budget", json=body, headers={"x-civicml-user": "vic"}
        )
        assert_error(forbidden, 403, "PermissionDeniedError", "members.write")
        seen = http.get(f"{API}/projects/bp/budget", headers={"x-civicml-user": "vic"})
        assert seen.status_code == 200 and seen.json() is None
    with connect(url, user="vic") as viewer, pytest.raises(PermissionDeniedError):
        viewer.costs.set_budget("bp", amount=10)


def test_a_spent_hard_stop_refuses_a_remote_run(url: str) -> None:
    with connect(url, user="alice") as ml:
        run = ml.project("hp").start_run()
        ml.backend.call("POST", f"{API}/runs/{run.id}/usage", json_body={"wall_s": 9, "cpu_s": 9})
        run.end()
        ml.costs.set_budget("hp", amount=5, hard_stop=True)
    with httpx.Client(base_url=url) as http:
        refused = http.post(f"{API}/projects/hp/runs", json={"experiment": "e"})
        body = assert_error(refused, 409, "BudgetExceededError", "reaching its budget of 5.00")
        assert "civicml costs budget set hp" in body["hint"]


def test_bad_input_has_the_one_error_shape(url: str) -> None:
    with httpx.Client(base_url=url) as http:
        http.post(f"{API}/projects", json={"name": "ep"})
        run = http.post(f"{API}/projects/ep/runs", json={}).json()
        assert_error(
            http.get(f"{API}/projects/ep/costs", params={"by": "team"}), 422, "InvalidInputError"
        )
        assert_error(
            http.post(f"{API}/runs/{run['id']}/usage", json={"wall_s": -1, "cpu_s": 1}),
            422,
            "InvalidInputError",
        )
        assert_error(
            http.put(f"{API}/projects/ep/budget", json={"amount": 1, "warn_fraction": 0}),
            422,
            "InvalidInputError",
        )
        assert_error(http.delete(f"{API}/projects/ep/budget"), 404, "NotFoundError", "no budget")
        assert_error(
            http.post(f"{API}/runs/{'0' * 32}/usage", json={"wall_s": 1, "cpu_s": 1}),
            404,
            "NotFoundError",
        )
        page = http.get(f"{API}/projects/ep/costs.html")
        assert (
            page.status_code == 200 and "script-src" not in page.headers["content-security-policy"]
        )
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
