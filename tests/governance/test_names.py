"""Entity names are unique and found regardless of letter case, and never hold invisible
characters (``civicml.core.names`` used by every stage), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from civicml.core import ConflictError, InvalidInputError, Principal
from civicml.core.ids import new_id
from civicml.data.service import DatasetService
from civicml.governance import AuditTrail, ProjectService
from civicml.governance._tables import projects
from civicml.registry import RegistryService
from civicml.registry._tables import registered_models
from civicml.store import Context
from civicml.tracking.service import TrackingService

INVISIBLE = ["elig\u200b", "elig\u202e", "elig\u0085", "\ufeffelig", "elig\u2066", "el\u00adig"]


def _register(ctx: Context, name: str) -> int:
    digest = ctx.artifacts.put_bytes(b"model-bytes").digest
    registry = RegistryService(ctx.as_principal(Principal(user="trainer")))
    return registry.register("benefits", name, artifacts={"model.pkl": digest}).version


# Projects ------------------------------------------------------------------------------------
def test_project_names_are_found_regardless_of_case(any_ctx: Context) -> None:
    service = ProjectService(any_ctx)
    created = service.create("Benefits")

    assert service.get("benefits", "projects.read") == created
    assert (
        service.get("BENEFITS", "projects.read").name == "Benefits"
    )  # display keeps the case given
    assert service.ensure("bEnEfItS", "projects.read") == created
    assert [p.name for p in service.list()] == ["Benefits"]


def test_creating_a_project_in_another_case_names_the_existing_one(any_ctx: Context) -> None:
    service = ProjectService(any_ctx)
    service.create("elig")

    with pytest.raises(
        ConflictError,
        match=re.escape(
            "Project 'ELIG' conflicts with the existing project 'elig': names are unique "
            "regardless of letter case."
        ),
    ) as raised:
        service.create("ELIG")

    assert raised.value.hint == "Use it: civicml projects show elig"
    assert [e.action for e in AuditTrail(any_ctx).list()] == ["project.created"]


def test_the_database_refuses_names_that_differ_only_in_case(any_ctx: Context) -> None:
    """The unique index on lower(name) (migration 0007) holds even without the service."""
    ProjectService(any_ctx).create("elig")
    row = {"id": new_id(), "name": "Elig", "description": "", "created_by": "mallory"}

    with pytest.raises(IntegrityError), any_ctx.db.engine.begin() as conn:
        conn.execute(insert(projects).values(**row, created_at=any_ctx.clock.now()))


# Stage entities --------------------------------------------------------------------------------
def test_models_are_one_regardless_of_case(any_ctx: Context) -> None:
    ProjectService(any_ctx).create("benefits")
    registry = RegistryService(any_ctx)
    registry.create_model("benefits", "elig")

    with pytest.raises(
        ConflictError,
        match=re.escape(
            "Model 'ELIG' conflicts with the existing model 'elig' in project 'benefits': names "
            "are unique regardless of letter case."
        ),
    ):
        registry.create_model("benefits", "ELIG")
    versions = [_register(any_ctx, "Elig"), _register(any_ctx, "ELIG")]

    assert versions == [1, 2]  # both registered as versions of 'elig'
    assert [m.name for m in registry.list_models("BENEFITS")] == ["elig"]
    assert registry.get_model("Benefits", "eLiG").name == "elig"
    with pytest.raises(IntegrityError), any_ctx.db.engine.begin() as conn:
        conn.execute(
            insert(registered_models).values(
                id=new_id(),
                project_id=ProjectService(any_ctx).get("benefits", "projects.read").id,
                name="Elig",
                created_at=any_ctx.clock.now(),
                created_by="mallory",
            )
        )


def test_aliases_are_one_regardless_of_case(ctx: Context) -> None:
    ProjectService(ctx).create("benefits")
    _register(ctx, "elig")
    _register(ctx, "elig")
    registry = RegistryService(ctx)
    registry.set_alias("benefits", "elig", "Champion", 1)

    moved = registry.set_alias("benefits", "elig", "CHAMPION", 2)  # moves it, keeps its case

    assert moved.version == 2
    assert registry.get_model("benefits", "elig").aliases == {"Champion": 2}
    assert registry.get_version("benefits", "elig", "champion").version == 2
    registry.delete_alias("benefits", "elig", "champion")
    assert registry.get_model("benefits", "elig").aliases == {}


def test_experiments_are_one_regardless_of_case(any_ctx: Context) -> None:
    tracking = TrackingService(any_ctx)
    ProjectService(any_ctx).create("benefits")
    tracking.create_experiment("benefits", "Baseline")

    with pytest.raises(ConflictError, match="existing experiment 'Baseline'"):
        tracking.create_experiment("benefits", "baseline")
    run = tracking.create_run("BENEFITS", experiment="BASELINE")

    assert (run.project, run.experiment) == ("benefits", "Baseline")
    assert [e.name for e in tracking.list_experiments("benefits")] == ["Baseline"]
    assert [r.id for r in tracking.search_runs("Benefits", experiments=["baseline"])] == [run.id]
    assert AuditTrail(any_ctx).list(action="run.created")[0].project == "benefits"


def test_datasets_are_one_regardless_of_case(ctx: Context, tmp_path: Path) -> None:
    ProjectService(ctx).create("benefits")
    data = DatasetService(ctx)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("income,region\n100,north\n")
    second.write_text("income,region\n200,south\n")

    data.ingest("benefits", "Applications", first)
    version = data.ingest("benefits", "APPLICATIONS", second)

    assert (version.name, version.version) == ("Applications", 2)
    assert [d.name for d in data.list_datasets("benefits")] == ["Applications"]


# Invisible characters --------------------------------------------------------------------------
@pytest.mark.parametrize("name", INVISIBLE)
def test_names_with_invisible_characters_are_refused(ctx: Context, name: str) -> None:
    ProjectService(ctx).create("benefits")

    with pytest.raises(InvalidInputError, match=re.escape(f"Project name {name!r} is not valid")):
        ProjectService(ctx).create(name)
    with pytest.raises(InvalidInputError, match=re.escape(f"Model name {name!r} is not valid")):
        RegistryService(ctx).create_model("benefits", name)
    with pytest.raises(InvalidInputError, match="Experiment name"):
        TrackingService(ctx).create_experiment("benefits", name)
    with pytest.raises(InvalidInputError, match="Dataset name"):
        DatasetService(ctx).ingest("benefits", name, b"a\n1\n", format="csv")
