"""Schedules through a real server on a loopback port: the remote SDK creates an event
schedule, the server's own scheduler thread fires it when a dataset version arrives; error
bodies for a module outside pipeline_modules, bad input, a viewer and a missing schedule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from civicml.core.errors import ConfigurationError, NotFoundError
from civicml.sdk.client import connect
from civicml.server import create_app
from tests.server.helpers import API, assert_error, isolated_settings
from tests.server.helpers import serve as serve_app

ECHO = "tests.pipelines.scheduled:echo"
BASE = f"{API}/projects/sp/schedules"
VIEWER = {"x-civicml-user": "val"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(
        tmp_path_factory.mktemp("schedules-api"),
        pipeline_modules=["tests.pipelines.scheduled"],
        scheduler_interval_s=0.1,
        scheduler_lease_s=5,
        roles={"val": ["viewer"]},
    )
    with serve_app(create_app(settings)) as base:
        with connect(base, user="alice") as ml:
            ml.project("sp")
        yield base


def test_the_servers_scheduler_fires_an_event_schedule_created_remotely(url: str) -> None:
    with connect(url, user="alice") as ml:
        created = ml.schedules.create(
            "on-claims",
            project="sp",
            pipeline=ECHO,
            event="dataset_version.created",
            match={"dataset": "claims"},
            params={"dataset": "{event.dataset}", "version": "{event.version}", "tag": "api"},
        )
        assert created.created_by == "alice" and created.event == "dataset_version.created"
        assert [s.name for s in ml.schedules.list("sp")] == ["on-claims"]
        assert ml.schedules.get("on-claims", project="sp").id == created.id
        ml.project("sp").datasets.ingest("claims", pd.DataFrame({"x": [1.0, 2.0]}))
        deadline = time.monotonic() + 60
        firings: list[Any] = []
        while time.monotonic() < deadline:
            firings = ml.schedules.firings("on-claims", project="sp")
            if firings and firings[0].status.value in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        (firing,) = firings
        assert firing.status.value == "succeeded", firing.error
        assert firing.parameters == {"dataset": "claims", "version": 1, "tag": "api"}
        execution = ml.pipelines.get(firing.execution_id)
        assert execution.created_by == "alice" and execution.parameters["dataset"] == "claims"

        assert ml.schedules.pause("on-claims", project="sp").enabled is False
        assert ml.schedules.resume("on-claims", project="sp").enabled is True
        assert ml.schedules.delete("on-claims", project="sp").name == "on-claims"
        with pytest.raises(NotFoundError, match="on-claims"):
            ml.schedules.get("on-claims", project="sp")
        with pytest.raises(ConfigurationError, match="pipeline_modules"):
            ml.schedules.create("evil", project="sp", pipeline="os:system", cron="@daily")


def test_error_bodies(url: str) -> None:
    cron = {"name": "n", "pipeline": ECHO, "cron": "0 3 * * *"}
    with httpx.Client(base_url=url, headers={"x-civicml-user": "alice"}) as http:
        refused = http.post(BASE, json={**cron, "pipeline": "subprocess:run"})
        body = assert_error(refused, 400, "ConfigurationError", "pipeline_modules")
        assert "CIVICML_PIPELINE_MODULES" in body["hint"]
        assert_error(
            http.post(BASE, json={**cron, "event": "report.created"}),
            422,
            "InvalidInputError",
            "exactly one of cron and event",
        )
        assert_error(
            http.post(BASE, json={**cron, "event": None, "surprise": 1}),
            422,
            "InvalidInputError",
            "Extra inputs are not permitted",
        )
        too_many = {f"p{i}": i for i in range(65)}
        assert_error(
            http.post(BASE, json={**cron, "params": too_many}), 422, "InvalidInputError", "64"
        )
        assert_error(
            http.post(BASE, json={**cron, "starting_deadline_s": "60"}), 422, "InvalidInputError"
        )
        assert_error(
            http.post(BASE, json={**cron, "cron": "0 3 * *"}), 422, "InvalidInputError", "five"
        )
        assert_error(http.get(f"{BASE}/nope"), 404, "NotFoundError", "'nope'")
        assert_error(
            http.get(f"{BASE}/nope/firings", params={"limit": 0}), 422, "InvalidInputError"
        )
        made = http.post(BASE, json=cron)
        assert made.status_code == 201, made.text
        assert_error(http.post(BASE, json=cron), 409, "ConflictError", "already exists")
        listed = http.get(BASE, params={"limit": 1})
        assert listed.status_code == 200 and listed.headers["x-total-count"] == "1"
        assert http.get(f"{BASE}/n/firings").json() == []

        assert http.get(BASE, headers=VIEWER).status_code == 200
        assert_error(
            http.post(BASE, json={**cron, "name": "v"}, headers=VIEWER),
            403,
            "PermissionDeniedError",
            "experiments.write",
        )
        assert_error(http.post(f"{BASE}/n/pause", headers=VIEWER), 403, "PermissionDeniedError")
        assert_error(http.delete(f"{BASE}/n", headers=VIEWER), 403, "PermissionDeniedError")
        assert http.delete(f"{BASE}/n").status_code == 200
