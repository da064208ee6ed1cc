"""Tests of projects (``civicml.governance.projects``)."""

from __future__ import annotations

import re
import threading

import pytest

from civicml.core import ConflictError, FrozenClock, InvalidInputError, NotFoundError
from civicml.governance import AuditTrail, LineageService, Project, ProjectService
from civicml.store import Context

INVALID_NAMES = ["", "../x", "has space", "a" * 200, "a" * 129, "-lead", ".hidden", "x/y", "é"]


def _actions(ctx: Context) -> list[tuple[str, str | None]]:
    return [(e.action, e.project) for e in AuditTrail(ctx).list(limit=10_000)]


def test_create_get_and_list(any_ctx: Context, clock: FrozenClock) -> None:
    service = ProjectService(any_ctx)

    created = service.create("benefits", description="Eligibility models")
    service.create("alpha")

    assert isinstance(created, Project)
    assert (created.name, created.description, created.created_by) == (
        "benefits",
        "Eligibility models",
        "alice",
    )
    assert created.created_at == clock.now()
    assert service.get("benefits", "projects.read") == created
    assert [p.name for p in service.list()] == ["alpha", "benefits"]
    assert _actions(any_ctx) == [("project.created", "benefits"), ("project.created", "alpha")]
    event = AuditTrail(any_ctx).list()[0]
    assert (event.entity_kind, event.entity_id, event.actor) == ("project", created.id, "alice")
    assert event.after == {"name": "benefits", "description": "Eligibility models"}
    assert LineageService(any_ctx).get_node("project", created.id).name == "benefits"


def test_list_is_empty_at_first(ctx: Context) -> None:
    assert ProjectService(ctx).list() == []


def test_a_128_character_name_is_accepted(ctx: Context) -> None:
    name = "a" * 128

    assert ProjectService(ctx).create(name).name == name


def test_duplicate_is_a_conflict_and_records_nothing(ctx: Context) -> None:
    service = ProjectService(ctx)
    service.create("benefits")

    with pytest.raises(
        ConflictError, match=re.escape("Project 'benefits' already exists.")
    ) as raised:
        service.create("benefits", description="again")

    assert raised.value.hint == "Use it: civicml projects show benefits"
    assert service.get("benefits", "projects.read").description == ""
    assert _actions(ctx) == [("project.created", "benefits")]


def test_ensure_creates_once(ctx: Context) -> None:
    service = ProjectService(ctx)

    first = service.ensure("benefits", "projects.read")
    again = service.ensure("benefits", "projects.read")

    assert first == again
    assert service.list() == [first]
    assert _actions(ctx) == [("project.created", "benefits")]


def test_ensure_returns_a_project_made_by_create(ctx: Context) -> None:
    service = ProjectService(ctx)
    created = service.create("benefits", description="made first")

    assert service.ensure("benefits", "projects.read") == created


def test_concurrent_ensure_of_one_name_creates_it_once(ctx: Context) -> None:
    results: list[Project] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def ensure() -> None:
        try:
            start.wait()
            results.append(ProjectService(ctx).ensure("shared", "projects.read"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=ensure) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({p.id for p in results}) == 1
    assert _actions(ctx) == [("project.created", "shared")]


@pytest.mark.parametrize("name", INVALID_NAMES, ids=repr)
@pytest.mark.parametrize("method", ["create", "ensure"])
def test_invalid_names_are_rejected(ctx: Context, method: str, name: str) -> None:
    with pytest.raises(
        InvalidInputError, match=re.escape(f"Project name {name!r} is not valid.")
    ) as raised:
        service = ProjectService(ctx)
        if method == "create":
            service.create(name)
        else:
            service.ensure(name, "projects.read")

    assert raised.value.hint is not None
    assert "letters, digits" in raised.value.hint
    assert ProjectService(ctx).list() == []
    assert _actions(ctx) == []


def test_not_found_suggests_a_close_name(ctx: Context) -> None:
    service = ProjectService(ctx)
    service.create("benefits")
    service.create("housing")

    with pytest.raises(
        NotFoundError, match=re.escape("Project 'benefit' does not exist.")
    ) as raised:
        service.get("benefit", "projects.read")

    assert raised.value.hint == "Did you mean 'benefits'?"


def test_not_found_without_a_close_name_suggests_creating_it(ctx: Context) -> None:
    ProjectService(ctx).create("benefits")

    with pytest.raises(
        NotFoundError, match=re.escape("Project 'zoning' does not exist.")
    ) as raised:
        ProjectService(ctx).get("zoning", "projects.read")

    assert raised.value.hint == "Create it: civicml projects create zoning"


def test_not_found_on_postgres(pg_ctx: Context) -> None:
    ProjectService(pg_ctx).create("benefits")

    with pytest.raises(
        NotFoundError, match=re.escape("Project 'benefitz' does not exist.")
    ) as raised:
        ProjectService(pg_ctx).get("benefitz", "projects.read")

    assert raised.value.hint == "Did you mean 'benefits'?"
