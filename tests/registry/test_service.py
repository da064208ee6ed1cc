"""Tests of the model registry service (``civicml.registry.service``)."""

from __future__ import annotations

import importlib
import math
import re
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

import civicml.registry
from civicml.core import (
    ConflictError,
    FrozenClock,
    InvalidInputError,
    NotFoundError,
    Principal,
)
from civicml.governance import AuditTrail, LineageService, ProjectService
from civicml.registry import ApprovalStatus, ColumnSpec, ModelVersion, RegistryService
from civicml.store import Context, MetadataStore
from civicml.tracking.schemas import MetricValue
from civicml.tracking.service import TrackingService

PROJECT = "benefits"
MODEL = "eligibility"


# Helpers --------------------------------------------------------------------------------------
@pytest.fixture
def project(ctx: Context) -> str:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return PROJECT


def _setup(context: Context) -> RegistryService:
    ProjectService(context).ensure(PROJECT, "projects.read")
    return RegistryService(context)


def _stored(context: Context, data: bytes = b"model-bytes") -> str:
    return context.artifacts.put_bytes(data).digest


def _register(context: Context, name: str = MODEL, data: bytes = b"model-bytes") -> ModelVersion:
    """Register as 'trainer': separation of duties lets the tests' principal approve it."""
    return RegistryService(context.as_principal(Principal(user="trainer"))).register(
        PROJECT, name, artifacts={"model.pkl": _stored(context, data)}
    )


def _run_with_model(context: Context, project: str = PROJECT) -> str:
    """A run with model files under 'model/', a plot elsewhere and two metrics (one NaN)."""
    tracking = TrackingService(context)
    run = tracking.create_run(project, experiment="baseline")
    tracking.log_artifact(run.id, "model/model.pkl", b"pickled")
    tracking.log_artifact(run.id, "model/conf/params.json", b'{"depth": 3}')
    tracking.log_artifact(run.id, "plots/roc.png", b"png")
    tracking.log_metrics(
        run.id,
        [
            MetricValue(key="auc", value=0.91, step=1, timestamp=1),
            MetricValue(key="loss", value=math.nan, step=1, timestamp=1),
        ],
    )
    return run.id


def _actions(
    context: Context,
    *,
    project: str | None = None,
    entity_kind: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
) -> list[str]:
    events = AuditTrail(context).list(
        project=project, entity_kind=entity_kind, entity_id=entity_id, action=action, limit=10_000
    )
    return [e.action for e in events]


def _audit_ok(context: Context) -> bool:
    return AuditTrail(context).verify().ok


# Public names ---------------------------------------------------------------------------------
def test_every_public_name_is_documented() -> None:
    for name in civicml.registry.__all__:
        obj = getattr(civicml.registry, name)
        assert obj.__doc__, f"civicml.registry.{name} has no docstring"
    assert civicml.registry.__doc__
    for module in ("civicml.registry.schemas", "civicml.registry.service"):
        assert importlib.import_module(module).__doc__


def test_every_schema_field_has_a_description() -> None:
    from civicml.registry import schemas

    for name in ("ApprovalRecord", "ColumnSpec", "ModelVersion", "RegisteredModel"):
        model = getattr(schemas, name)
        for field_name, field in model.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"


# Registered models ----------------------------------------------------------------------------
def test_create_get_and_list_models(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    created = registry.create_model(project, MODEL, description="Who is eligible")
    registry.create_model(project, "churn")

    got = registry.get_model(project, MODEL)
    assert got == created
    assert got.description == "Who is eligible"
    assert got.created_by == "alice"
    assert got.latest_version is None
    assert got.aliases == {}
    assert [m.name for m in registry.list_models(project)] == ["churn", MODEL]
    assert _actions(ctx, entity_kind="registered_model") == ["registered_model.created"] * 2


def test_create_model_twice_conflicts(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    registry.create_model(project, MODEL)
    with pytest.raises(ConflictError, match=re.escape("Model 'eligibility' already exists")):
        registry.create_model(project, MODEL)


def test_model_name_is_validated(ctx: Context, project: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape("Model name 'bad name' is not valid")):
        RegistryService(ctx).create_model(project, "bad name")


def test_missing_model_suggests_close_names(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    registry.create_model(project, MODEL)
    with pytest.raises(NotFoundError, match="Model 'eligibilty' does not exist") as err:
        registry.get_model(project, "eligibilty")
    assert err.value.hint == "Did you mean 'eligibility'?"


def test_missing_project_is_not_found(ctx: Context) -> None:
    with pytest.raises(NotFoundError, match="Project 'nowhere' does not exist"):
        RegistryService(ctx).list_models("nowhere")


# Registering versions -------------------------------------------------------------------------
def test_register_from_artifacts_auto_increments(any_ctx: Context) -> None:
    registry = _setup(any_ctx)
    weights = _stored(any_ctx, b"weights")
    config = _stored(any_ctx, b"config")

    first = registry.register(
        PROJECT,
        MODEL,
        artifacts={"model.pkl": weights, "conf/config.json": f"sha256:{config}"},
        description="first",
    )
    second = registry.register(PROJECT, MODEL, artifacts={"model.pkl": weights})
    third = registry.register(PROJECT, MODEL, artifacts={"model.pkl": weights})

    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert first.approval_status is ApprovalStatus.PENDING
    assert first.approval_by is None
    assert first.created_by == "alice"
    assert first.run_id is None
    assert first.artifact_path == "model"
    assert first.description == "first"
    assert registry.get_manifest(first) == {
        "files": {
            "conf/config.json": {"digest": config, "size": len(b"config")},
            "model.pkl": {"digest": weights, "size": len(b"weights")},
        }
    }
    # Identical file sets share one content-addressed manifest.
    assert second.artifact_digest == third.artifact_digest != first.artifact_digest
    assert registry.get_version(PROJECT, MODEL, 1) == first
    assert registry.get_version(PROJECT, MODEL, "3") == third
    assert registry.get_model(PROJECT, MODEL).latest_version == 3
    assert [v.version for v in registry.list_versions(PROJECT, MODEL)] == [1, 2, 3]
    assert _actions(any_ctx, project=PROJECT) == [
        "project.created",
        "registered_model.created",
        "model_version.registered",
        "model_version.registered",
        "model_version.registered",
    ]
    event = AuditTrail(any_ctx).list(action="model_version.registered", limit=1)[0]
    assert event.entity_id == first.id
    assert event.after is not None
    assert event.after["version"] == 1
    assert event.after["approval_status"] == "PendingManualApproval"
    assert _audit_ok(any_ctx)


def test_register_from_run_uses_its_artifacts_metrics_and_lineage(any_ctx: Context) -> None:
    registry = _setup(any_ctx)
    run_id = _run_with_model(any_ctx)

    mv = registry.register(PROJECT, MODEL, run_id=run_id)

    assert mv.run_id == run_id
    assert mv.artifact_path == "model"
    assert mv.metrics == {"auc": 0.91}  # NaN metrics are skipped
    files = registry.get_manifest(mv)["files"]
    assert sorted(files) == ["conf/params.json", "model.pkl"]
    assert files["model.pkl"]["size"] == len(b"pickled")
    assert any_ctx.artifacts.read_bytes(files["model.pkl"]["digest"]) == b"pickled"

    graph = LineageService(any_ctx).query("run", run_id, direction="downstream")
    version_node = next(n for n in graph.nodes if n.kind == "model_version")
    assert version_node.ref == mv.id
    assert version_node.name == "eligibility v1"
    assert [(e.src, e.dst, e.kind) for e in graph.edges] == [
        (graph.root.id, version_node.id, "Produced")
    ]
    assert _audit_ok(any_ctx)


def test_register_single_file_and_explicit_metrics(ctx: Context, project: str) -> None:
    run_id = _run_with_model(ctx)
    mv = RegistryService(ctx).register(
        project,
        MODEL,
        run_id=run_id,
        artifact_path="model/model.pkl",
        metrics={"f1": 0.8, "auc": 1, "odd": math.nan, "big": math.inf, "none": None},
    )
    assert RegistryService(ctx).get_manifest(mv)["files"].keys() == {"model.pkl"}
    assert mv.metrics == {"f1": 0.8, "auc": 1.0, "odd": None, "big": None, "none": None}


def test_register_run_and_artifacts_links_the_run(ctx: Context, project: str) -> None:
    run_id = _run_with_model(ctx)
    digest = _stored(ctx, b"exported")
    mv = RegistryService(ctx).register(
        project, MODEL, run_id=run_id, artifacts={"model.onnx": digest}
    )
    assert RegistryService(ctx).get_manifest(mv)["files"] == {
        "model.onnx": {"digest": digest, "size": len(b"exported")}
    }
    assert mv.run_id == run_id
    assert mv.metrics == {"auc": 0.91}


def test_register_run_without_files_under_path(ctx: Context, project: str) -> None:
    run_id = _run_with_model(ctx)
    with pytest.raises(NotFoundError, match="has no artifacts under 'models' to register") as err:
        RegistryService(ctx).register(project, MODEL, run_id=run_id, artifact_path="models/")
    assert err.value.hint is not None
    assert "Did you mean 'model'?" in err.value.hint
    assert "'plots'" in err.value.hint
    # Nothing was written: the model was not created and no version number was used.
    with pytest.raises(NotFoundError):
        RegistryService(ctx).get_model(project, MODEL)


def test_register_needs_a_run_or_artifacts(ctx: Context, project: str) -> None:
    with pytest.raises(InvalidInputError, match="needs its files"):
        RegistryService(ctx).register(project, MODEL)


def test_register_unknown_run(ctx: Context, project: str) -> None:
    with pytest.raises(NotFoundError, match=re.escape("Run 'f00' does not exist")):
        RegistryService(ctx).register(project, MODEL, run_id="f00")


def test_register_run_of_another_project(ctx: Context, project: str) -> None:
    ProjectService(ctx).ensure("other", "projects.read")
    run_id = _run_with_model(ctx, project="other")
    with pytest.raises(InvalidInputError, match="belongs to another project, not 'benefits'"):
        RegistryService(ctx).register(project, MODEL, run_id=run_id)


@pytest.mark.parametrize(
    ("artifacts", "error", "message"),
    [
        ({}, InvalidInputError, "artifacts must name at least one file"),
        ({"../model.pkl": "0" * 64}, InvalidInputError, "has an empty, '.' or '..' segment"),
        ({"model.pkl": "abc"}, InvalidInputError, "'abc' of artifact 'model.pkl' is not a SHA-256"),
        ({"model.pkl": "0" * 64}, NotFoundError, "is not in the artifact store"),
    ],
)
def test_register_checks_explicit_artifacts(
    ctx: Context,
    project: str,
    artifacts: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        RegistryService(ctx).register(project, MODEL, artifacts=artifacts)


def test_signature_is_validated_and_kept(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    digest = _stored(ctx)
    mv = registry.register(
        project,
        MODEL,
        artifacts={"model.pkl": digest},
        signature=[
            {"name": "age", "type": "integer", "nullable": False},
            ColumnSpec(name="income", type="double"),
        ],
    )
    assert mv.signature == [
        ColumnSpec(name="age", type="integer", nullable=False),
        ColumnSpec(name="income", type="double", nullable=True),
    ]
    assert registry.get_version(project, MODEL, 1).signature == mv.signature

    with pytest.raises(InvalidInputError, match="column 'age' appears twice") as err:
        registry.register(
            project,
            MODEL,
            artifacts={"model.pkl": digest},
            signature=[{"name": "age", "type": "int"}, {"name": "age", "type": "int"}],
        )
    with pytest.raises(InvalidInputError, match=r"signature\.0\.type: Field required") as err:
        registry.register(
            project, MODEL, artifacts={"model.pkl": digest}, signature=[{"name": "age"}]
        )
    assert err.value.details[0]["loc"] == ["signature", 0, "type"]


def test_metric_values_must_be_numbers(ctx: Context, project: str) -> None:
    with pytest.raises(InvalidInputError, match="Metric 'ok' has the value True"):
        RegistryService(ctx).register(
            project,
            MODEL,
            artifacts={"model.pkl": _stored(ctx)},
            metrics={"ok": True},
        )


# Concurrency ----------------------------------------------------------------------------------
def _race(workers: list[Callable[[], list[int]]]) -> list[int]:
    barrier = threading.Barrier(len(workers))
    results: list[list[int]] = [[] for _ in workers]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = workers[index]()
        except BaseException as err:  # re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return [number for result in results for number in result]


def _registering(context: Context, times: int) -> Callable[[], list[int]]:
    registry = RegistryService(context)
    digest = _stored(context)
    return lambda: [
        registry.register(PROJECT, MODEL, artifacts={"model.pkl": digest}).version
        for _ in range(times)
    ]


def test_concurrent_registration_gives_distinct_versions(any_ctx: Context) -> None:
    _setup(any_ctx)  # the model itself is created by whichever thread comes first
    versions = _race([_registering(any_ctx, 5), _registering(any_ctx, 5)])
    assert sorted(versions) == list(range(1, 11))
    assert RegistryService(any_ctx).get_model(PROJECT, MODEL).latest_version == 10
    assert _actions(any_ctx, action="registered_model.created") == ["registered_model.created"]
    assert _audit_ok(any_ctx)


def test_concurrent_registration_from_two_stores(ctx: Context) -> None:
    """Two MetadataStores on one SQLite file behave like two processes (BEGIN IMMEDIATE)."""
    _setup(ctx)
    other_db = MetadataStore(ctx.settings.database_url)
    try:
        other = Context(
            db=other_db,
            artifacts=ctx.artifacts,
            principal=Principal(user="bob"),
            settings=ctx.settings,
            clock=ctx.clock,
        )
        versions = _race([_registering(ctx, 5), _registering(other, 5)])
    finally:
        other_db.close()
    assert sorted(versions) == list(range(1, 11))
    assert _audit_ok(ctx)


# Approval -------------------------------------------------------------------------------------
def test_approval_transitions_record_who_why_and_when(any_ctx: Context, clock: FrozenClock) -> None:
    registry = _setup(any_ctx)
    mv = _register(any_ctx)
    registered_at = clock.now()

    clock.advance(hours=1)
    approved = registry.approve(PROJECT, MODEL, mv.version, "meets the accuracy policy")
    assert approved.approval_status is ApprovalStatus.APPROVED
    assert approved.approval_by == "alice"
    assert approved.approval_note == "meets the accuracy policy"
    assert approved.approval_at == registered_at + timedelta(hours=1)

    clock.advance(hours=1)
    bob = RegistryService(any_ctx.as_principal(Principal(user="bob")))
    rejected = bob.reject(PROJECT, MODEL, "1", "bias report shows a gap")
    assert (rejected.approval_status, rejected.approval_by) == (ApprovalStatus.REJECTED, "bob")

    clock.advance(hours=1)
    pending = registry.update_approval(PROJECT, MODEL, 1, "PendingManualApproval")
    assert pending.approval_status is ApprovalStatus.PENDING
    assert registry.get_version(PROJECT, MODEL, 1).approval_status is ApprovalStatus.PENDING

    history = registry.approval_history(PROJECT, MODEL, 1)
    assert [(r.from_status, r.to_status, r.by, r.note, r.at.hour) for r in history] == [
        (ApprovalStatus.PENDING, ApprovalStatus.APPROVED, "alice", "meets the accuracy policy", 1),
        (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, "bob", "bias report shows a gap", 2),
        (ApprovalStatus.REJECTED, ApprovalStatus.PENDING, "alice", "", 3),
    ]
    events = AuditTrail(any_ctx).list(action="model_version.approval_changed")
    assert [(e.actor, e.before, e.after) for e in events] == [
        (
            "alice",
            {"name": MODEL, "version": 1, "approval_status": "PendingManualApproval"},
            {
                "name": MODEL,
                "version": 1,
                "approval_status": "Approved",
                "note": "meets the accuracy policy",
                # an approval binds the files it approved (issue 9)
                "evidence": {"manifest_digest": mv.artifact_digest},
            },
        ),
        (
            "bob",
            {"name": MODEL, "version": 1, "approval_status": "Approved"},
            {
                "name": MODEL,
                "version": 1,
                "approval_status": "Rejected",
                "note": "bias report shows a gap",
            },
        ),
        (
            "alice",
            {"name": MODEL, "version": 1, "approval_status": "Rejected"},
            {"name": MODEL, "version": 1, "approval_status": "PendingManualApproval", "note": ""},
        ),
    ]
    assert {e.entity_id for e in events} == {mv.id}
    assert _audit_ok(any_ctx)


def test_history_keeps_order_within_one_instant(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    for _ in range(5):
        registry.approve(project, MODEL, 1, "ok")
        registry.reject(project, MODEL, 1, "not ok")
    statuses = [r.to_status for r in registry.approval_history(project, MODEL, 1)]
    assert statuses == [ApprovalStatus.APPROVED, ApprovalStatus.REJECTED] * 5


def test_same_status_again_conflicts(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    registry.approve(project, MODEL, 1, "ok")
    with pytest.raises(
        ConflictError, match=re.escape("Model version eligibility/1 is already Approved")
    ) as err:
        registry.approve(project, MODEL, 1, "again")
    assert err.value.hint is not None
    assert "Rejected" in err.value.hint
    registry.update_approval(project, MODEL, 1, ApprovalStatus.PENDING)
    with pytest.raises(ConflictError, match="is already PendingManualApproval"):
        registry.update_approval(project, MODEL, 1, ApprovalStatus.PENDING)
    assert len(registry.approval_history(project, MODEL, 1)) == 2


@pytest.mark.parametrize("note", ["", "   "])
def test_approve_and_reject_need_a_note(ctx: Context, project: str, note: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    with pytest.raises(InvalidInputError, match="Approving model 'eligibility' version 1 needs"):
        registry.approve(project, MODEL, 1, note)
    with pytest.raises(InvalidInputError, match="Rejecting model 'eligibility' version 1 needs"):
        registry.reject(project, MODEL, 1, note)
    assert registry.approval_history(project, MODEL, 1) == []


def test_unknown_status_is_refused_with_a_suggestion(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    with pytest.raises(InvalidInputError, match="Approval status 'Aproved' is not valid") as err:
        registry.update_approval(project, MODEL, 1, "Aproved", "typo")
    assert err.value.hint is not None
    assert err.value.hint.startswith("Did you mean 'Approved'?")
    # Case does not matter for known values.
    assert registry.update_approval(project, MODEL, 1, "approved", "ok").approval_status == (
        ApprovalStatus.APPROVED
    )


def test_archived_version_cannot_be_approved(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    registry.archive_version(project, MODEL, 1)
    with pytest.raises(ConflictError, match="eligibility/1 is archived; archived versions cannot"):
        registry.approve(project, MODEL, 1, "ok")
    assert registry.reject(project, MODEL, 1, "retired").approval_status is ApprovalStatus.REJECTED


# Versions by number and alias -----------------------------------------------------------------
def test_unknown_version_lists_existing_ones(ctx: Context, project: str) -> None:
    _register(ctx)
    _register(ctx)
    with pytest.raises(NotFoundError, match="has no version 7") as err:
        RegistryService(ctx).get_version(project, MODEL, 7)
    assert err.value.hint == "Its versions are 1, 2."
    with pytest.raises(InvalidInputError, match="Version 0 is not valid"):
        RegistryService(ctx).get_version(project, MODEL, 0)
    with pytest.raises(InvalidInputError, match="neither a version number nor an alias"):
        RegistryService(ctx).get_version(project, MODEL, "no such/alias")


def test_alias_moves_atomically(any_ctx: Context) -> None:
    registry = _setup(any_ctx)
    v1, v2 = _register(any_ctx), _register(any_ctx)
    registry.approve(PROJECT, MODEL, 1, "ok")
    registry.approve(PROJECT, MODEL, 2, "ok")

    assert registry.set_alias(PROJECT, MODEL, "production", 1).aliases == ["production"]
    assert registry.get_version(PROJECT, MODEL, "production").id == v1.id

    moved = registry.set_alias(PROJECT, MODEL, "production", v2.version)
    assert moved.id == v2.id
    assert moved.aliases == ["production"]
    assert registry.get_version(PROJECT, MODEL, "production").id == v2.id
    assert registry.get_version(PROJECT, MODEL, 1).aliases == []
    assert registry.get_model(PROJECT, MODEL).aliases == {"production": 2}

    # An alias may be set from another alias; setting it to where it already points is a no-op.
    registry.set_alias(PROJECT, MODEL, "champion", "production")
    registry.set_alias(PROJECT, MODEL, "champion", 2)
    assert registry.get_version(PROJECT, MODEL, 2).aliases == ["champion", "production"]
    assert [v.aliases for v in registry.list_versions(PROJECT, MODEL)] == [
        [],
        ["champion", "production"],
    ]

    events = AuditTrail(any_ctx).list(action="model_alias.set")
    assert [(e.before, e.after) for e in events] == [
        (None, {"name": MODEL, "alias": "production", "version": 1}),
        (
            {"name": MODEL, "alias": "production", "version": 1},
            {"name": MODEL, "alias": "production", "version": 2},
        ),
        (None, {"name": MODEL, "alias": "champion", "version": 2}),
    ]
    assert _audit_ok(any_ctx)


def test_delete_alias(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    registry.approve(project, MODEL, 1, "ok")
    registry.set_alias(project, MODEL, "production", 1)
    registry.delete_alias(project, MODEL, "production")
    assert registry.get_version(project, MODEL, 1).aliases == []
    assert registry.get_model(project, MODEL).aliases == {}
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        registry.get_version(project, MODEL, "production")
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        registry.delete_alias(project, MODEL, "production")
    [event] = AuditTrail(ctx).list(action="model_alias.deleted")
    assert event.before == {"name": MODEL, "alias": "production", "version": 1}


def test_unknown_alias_suggests_close_names(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    registry.approve(project, MODEL, 1, "ok")
    registry.set_alias(project, MODEL, "production", 1)
    with pytest.raises(NotFoundError, match="has no alias 'prodution'") as err:
        registry.get_version(project, MODEL, "prodution")
    assert err.value.hint == "Did you mean 'production'?"


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("3", "Alias '3' looks like a version number"),
        ("1.5", "Alias '1.5' looks like a version number"),
        ("bad alias", "Alias name 'bad alias' is not valid"),
        ("", "Alias name '' is not valid"),
    ],
)
def test_alias_names_are_checked(ctx: Context, project: str, alias: str, message: str) -> None:
    _register(ctx)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        RegistryService(ctx).set_alias(project, MODEL, alias, 1)


def test_alias_cannot_point_at_an_archived_version(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    registry.archive_version(project, MODEL, 1)
    with pytest.raises(ConflictError, match="is archived; an alias cannot point at it"):
        registry.set_alias(project, MODEL, "production", 1)


# Archive --------------------------------------------------------------------------------------
def test_archive_and_unarchive(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    _register(ctx)

    archived = registry.archive_version(project, MODEL, 1)
    assert archived.archived is True
    assert [v.version for v in registry.list_versions(project, MODEL)] == [2]
    assert [v.version for v in registry.list_versions(project, MODEL, include_archived=True)] == [
        1,
        2,
    ]
    with pytest.raises(ConflictError, match="eligibility/1 is already archived"):
        registry.archive_version(project, MODEL, 1)

    assert registry.unarchive_version(project, MODEL, 1).archived is False
    with pytest.raises(ConflictError, match="eligibility/1 is not archived"):
        registry.unarchive_version(project, MODEL, 1)
    assert _actions(ctx, entity_id=archived.id) == [
        "model_version.registered",
        "model_version.archived",
        "model_version.unarchived",
    ]


def test_aliased_version_cannot_be_archived(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    registry.approve(project, MODEL, 1, "ok")
    registry.set_alias(project, MODEL, "production", 1)
    with pytest.raises(ConflictError, match="cannot be archived: alias 'production' points at it"):
        registry.archive_version(project, MODEL, 1)
    registry.set_alias(project, MODEL, "champion", 1)
    with pytest.raises(ConflictError, match="aliases 'champion', 'production' point at it"):
        registry.archive_version(project, MODEL, 1)
    assert registry.get_version(project, MODEL, 1).archived is False


# Delete ---------------------------------------------------------------------------------------
def test_delete_refused_while_aliased_approved_or_with_downstream(
    any_ctx: Context,
) -> None:
    registry = _setup(any_ctx)
    mv = _register(any_ctx)
    registry.approve(PROJECT, MODEL, 1, "ok")
    registry.set_alias(PROJECT, MODEL, "production", 1)
    lineage = LineageService(any_ctx)
    with any_ctx.db.write() as uow:
        endpoint = lineage.node(uow, "endpoint", "ep-1", name="eligibility-api")
        lineage.link(uow, lineage.node(uow, "model_version", mv.id), endpoint, "ContributedTo")

    with pytest.raises(ConflictError) as err:
        registry.delete_version(PROJECT, MODEL, 1)
    assert err.value.message == (
        "Model version eligibility/1 cannot be deleted: alias 'production' points at it; "
        "it is Approved; lineage records endpoint 'eligibility-api' derived from it."
    )
    assert err.value.hint is not None
    assert "archive it instead" in err.value.hint

    registry.delete_alias(PROJECT, MODEL, "production")
    registry.reject(PROJECT, MODEL, 1, "superseded")
    with pytest.raises(ConflictError, match="lineage records endpoint 'eligibility-api'"):
        registry.delete_version(PROJECT, MODEL, 1)
    assert registry.get_version(PROJECT, MODEL, 1).id == mv.id
    assert _audit_ok(any_ctx)


def test_delete_version_never_reuses_its_number(any_ctx: Context) -> None:
    registry = _setup(any_ctx)
    _register(any_ctx)
    doomed = _register(any_ctx)
    registry.approve(PROJECT, MODEL, 2, "ok")
    registry.reject(PROJECT, MODEL, 2, "leaks a feature")

    registry.delete_version(PROJECT, MODEL, 2)

    with pytest.raises(NotFoundError, match="has no version 2"):
        registry.get_version(PROJECT, MODEL, 2)
    assert [v.version for v in registry.list_versions(PROJECT, MODEL)] == [1]
    assert LineageService(any_ctx).get_node("model_version", doomed.id).deleted is True
    assert _register(any_ctx).version == 3
    assert registry.get_model(PROJECT, MODEL).latest_version == 3
    [event] = AuditTrail(any_ctx).list(action="model_version.deleted")
    assert event.entity_id == doomed.id
    assert event.before is not None
    assert event.before["version"] == 2
    assert _audit_ok(any_ctx)


# Regressions found while splitting the service --------------------------------------------------
def test_delete_alias_with_spaces_deletes_the_alias(ctx: Context, project: str) -> None:
    svc = _setup(ctx)
    mv = _register(ctx)
    svc.approve(PROJECT, MODEL, mv.version, "ok")
    svc.set_alias(PROJECT, MODEL, "production", mv.version)
    svc.delete_alias(PROJECT, MODEL, " production ")
    with pytest.raises(NotFoundError):
        svc.get_version(PROJECT, MODEL, "production")
    assert _audit_ok(ctx)


def test_alias_with_a_trailing_newline_is_refused(ctx: Context, project: str) -> None:
    mv = _register(ctx)
    with pytest.raises(InvalidInputError, match="Alias name"):
        _setup(ctx).set_alias(PROJECT, MODEL, "prod\n", mv.version)


def test_a_non_ascii_digit_version_is_invalid_input(ctx: Context, project: str) -> None:
    _register(ctx)
    with pytest.raises(InvalidInputError, match="neither a version number nor an alias"):
        _setup(ctx).get_version(PROJECT, MODEL, "²")


def test_a_metric_too_large_for_a_float_is_stored_as_none(ctx: Context, project: str) -> None:
    svc = _setup(ctx)
    mv = svc.register(
        PROJECT, MODEL, artifacts={"model.bin": _stored(ctx)}, metrics={"x": 10**400, "auc": 0.9}
    )
    assert mv.metrics == {"x": None, "auc": 0.9}


# Aliases that need an Approved version, and If-Match ------------------------------------------
def test_production_points_only_at_an_approved_version(ctx: Context, project: str) -> None:
    registry = RegistryService(ctx)
    _register(ctx)
    for alias in ("production", "Production"):  # alias names are case-insensitive
        with pytest.raises(ConflictError, match="may only point at an Approved version") as err:
            registry.set_alias(project, MODEL, alias, 1)
        assert err.value.hint is not None and "[aliases] require_approved" in err.value.hint
    assert registry.get_model(project, MODEL).aliases == {}
    assert registry.set_alias(project, MODEL, "staging", 1).aliases == ["staging"]
    registry.approve(project, MODEL, 1, "ok")
    assert registry.set_alias(project, MODEL, "production", 1).aliases == ["production", "staging"]
    _register(ctx)
    with pytest.raises(ConflictError, match="eligibility/2 is PendingManualApproval"):
        registry.set_alias(project, MODEL, "production", 2)
    assert registry.get_version(project, MODEL, "production").version == 1
    assert [e.after for e in AuditTrail(ctx).list(action="model_alias.set")] == [
        {"name": MODEL, "alias": "staging", "version": 1},
        {"name": MODEL, "alias": "production", "version": 1},
    ]


def test_a_stale_if_match_refuses_an_alias_change(ctx: Context, project: str) -> None:
    from civicml.core.errors import PreconditionFailedError
    from civicml.registry.etags import alias_etag

    registry = RegistryService(ctx)
    v1, v2 = _register(ctx), _register(ctx)
    registry.set_alias(project, MODEL, "champion", 1)
    alias = registry.get_alias(project, MODEL, "champion")
    assert (alias.version, alias.version_id, alias.alias) == (1, v1.id, "champion")
    read = alias_etag(alias.version_id, alias.alias)
    registry.set_alias(project, MODEL, "champion", 2, if_match=read)
    with pytest.raises(PreconditionFailedError, match="alias 'champion' of model eligibility"):
        registry.set_alias(project, MODEL, "champion", 1, if_match=read)
    with pytest.raises(PreconditionFailedError, match="changed since you read it"):
        registry.delete_alias(project, MODEL, "champion", if_match=read)
    assert registry.get_version(project, MODEL, "champion").id == v2.id
    with pytest.raises(PreconditionFailedError, match="it does not exist now"):
        registry.set_alias(project, MODEL, "canary", 1, if_match="*")
    registry.delete_alias(project, MODEL, "champion", if_match=alias_etag(v2.id, "CHAMPION"))
    assert registry.get_model(project, MODEL).aliases == {}
    assert len(AuditTrail(ctx).list(action="model_alias.set")) == 2
    assert _audit_ok(ctx)
