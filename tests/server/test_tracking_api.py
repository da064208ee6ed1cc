"""Runs over REST: params, tags, metrics, search, artifacts, status (server/routers/tracking.py)."""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import httpx
import pytest

from tests.server.helpers import API, OCTET, Server, assert_error, create_run, upload


def _actions(api: httpx.Client, run_id: str) -> list[str]:
    events = api.get(f"{API}/audit/events", params={"entity_id": run_id}).json()
    return [e["action"] for e in events]


def test_creating_a_run_answers_201_with_its_location(api: httpx.Client, project: str) -> None:
    response = api.post(
        f"{API}/projects/{project}/runs",
        json={
            "experiment": "baseline",
            "name": "first",
            "params": {"lr": 0.1, "depth": 3},
            "tags": {"team": "benefits"},
        },
    )

    assert response.status_code == 201
    run = response.json()
    assert response.headers["location"] == f"{API}/runs/{run['id']}"
    assert api.get(response.headers["location"]).json() == run
    assert (run["project"], run["experiment"], run["name"], run["status"]) == (
        project,
        "baseline",
        "first",
        "running",
    )
    assert run["params"] == {"lr": "0.1", "depth": "3"}
    assert run["tags"] == {"team": "benefits"}
    assert len(run["id"]) == 32
    assert [e["name"] for e in api.get(f"{API}/projects/{project}/experiments").json()] == [
        "baseline"
    ]


def test_a_run_in_an_unknown_project_creates_the_project(api: httpx.Client) -> None:
    name = f"auto-{os.urandom(4).hex()}"

    run = create_run(api, name)

    assert api.get(f"{API}/projects/{name}").json()["name"] == name
    assert run["experiment"] == "default"


def test_params_tags_and_metrics_round_trip(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]

    assert (
        api.post(
            f"{API}/runs/{run_id}/params",
            json={"params": {"lr": 0.01, "algorithm": "gbm", "layers": [64, 32]}},
        ).status_code
        == 204
    )
    assert (
        api.post(f"{API}/runs/{run_id}/params", json={"params": {"lr": 0.01}}).status_code == 204
    )  # the same value again is a harmless retry
    assert (
        api.post(
            f"{API}/runs/{run_id}/tags", json={"tags": {"owner": "ana", "stage": 1}}
        ).status_code
        == 204
    )
    assert api.post(f"{API}/runs/{run_id}/tags", json={"tags": {"stage": "2"}}).status_code == 204
    result = api.post(
        f"{API}/runs/{run_id}/metrics",
        json={
            "metrics": [
                {"key": "auc", "value": 0.81, "step": 0},
                {"key": "auc", "value": 0.87, "step": 1},
                {"key": "loss", "value": 0.3, "step": 1, "timestamp": 1_700_000_000_000},
            ]
        },
    )
    assert result.json() == {"stored": 3, "duplicate": False}

    run = api.get(f"{API}/runs/{run_id}").json()

    assert run["params"] == {"lr": "0.01", "algorithm": "gbm", "layers": "[64, 32]"}
    assert run["tags"] == {"owner": "ana", "stage": "2"}
    assert run["metrics"] == {"auc": 0.87, "loss": 0.3}
    loss = api.get(f"{API}/runs/{run_id}/metrics/loss").json()["values"]
    assert loss == [{"key": "loss", "value": 0.3, "step": 1, "timestamp": 1_700_000_000_000}]
    assert _actions(api, run_id) == [
        "run.created",
        "run.params_logged",
        "run.tags_set",
        "run.tags_set",
    ]


def test_a_tag_can_be_deleted_once(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project, tags={"temp": "x", "keep": "y"})["id"]

    assert api.delete(f"{API}/runs/{run_id}/tags/temp").status_code == 204

    assert api.get(f"{API}/runs/{run_id}").json()["tags"] == {"keep": "y"}
    assert_error(
        api.delete(f"{API}/runs/{run_id}/tags/temp"),
        404,
        "NotFoundError",
        f"Run {run_id} has no tag 'temp'.",
    )


@pytest.mark.parametrize(
    "sent,expected",
    [
        ("NaN", math.nan),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        (1e308, 1e308),
        (-0.0, -0.0),
        (5, 5.0),
    ],
)
def test_non_finite_metrics_are_kept_and_read_back(
    api: httpx.Client, project: str, sent: Any, expected: float
) -> None:
    run_id = create_run(api, project)["id"]

    stored = api.post(
        f"{API}/runs/{run_id}/metrics", json={"metrics": [{"key": "m", "value": sent}]}
    )

    assert stored.status_code == 200
    latest = api.get(f"{API}/runs/{run_id}").json()["metrics"]["m"]
    history = api.get(f"{API}/runs/{run_id}/metrics/m").json()["values"]
    for value in (latest, history[0]["value"]):
        number = float(value)  # JSON carries NaN and infinities as "NaN", "Infinity", "-Infinity"
        if math.isnan(expected):
            assert value == "NaN"
        else:
            assert number == expected
            if math.isinf(expected):
                assert value == ("Infinity" if expected > 0 else "-Infinity")


def test_metric_history_is_ordered_by_step(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    for step, value in [(3, 0.3), (1, 0.1), (2, 0.2), (0, 0.0)]:
        api.post(
            f"{API}/runs/{run_id}/metrics",
            json={"metrics": [{"key": "loss", "value": value, "step": step}]},
        )

    history = api.get(f"{API}/runs/{run_id}/metrics/loss").json()["values"]

    assert [(h["step"], h["value"]) for h in history] == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)]
    assert api.get(f"{API}/runs/{run_id}").json()["metrics"] == {"loss": 0.3}


def test_a_metric_batch_retried_with_its_batch_id_is_stored_once(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]
    body = {
        "batch_id": "retry-1",
        "metrics": [
            {"key": "acc", "value": 0.5, "step": 0},
            {"key": "acc", "value": 0.6, "step": 1},
        ],
    }

    first = api.post(f"{API}/runs/{run_id}/metrics", json=body)
    second = api.post(f"{API}/runs/{run_id}/metrics", json=body)

    assert first.json() == {"stored": 2, "duplicate": False}
    assert second.json() == {"stored": 0, "duplicate": True}
    assert [h["value"] for h in api.get(f"{API}/runs/{run_id}/metrics/acc").json()["values"]] == [
        0.5,
        0.6,
    ]


def test_a_batch_of_batches_is_deduplicated_per_batch_id(api: httpx.Client, project: str) -> None:
    a, b = create_run(api, project)["id"], create_run(api, project)["id"]
    body = {
        "batches": [
            {"run_id": a, "batch_id": "b-a", "metrics": [{"key": "x", "value": 1.0}]},
            {"run_id": b, "batch_id": "b-b", "metrics": [{"key": "x", "value": 2.0, "step": 1}]},
        ]
    }

    first = api.post(f"{API}/metrics/batches", json=body)
    second = api.post(f"{API}/metrics/batches", json=body)

    assert [(o["ok"], o["stored"], o["duplicate"]) for o in first.json()] == [
        (True, 1, False),
        (True, 1, False),
    ]
    assert [(o["ok"], o["stored"], o["duplicate"]) for o in second.json()] == [
        (True, 0, True),
        (True, 0, True),
    ]
    assert len(api.get(f"{API}/runs/{a}/metrics/x").json()["values"]) == 1
    assert len(api.get(f"{API}/runs/{b}/metrics/x").json()["values"]) == 1


def test_a_bad_batch_gets_its_own_error_and_the_others_are_stored(
    api: httpx.Client, project: str
) -> None:
    good = create_run(api, project)["id"]
    ended = create_run(api, project)["id"]
    api.post(f"{API}/runs/{ended}/end", json={})
    missing = "f" * 32

    outcomes = api.post(
        f"{API}/metrics/batches",
        json={
            "batches": [
                {"run_id": good, "metrics": [{"key": "x", "value": 1.0}]},
                {"run_id": ended, "metrics": [{"key": "x", "value": 1.0}]},
                {"run_id": missing, "metrics": [{"key": "x", "value": 1.0}]},
            ]
        },
    ).json()

    assert [o["ok"] for o in outcomes] == [True, False, False]
    assert outcomes[1]["error"]["error"] == "ConflictError"
    assert outcomes[1]["error"]["message"] == (
        f"Cannot log metrics to run {ended}: it is finished, not running."
    )
    assert outcomes[2]["error"]["error"] == "NotFoundError"
    assert set(outcomes[2]["error"]) == {"ok", "status", "error", "message", "hint", "details"}
    assert len(api.get(f"{API}/runs/{good}/metrics/x").json()["values"]) == 1
    assert api.get(f"{API}/runs/{ended}/metrics/x").json()["values"] == []


def test_a_batch_id_used_by_another_run_does_not_drop_this_runs_values(
    api: httpx.Client, project: str
) -> None:
    first, second = create_run(api, project)["id"], create_run(api, project)["id"]
    api.post(
        f"{API}/runs/{first}/metrics",
        json={"batch_id": "epoch-1", "metrics": [{"key": "x", "value": 1.0}]},
    )

    response = api.post(
        f"{API}/runs/{second}/metrics",
        json={"batch_id": "epoch-1", "metrics": [{"key": "x", "value": 2.0}]},
    )

    # Either stored for this run, or refused loudly; never "duplicate" with nothing stored.
    if response.status_code == 200:
        assert response.json() == {"stored": 1, "duplicate": False}
        assert [v["value"] for v in api.get(f"{API}/runs/{second}/metrics/x").json()["values"]] == [
            2.0
        ]
    else:
        assert_error(response, 409, "ConflictError")


def _runs_for_search(api: httpx.Client, project: str) -> dict[str, str]:
    ids = {}
    for name, auc, algorithm, exp in [
        ("a", 0.70, "gbm", "e1"),
        ("b", 0.92, "gbm", "e1"),
        ("c", 0.85, "lr", "e2"),
        ("d", None, "gbm", "e2"),
    ]:
        run = create_run(api, project, name=name, experiment=exp, params={"algorithm": algorithm})
        if auc is not None:
            api.post(
                f"{API}/runs/{run['id']}/metrics", json={"metrics": [{"key": "auc", "value": auc}]}
            )
        ids[name] = run["id"]
    api.post(f"{API}/runs/{ids['c']}/end", json={"status": "failed"})
    return ids


def test_search_with_get_and_post_agree(api: httpx.Client, project: str) -> None:
    _runs_for_search(api, project)
    query = {"filter": "metrics.auc > 0.8", "order_by": ["metrics.auc DESC"]}

    by_get = api.get(f"{API}/projects/{project}/runs", params=query).json()["runs"]
    by_post = api.post(f"{API}/projects/{project}/runs/search", json=query).json()["runs"]

    assert [r["name"] for r in by_get] == ["b", "c"]
    assert by_post == by_get


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"filter": "params.algorithm = 'gbm'", "order_by": ["attributes.name"]}, ["a", "b", "d"]),
        ({"filter": "params.algorithm = 'gbm' and metrics.auc < 0.9"}, ["a"]),
        ({"filter": "attributes.status = 'failed'"}, ["c"]),
        ({"order_by": ["metrics.auc ASC"]}, ["a", "c", "b", "d"]),  # runs without the metric last
        ({"experiments": ["e2"], "order_by": ["attributes.name DESC"]}, ["d", "c"]),
        ({"order_by": ["attributes.name"], "max_results": 2, "offset": 1}, ["b", "c"]),
    ],
)
def test_search_filters_orders_and_pages(
    api: httpx.Client, project: str, query: dict[str, Any], expected: list[str]
) -> None:
    _runs_for_search(api, project)

    found = api.post(f"{API}/projects/{project}/runs/search", json=query).json()["runs"]

    assert [r["name"] for r in found] == expected


def test_search_by_get_takes_repeated_experiment_and_order_parameters(
    api: httpx.Client, project: str
) -> None:
    _runs_for_search(api, project)

    found = api.get(
        f"{API}/projects/{project}/runs",
        params=[
            ("experiment", "e1"),
            ("experiment", "e2"),
            ("order_by", "params.algorithm DESC"),
            ("order_by", "attributes.name"),
        ],
    ).json()["runs"]

    assert [r["name"] for r in found] == ["c", "a", "b", "d"]


def test_an_artifact_uploads_and_downloads_byte_for_byte(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    data = os.urandom(3 * 1024 * 1024 + 17)  # larger than one read chunk
    digest = hashlib.sha256(data).hexdigest()

    stored = upload(api, run_id, "model/weights.bin", data)
    downloaded = api.get(f"{API}/runs/{run_id}/artifacts/model/weights.bin")

    assert stored.status_code == 201
    assert stored.json()["digest"] == digest
    assert stored.json()["size"] == len(data)
    assert downloaded.status_code == 200
    assert downloaded.content == data
    assert downloaded.headers["etag"] == f'"sha256:{digest}"'
    assert downloaded.headers["x-content-sha256"] == digest
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert int(downloaded.headers["content-length"]) == len(data)


def test_artifacts_are_listed_by_prefix(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    for path in ["model/a.bin", "model/sub/b.bin", "modelx/c.bin", "report.html"]:
        assert upload(api, run_id, path, path.encode()).status_code == 201

    everything = api.get(f"{API}/runs/{run_id}/artifacts").json()
    model = api.get(f"{API}/runs/{run_id}/artifacts", params={"prefix": "model/"}).json()

    assert [a["path"] for a in everything] == [
        "model/a.bin",
        "model/sub/b.bin",
        "modelx/c.bin",
        "report.html",
    ]
    assert [a["path"] for a in model] == ["model/a.bin", "model/sub/b.bin"]
    assert {a["owner_id"] for a in everything} == {run_id}


def test_an_artifact_path_with_spaces_and_unicode_round_trips(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]

    stored = upload(api, run_id, "reports/Übersicht 2024.txt", b"ok")
    listed = api.get(f"{API}/runs/{run_id}/artifacts").json()

    assert stored.status_code == 201
    assert [a["path"] for a in listed] == ["reports/Übersicht 2024.txt"]
    assert api.get(f"{API}/runs/{run_id}/artifacts/reports/Übersicht 2024.txt").content == b"ok"


def test_the_same_artifact_twice_is_fine_different_content_is_a_conflict(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]
    first = upload(api, run_id, "model/model.bin", b"v1")

    again = upload(api, run_id, "model/model.bin", b"v1")
    changed = upload(api, run_id, "model/model.bin", b"v2")

    assert again.status_code == 201
    assert again.json() == first.json()
    assert_error(
        changed,
        409,
        "ConflictError",
        f"Artifact 'model/model.bin' of run {run_id} already exists with different "
        "content; artifacts are never overwritten.",
    )
    assert api.get(f"{API}/runs/{run_id}/artifacts/model/model.bin").content == b"v1"
    assert _actions(api, run_id).count("run.artifact_logged") == 1


def test_an_empty_artifact_is_stored(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]

    stored = api.put(f"{API}/runs/{run_id}/artifacts/empty.txt", content=b"", headers=OCTET)

    assert stored.status_code == 201
    assert stored.json()["size"] == 0
    assert api.get(f"{API}/runs/{run_id}/artifacts/empty.txt").content == b""


def test_ending_a_run(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]

    ended = api.post(f"{API}/runs/{run_id}/end", json={"status": "failed"})
    again = api.post(f"{API}/runs/{run_id}/end", json={"status": "failed"})

    assert ended.status_code == 200
    assert ended.json()["status"] == "failed"
    assert ended.json()["end_time"] is not None
    assert again.json() == ended.json()  # an idempotent retry
    assert _actions(api, run_id) == ["run.created", "run.failed"]


@pytest.mark.parametrize("status", ["running", "paused"])
def test_a_run_cannot_end_in_a_status_that_is_not_an_end(
    api: httpx.Client, project: str, status: str
) -> None:
    run_id = create_run(api, project)["id"]

    response = api.post(f"{API}/runs/{run_id}/end", json={"status": status})

    assert response.status_code == 422
    assert api.get(f"{API}/runs/{run_id}").json()["status"] == "running"


def test_heartbeat_on_a_running_run_and_not_after_it_ended(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]

    assert api.post(f"{API}/runs/{run_id}/heartbeat").status_code == 204
    api.post(f"{API}/runs/{run_id}/end", json={})
    assert_error(
        api.post(f"{API}/runs/{run_id}/heartbeat"),
        409,
        "ConflictError",
        f"Cannot heartbeat run {run_id}: it is finished, not running.",
    )
    assert_error(api.post(f"{API}/runs/{'e' * 32}/heartbeat"), 404, "NotFoundError")


def test_tags_can_change_after_a_run_ended(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    api.post(f"{API}/runs/{run_id}/end", json={})

    response = api.post(f"{API}/runs/{run_id}/tags", json={"tags": {"reviewed": "yes"}})

    assert response.status_code == 204
    assert api.get(f"{API}/runs/{run_id}").json()["tags"] == {"reviewed": "yes"}


def test_experiments_are_created_listed_and_unique(api: httpx.Client, project: str) -> None:
    created = api.post(
        f"{API}/projects/{project}/experiments",
        json={"name": "ablation", "description": "drop features"},
    )
    duplicate = api.post(f"{API}/projects/{project}/experiments", json={"name": "ablation"})

    assert created.status_code == 201
    assert created.headers["location"] == f"{API}/projects/{project}/experiments/ablation"
    assert created.json()["description"] == "drop features"
    assert_error(
        duplicate,
        409,
        "ConflictError",
        f"Experiment 'ablation' already exists in project '{project}'.",
    )
    assert [e["name"] for e in api.get(f"{API}/projects/{project}/experiments").json()] == [
        "ablation"
    ]


def test_the_location_of_a_new_experiment_resolves(api: httpx.Client, project: str) -> None:
    created = api.post(f"{API}/projects/{project}/experiments", json={"name": "located"})

    fetched = api.get(created.headers["location"])

    assert fetched.status_code == 200
    assert fetched.json() == created.json()


def test_projects_are_created_listed_and_ensured(api: httpx.Client) -> None:
    name = f"p-{os.urandom(4).hex()}"

    created = api.post(f"{API}/projects", json={"name": name, "description": "benefits"})
    ensured = api.put(f"{API}/projects/{name}")

    assert created.status_code == 201
    assert created.headers["location"] == f"{API}/projects/{name}"
    assert ensured.status_code == 200
    assert ensured.json() == created.json()
    assert created.json() in api.get(f"{API}/projects").json()


# Strict, bounded numbers (issue 8) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"key": "a", "value": 1, "timestamp": 18446744073709551615}, "timestamp"),
        ({"key": "a", "value": 1, "step": 2**63}, "step"),
        ({"key": "a", "value": 1, "timestamp": False}, "timestamp"),
        ({"key": "a", "value": 1, "step": True}, "step"),
        ({"key": "a", "value": 1, "step": 1.0}, "step"),
        ({"key": "a", "value": True}, "value"),
        ({"key": "a", "value": "1"}, "value"),
        ({"key": "a", "value": "nan"}, "value"),
    ],
)
def test_metric_numbers_are_strict_and_bounded(
    api: httpx.Client, project: str, value: dict[str, Any], field: str
) -> None:
    run_id = create_run(api, project)["id"]

    response = api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": [value]})

    body = assert_error(response, 422, "InvalidInputError")
    assert body["details"][0]["loc"][-1] == field
    assert api.get(f"{API}/runs/{run_id}/metrics/a").json()["values"] == []


def test_the_largest_step_and_timestamp_a_database_stores_are_accepted(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]
    value = {"key": "a", "value": 2, "step": 2**63 - 1, "timestamp": 2**63 - 1}

    assert api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": [value]}).status_code == 200

    assert api.get(f"{API}/runs/{run_id}/metrics/a").json()["values"] == [{**value, "value": 2.0}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pid_start": False}, "pid_start"),
        ({"pid": True}, "pid"),
        ({"pid": 2**31}, "pid"),
        ({"pid_start": 2**64}, "pid_start"),
        ({"pid": "12"}, "pid"),
    ],
)
def test_run_process_numbers_are_strict(
    api: httpx.Client, project: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(f"{API}/projects/{project}/runs", json=body)

    assert assert_error(response, 422, "InvalidInputError")["details"][0]["loc"][-1] == field


@pytest.mark.parametrize(
    "query",
    [{"offset": False}, {"max_results": True}, {"offset": 2**63}, {"max_results": 1001}],
)
def test_search_numbers_are_strict_and_bounded(
    api: httpx.Client, project: str, query: dict[str, Any]
) -> None:
    response = api.post(f"{API}/projects/{project}/runs/search", json=query)

    assert_error(response, 422, "InvalidInputError")


def test_search_query_parameters_are_bounded(api: httpx.Client, project: str) -> None:
    for params in ({"offset": 2**70}, {"max_results": 3863387852757}, {"offset": -1}):
        response = api.get(f"{API}/projects/{project}/runs", params=params)
        assert_error(response, 422, "InvalidInputError")


def test_an_empty_batch_id_or_run_id_is_a_422(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    values = [{"key": "x", "value": 1}]

    by_run = api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": values, "batch_id": ""})
    batches = api.post(
        f"{API}/metrics/batches", json={"batches": [{"run_id": "", "metrics": values}]}
    )

    assert assert_error(by_run, 422, "InvalidInputError")["details"][0]["loc"][-1] == "batch_id"
    assert assert_error(batches, 422, "InvalidInputError")["details"][0]["loc"][-1] == "run_id"
    assert api.get(f"{API}/runs/{run_id}/metrics/x").json()["values"] == []


# Batch ids name one body ---------------------------------------------------------------------
def test_a_batch_id_reused_with_other_values_is_a_conflict(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    first = {"batch_id": "b-1", "metrics": [{"key": "acc", "value": 0.5, "step": 1}]}
    changed = {"batch_id": "b-1", "metrics": [{"key": "acc", "value": 0.9, "step": 1}]}

    stored = api.post(f"{API}/runs/{run_id}/metrics", json=first)
    conflict = api.post(f"{API}/runs/{run_id}/metrics", json=changed)
    retry = api.post(f"{API}/runs/{run_id}/metrics", json=first)

    assert stored.json() == {"stored": 1, "duplicate": False}
    body = assert_error(conflict, 409, "ConflictError", "'b-1'")
    assert "new batch id" in body["hint"]
    assert retry.json() == {"stored": 0, "duplicate": True}
    history = api.get(f"{API}/runs/{run_id}/metrics/acc").json()["values"]
    assert [v["value"] for v in history] == [0.5]


def test_a_reused_batch_id_in_a_batch_of_batches_is_an_item_level_conflict(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]
    one = {"run_id": run_id, "batch_id": "z", "metrics": [{"key": "x", "value": 1}]}
    other = {"run_id": run_id, "batch_id": "z", "metrics": [{"key": "x", "value": 2}]}

    outcomes = api.post(f"{API}/metrics/batches", json={"batches": [one, other, one]}).json()

    assert [(o["ok"], o["stored"], o["duplicate"]) for o in outcomes] == [
        (True, 1, False),
        (False, 0, False),
        (True, 0, True),
    ]
    assert outcomes[1]["error"]["status"] == 409
    assert [v["value"] for v in api.get(f"{API}/runs/{run_id}/metrics/x").json()["values"]] == [1.0]


# Count limits per request --------------------------------------------------------------------
def test_too_many_params_tags_or_metrics_in_one_request_are_refused_naming_the_limit(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]
    many = {f"k{i}": i for i in range(101)}
    values = [{"key": "x", "value": 1, "step": i} for i in range(10_001)]

    responses = [
        api.post(f"{API}/runs/{run_id}/params", json={"params": many}),
        api.post(f"{API}/runs/{run_id}/tags", json={"tags": many}),
        api.post(f"{API}/projects/{project}/runs", json={"params": many}),
        api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": values}),
        api.post(
            f"{API}/metrics/batches",
            json={"batches": [{"run_id": run_id, "metrics": values[:6000]}] * 2},
        ),
    ]

    for response in responses:
        body = assert_error(response, 422, "InvalidInputError")
        assert (
            "100" in body["message"] or "10,000" in body["message"] or "10000" in body["message"]
        ), body["message"]
    run = api.get(f"{API}/runs/{run_id}").json()
    assert (run["params"], run["tags"], run["metrics"]) == ({}, {}, {})


# Pages ---------------------------------------------------------------------------------------
def test_metric_history_comes_in_pages_with_a_cursor(api: httpx.Client, project: str) -> None:
    run_id = create_run(api, project)["id"]
    values = [{"key": "loss", "value": i / 10, "step": i // 2, "timestamp": i} for i in range(25)]
    assert api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": values}).status_code == 200

    pages, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 10, **({"after": after} if after else {})}
        page = api.get(f"{API}/runs/{run_id}/metrics/loss", params=params).json()
        pages.append(page["values"])
        after = page["next_cursor"]
        if after is None:
            break

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [v["value"] for p in pages for v in p] == [i / 10 for i in range(25)]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 10_001}, {"after": "x"}, {"after": "9999999999999999999.1.1"}],
)
def test_a_bad_history_page_request_is_a_422(
    api: httpx.Client, project: str, params: dict[str, Any]
) -> None:
    run_id = create_run(api, project)["id"]

    response = api.get(f"{API}/runs/{run_id}/metrics/loss", params=params)

    assert_error(response, 422, "InvalidInputError")


def test_runs_come_in_pages_with_a_next_offset(api: httpx.Client, project: str) -> None:
    for name in "abc":
        create_run(api, project, name=name)

    first = api.get(f"{API}/projects/{project}/runs", params={"max_results": 2}).json()
    second = api.get(
        f"{API}/projects/{project}/runs", params={"max_results": 2, "offset": first["next_offset"]}
    ).json()

    assert (len(first["runs"]), first["next_offset"]) == (2, 2)
    assert (len(second["runs"]), second["next_offset"]) == (1, None)
    assert sorted(r["name"] for r in first["runs"] + second["runs"]) == ["a", "b", "c"]


# Search hints and bounds ---------------------------------------------------------------------
def test_an_unknown_metric_in_a_filter_is_named_with_the_keys_that_exist(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project, params={"algorithm": "gbm"})["id"]
    api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": [{"key": "val_roc_auc", "value": 1}]})

    found = api.post(
        f"{API}/projects/{project}/runs/search",
        json={"filter": "metrics.val_auc > 0.85", "order_by": ["params.algo DESC"]},
    ).json()
    known = api.get(
        f"{API}/projects/{project}/runs",
        params={"filter": "metrics.val_roc_auc > 0.85", "order_by": "params.algorithm"},
    ).json()

    assert found["runs"] == []
    assert len(found["warnings"]) == 2
    assert "metric 'val_auc'" in found["warnings"][0]
    assert "Did you mean 'val_roc_auc'?" in found["warnings"][0]
    assert "parameter 'algo'" in found["warnings"][1] and "algorithm" in found["warnings"][1]
    assert [r["id"] for r in known["runs"]] == [run_id]
    assert known["warnings"] == []


def test_a_filter_past_the_limits_is_a_400_naming_them(api: httpx.Client, project: str) -> None:
    many = " and ".join(f"metrics.m{i} > 0" for i in range(10_000))
    clauses = " and ".join(f"metrics.m{i} > 0" for i in range(101))

    too_long = api.post(f"{API}/projects/{project}/runs/search", json={"filter": many})
    too_many = api.post(f"{API}/projects/{project}/runs/search", json={"filter": clauses})
    orders = api.post(
        f"{API}/projects/{project}/runs/search",
        json={"order_by": [f"metrics.m{i}" for i in range(11)]},
    )

    assert "10,000 characters" in assert_error(too_long, 400, "BadRequestError")["hint"]
    assert "100 clauses" in assert_error(too_many, 400, "BadRequestError")["hint"]
    assert "10 keys" in assert_error(orders, 400, "BadRequestError")["hint"]


def test_experiments_come_in_bounded_pages(api: httpx.Client, project: str) -> None:
    for name in ("a", "b", "c"):
        api.post(f"{API}/projects/{project}/experiments", json={"name": name})
    path = f"{API}/projects/{project}/experiments"

    page = api.get(path, params={"max_results": 2, "offset": 1}).json()
    too_many = api.get(path, params={"max_results": 1001})

    assert [e["name"] for e in page] == ["b", "c"]
    assert_error(too_many, 422, "InvalidInputError")


# The batches lane (routers/tracking.py BatchesLane) answers as the route would ---------------
BATCHES = f"{API}/metrics/batches"


@pytest.mark.parametrize(
    ("content", "status", "error", "message"),
    [
        (b"", 422, "InvalidInputError", "Invalid input at body: Field required."),
        (b"{not json", 400, "BadRequestError", "not valid JSON"),
        (b'{"batches": [], "batches": []}', 400, "BadRequestError", "'batches' twice"),
        (b'{"batches": "\xff"}', 400, "BadRequestError", "not UTF-8"),
        (b"[" * 100 + b"]" * 100, 400, "BadRequestError", "64 levels"),
        (b"[]", 422, "InvalidInputError", "Invalid input at body:"),
        (b'{"batches": [{"run_id": "r", "metricz": []}]}', 422, "InvalidInputError", "metricz"),
        (b'{"batches": "all"}', 422, "InvalidInputError", "body.batches"),
    ],
    ids=["empty", "not-json", "duplicate-key", "not-utf8", "too-deep", "a-list", "extra", "type"],
)
def test_a_bad_batches_body_gets_the_one_error_body(
    api: httpx.Client, content: bytes, status: int, error: str, message: str
) -> None:
    response = api.post(BATCHES, content=content, headers={"content-type": "application/json"})

    body = assert_error(response, status, error, message)
    assert response.headers["x-content-type-options"] == "nosniff"  # the guard's headers
    if status == 422:
        assert body["details"] and body["details"][0]["loc"][0] == "body"
        assert body["hint"] == "Check the request against /openapi.json."


def test_the_batches_lane_answers_a_validation_error_as_fastapi_answers_the_route(
    api: httpx.Client, project: str
) -> None:
    # POST /runs/{id}/metrics is an ordinary FastAPI route with the same metric model.
    run_id = create_run(api, project)["id"]
    bad = [{"key": "x", "value": "high", "step": 1}]

    by_route = api.post(f"{API}/runs/{run_id}/metrics", json={"metrics": bad})
    by_lane = api.post(BATCHES, json={"batches": [{"run_id": run_id, "metrics": bad}]})

    route_body = assert_error(by_route, 422, "InvalidInputError")
    lane_body = assert_error(by_lane, 422, "InvalidInputError")
    assert route_body["details"][0]["loc"] == ["body", "metrics", "0", "value"]
    assert lane_body["details"][0]["loc"] == ["body", "batches", "0", "metrics", "0", "value"]
    assert [d["type"] for d in lane_body["details"]] == [d["type"] for d in route_body["details"]]
    assert [d["msg"] for d in lane_body["details"]] == [d["msg"] for d in route_body["details"]]


def test_the_batches_lane_keeps_the_guard_and_the_method_rules(
    api: httpx.Client, server: Server
) -> None:
    too_big = b'{"batches": [], "pad": "' + b"x" * server.settings.server_max_body_bytes + b'"}'
    as_text = api.post(BATCHES, content=b"{}", headers={"content-type": "text/plain"})
    oversized = api.post(BATCHES, content=too_big, headers={"content-type": "application/json"})
    wrong_method = api.get(BATCHES)

    assert_error(as_text, 415, "UnsupportedMediaTypeError")
    assert_error(oversized, 413, "PayloadTooLargeError")
    assert_error(wrong_method, 405, "MethodNotAllowedError")


def test_the_batches_lane_takes_bare_nan_as_the_metric_routes_do(
    api: httpx.Client, project: str
) -> None:
    run_id = create_run(api, project)["id"]
    content = (
        b'{"batches": [{"run_id": "' + run_id.encode() + b'", "metrics": '
        b'[{"key": "loss", "value": NaN, "step": 0}]}]}'
    )

    outcomes = api.post(BATCHES, content=content, headers={"content-type": "application/json"})

    assert outcomes.status_code == 200, outcomes.text
    assert [(o["ok"], o["stored"]) for o in outcomes.json()] == [(True, 1)]
    assert api.get(f"{API}/runs/{run_id}").json()["metrics"]["loss"] == "NaN"
