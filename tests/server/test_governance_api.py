"""Lineage and the audit trail over REST (server/routers/governance.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicml.core import FrozenClock, Principal
from civicml.governance import ProjectService
from civicml.governance.audit import verify_export
from civicml.server import create_app
from tests.conftest import make_context
from tests.governance.helpers import corrupt_audit_table, populate
from tests.server.helpers import (
    API,
    Server,
    assert_error,
    create_run,
    isolated_settings,
    model_run,
    register,
    serve,
)


@pytest.fixture
def produced(api: httpx.Client, project: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished run and the model version registered from it."""
    run = model_run(api, project)
    return run, register(api, project, "eligibility", run["id"])


def test_lineage_downstream_of_a_run_reaches_its_model_version(
    api: httpx.Client, produced: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    run, mv = produced

    graph = api.get(f"{API}/lineage/run/{run['id']}", params={"direction": "downstream"}).json()

    assert graph["direction"] == "downstream"
    assert (graph["root"]["kind"], graph["root"]["ref"]) == ("run", run["id"])
    by_id = {n["id"]: n for n in graph["nodes"]}
    assert sorted((n["kind"], n["ref"]) for n in graph["nodes"]) == [
        ("model_version", mv["id"]),
        ("run", run["id"]),
    ]
    [edge] = graph["edges"]
    assert edge["kind"] == "Produced"
    assert (by_id[edge["src"]]["kind"], by_id[edge["dst"]]["kind"]) == ("run", "model_version")
    assert by_id[edge["dst"]]["name"] == "eligibility v1"


def test_lineage_upstream_of_a_model_version_reaches_its_run(
    api: httpx.Client, produced: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    run, mv = produced

    graph = api.get(
        f"{API}/lineage/model_version/{mv['id']}", params={"direction": "upstream"}
    ).json()
    nothing_below = api.get(
        f"{API}/lineage/model_version/{mv['id']}", params={"direction": "downstream"}
    ).json()

    assert [(n["kind"], n["ref"]) for n in graph["nodes"]] == [
        ("model_version", mv["id"]),
        ("run", run["id"]),
    ]
    assert [e["kind"] for e in graph["edges"]] == ["Produced"]
    assert [n["kind"] for n in nothing_below["nodes"]] == ["model_version"]
    assert nothing_below["edges"] == []


def test_a_deleted_version_stays_in_lineage_marked_deleted(
    api: httpx.Client, project: str, produced: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    run, mv = produced
    assert api.delete(f"{API}/projects/{project}/models/eligibility/versions/1").status_code == 204

    graph = api.get(f"{API}/lineage/run/{run['id']}", params={"direction": "downstream"}).json()

    [node] = [n for n in graph["nodes"] if n["kind"] == "model_version"]
    assert node["ref"] == mv["id"]
    assert node["deleted"] is True


@pytest.mark.parametrize(
    "params,status,message",
    [
        ({"direction": "sideways"}, 422, "Invalid input at query.direction"),
        ({"max_depth": 0}, 422, "max_depth 0 is out of range."),
        ({"max_depth": "deep"}, 422, "Invalid input at query.max_depth"),
    ],
)
def test_bad_lineage_queries_are_refused(
    api: httpx.Client,
    produced: tuple[dict[str, Any], dict[str, Any]],
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = api.get(f"{API}/lineage/run/{produced[0]['id']}", params=params)

    assert_error(response, status, "InvalidInputError", message)


def test_lineage_of_an_unknown_entity_is_404(api: httpx.Client) -> None:
    response = api.get(f"{API}/lineage/run/{'0' * 32}")

    assert_error(response, 404, "NotFoundError", f"No lineage is recorded for run '{'0' * 32}'.")


def test_audit_events_filter_by_project_entity_action_and_position(
    api: httpx.Client, project: str
) -> None:
    run = create_run(api, project, params={"lr": 0.1})
    api.post(
        f"{API}/runs/{run['id']}/tags",
        json={"tags": {"t": "1"}},
        headers={"x-civicml-user": "auditor-bob"},
    )
    api.post(f"{API}/runs/{run['id']}/end", json={})

    in_project = api.get(f"{API}/audit/events", params={"project": project}).json()
    for_run = api.get(
        f"{API}/audit/events", params={"entity_kind": "run", "entity_id": run["id"]}
    ).json()
    tags = api.get(
        f"{API}/audit/events", params={"project": project, "action": "run.tags_set"}
    ).json()
    after = api.get(
        f"{API}/audit/events", params={"project": project, "after_seq": for_run[0]["seq"]}
    ).json()
    first_two = api.get(f"{API}/audit/events", params={"project": project, "limit": 2}).json()

    assert [e["action"] for e in in_project] == [
        "project.created",
        "experiment.created",
        "run.created",
        "run.tags_set",
        "run.finished",
    ]
    assert {e["project"] for e in in_project} == {project}
    assert [e["action"] for e in for_run] == ["run.created", "run.tags_set", "run.finished"]
    assert [(e["actor"], e["after"]) for e in tags] == [("auditor-bob", {"tags": {"t": "1"}})]
    assert [e["action"] for e in after] == ["run.tags_set", "run.finished"]
    assert first_two == in_project[:2]
    seqs = [e["seq"] for e in in_project]
    assert seqs == sorted(seqs)
    assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64 for e in in_project)
    assert for_run[0]["after"]["params"] == {"lr": "0.1"}


def test_audit_verify_is_ok_and_counts_every_event(
    api: httpx.Client, produced: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    report = api.get(f"{API}/audit/verify").json()
    everything = api.get(f"{API}/audit/events", params={"limit": 10_000}).json()

    assert report["ok"] is True
    assert report["problems"] == []
    assert report["events_checked"] == len(everything)
    assert (report["head_seq"], report["head_hash"]) == (
        everything[-1]["seq"],
        everything[-1]["hash"],
    )
    assert report["witness"]["seq"] == everything[-1]["seq"]


def test_audit_export_is_jsonl_with_every_event_and_a_signed_head(
    api: httpx.Client, produced: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    response = api.get(f"{API}/audit/export")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "civicml-audit.jsonl" in response.headers["content-disposition"]
    records = [json.loads(line) for line in response.text.splitlines()]
    assert records[0]["type"] == "header"
    assert records[0]["format"] == "civicml-audit/2"
    events = [r for r in records if r["type"] == "event"]
    listed = api.get(f"{API}/audit/events", params={"limit": 10_000}).json()
    assert [(e["seq"], e["hash"]) for e in events] == [(e["seq"], e["hash"]) for e in listed]
    assert records[-1]["type"] == "signed_head"
    assert records[-1]["seq"] == listed[-1]["seq"]
    assert records[-1]["public_key"] == records[0]["public_key"]
    exported = tmp_path / "audit.jsonl"
    exported.write_bytes(response.content)
    assert verify_export(exported).ok


# Names (issue 8: invisible actors, names that differ only in case) ------------------------------
@pytest.mark.parametrize("user", ["alice\u202e", "al\u200bice", "alice\u0085", "\ufeffalice"])
def test_an_invisible_user_in_the_header_is_refused_and_nothing_is_written(
    api: httpx.Client, user: str
) -> None:
    before = api.get(f"{API}/audit/events", params={"limit": 10_000}).json()

    response = api.post(
        f"{API}/projects",
        json={"name": "invisible-actor"},
        headers={"x-civicml-user": user.encode()},  # UTF-8, as the SDK sends it
    )

    body = assert_error(response, 422, "InvalidInputError", "The X-CivicML-User header ")
    assert "contains characters that do not show" in body["message"]
    assert "zero-width" in body["hint"]
    assert api.get(f"{API}/audit/events", params={"limit": 10_000}).json() == before


def test_a_header_user_gets_the_roles_of_the_server_it_calls(tmp_path: Path) -> None:
    # Resolved principals are kept per header text (server/deps.py); a second server in the
    # same process with another roles setting must not get the first one's answer.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    viewer = isolated_settings(tmp_path / "a", roles={"vic": ["viewer"]})
    plain = isolated_settings(tmp_path / "b")
    headers = {"x-civicml-user": "vic"}
    with serve(create_app(viewer)) as first, serve(create_app(plain)) as second:
        for _ in range(2):  # the second request is answered from the kept principal
            a = httpx.get(f"{first}{API}/whoami", headers=headers).json()
            b = httpx.get(f"{second}{API}/whoami", headers=headers).json()
            assert (a["user"], a["roles"]) == ("vic", ["viewer"])
            assert b["user"] == "vic" and b["roles"] != ["viewer"]
        refused = httpx.post(f"{first}{API}/projects", json={"name": "v"}, headers=headers)
        assert refused.status_code == 403
        assert httpx.post(f"{second}{API}/projects", json={"name": "v"}, headers=headers).is_success


def test_a_utf8_user_name_is_recorded_as_sent(api: httpx.Client, project: str) -> None:
    api.post(
        f"{API}/projects/{project}/models",
        json={"name": "by-jose"},
        headers={"x-civicml-user": "José Núñez".encode()},
    )

    [event] = api.get(
        f"{API}/audit/events", params={"project": project, "action": "registered_model.created"}
    ).json()
    assert event["actor"] == "José Núñez"


def test_a_model_named_in_another_case_is_the_existing_one(api: httpx.Client, project: str) -> None:
    assert api.post(f"{API}/projects/{project}/models", json={"name": "elig"}).status_code == 201

    again = api.post(f"{API}/projects/{project}/models", json={"name": "ELIG"})
    found = api.get(f"{API}/projects/{project.upper()}/models/Elig")

    body = assert_error(
        again, 409, "ConflictError", "Model 'ELIG' conflicts with the existing model 'elig'"
    )
    assert "civicml models register elig" in body["hint"]
    assert found.status_code == 200
    assert found.json()["name"] == "elig"
    assert [m["name"] for m in api.get(f"{API}/projects/{project}/models").json()] == ["elig"]


def test_a_project_named_in_another_case_is_a_conflict(api: httpx.Client, project: str) -> None:
    response = api.post(f"{API}/projects", json={"name": project.upper()})

    assert_error(
        response,
        409,
        "ConflictError",
        f"Project {project.upper()!r} conflicts with the existing project {project!r}",
    )
    assert api.put(f"{API}/projects/{project.upper()}").json()["name"] == project


# Audit faults (issue 8) --------------------------------------------------------------------------
def test_audit_verify_returns_warnings_for_a_clock_that_went_backwards(
    api: httpx.Client, server: Server, project: str
) -> None:
    """A second writer on the server's database whose clock is years behind."""
    behind = make_context(
        server.settings, Principal(user="skewed"), FrozenClock(datetime(2001, 1, 1, tzinfo=UTC))
    )
    ProjectService(behind).create(f"{project}-late")
    behind.db.close()
    [late] = api.get(f"{API}/audit/events", params={"project": f"{project}-late"}).json()

    report = api.get(f"{API}/audit/verify").json()

    assert (report["ok"], report["verdict"]) == (True, "verified")
    assert [(w["kind"], w["seq"], w["event_id"]) for w in report["warnings"]] == [
        ("clock_went_backwards", late["seq"], late["id"])
    ]
    assert "is timestamped 2001-01-01T00:00:00.000000+00:00" in report["warnings"][0]["message"]


def test_a_damaged_audit_table_is_a_503_with_a_hint_not_a_500(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    writer = make_context(settings, Principal(user="alice"), FrozenClock())
    populate(writer)
    writer.db.close()
    corrupt_audit_table(settings.home / "civicml.db")

    with serve(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        health = client.get(f"{API}/health")
        verify = client.get(f"{API}/audit/verify")
        events = client.get(f"{API}/audit/events")
        projects = client.get(f"{API}/projects")

    assert health.status_code == 200  # the server starts and serves what is intact
    body = assert_error(
        verify,
        503,
        "ServiceUnavailableError",
        "The audit trail could not be verified: the metadata database is damaged (SQLite: "
        "database disk image is malformed). Verification fails until it is repaired.",
    )
    assert "restore the database from a backup" in body["hint"]
    assert verify.headers["retry-after"] == "60"
    assert str(tmp_path) not in verify.text
    assert_error(events, 503, "ServiceUnavailableError", "could not be listed")
    assert [p["name"] for p in projects.json()] == ["p1", "p2", "p3"]


def test_the_remote_sdk_sends_a_non_ascii_user_and_finds_projects_in_any_case(
    server: Server, project: str
) -> None:
    import civicml as cm

    with cm.connect(server.url, user="Zoë", settings=server.settings) as ml:
        handle = ml.project(project.upper())  # the existing project, not a new one
        upper = ml.audit_events(project=project.upper())
        lower = ml.audit_events(project=project)
        ml.create_project(f"{project}-zoe")
        [created] = ml.audit_events(project=f"{project}-zoe")

    assert handle.name == project
    assert [e.action for e in upper] == ["project.created"]
    assert upper == lower
    assert created.actor == "Zoë"
