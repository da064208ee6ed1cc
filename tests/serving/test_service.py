"""EndpointService: only approved versions deploy; lineage and audit record every change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from civicml.core import ArtifactIntegrityError, ConflictError, InvalidInputError, NotFoundError
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.registry import RegistryService
from civicml.serving import EndpointService, EndpointStatus, ModelHost
from civicml.store import Context
from tests.serving.helpers import MODEL, PROJECT, register, tamper


def test_deploy_refuses_a_pending_version(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    mv = register(ctx, model_dirs[0], approve=False)
    msg = (
        f"Model version {MODEL}/1 is PendingManualApproval; only Approved versions can be deployed."
    )
    with pytest.raises(ConflictError, match=re.escape(msg)) as caught:
        EndpointService(ctx).deploy(project, "web", MODEL, mv.version)
    assert caught.value.hint is not None
    assert f"civicml models approve {MODEL} 1" in caught.value.hint
    assert EndpointService(ctx).list(project) == []


def test_deploy_refuses_a_rejected_version(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    mv = register(ctx, model_dirs[0], approve=False)
    RegistryService(ctx).reject(PROJECT, MODEL, mv.version, "biased on region")
    with pytest.raises(ConflictError, match=re.escape(f"{MODEL}/1 is Rejected")):
        EndpointService(ctx).deploy(project, "web", MODEL, 1)


def test_deploy_get_list_update_delete_with_audit_and_lineage(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    svc = EndpointService(ctx, host)
    v1 = register(ctx, model_dirs[0])
    deployed = svc.deploy(project, "web", MODEL, "1", capture_percent=25)
    assert deployed.status is EndpointStatus.IN_SERVICE
    assert (deployed.model_version, deployed.model_version_id) == (1, v1.id)
    assert deployed.capture.enabled and deployed.capture.percent == 25
    assert deployed.created_by == "alice"
    assert svc.get(project, "web") == deployed
    assert svc.list(project) == [deployed]
    with pytest.raises(ConflictError, match="Endpoint 'web' already exists"):
        svc.deploy(project, "web", MODEL, 1)

    v2 = register(ctx, model_dirs[1])
    updated = svc.update(project, "web", 2)
    assert (updated.model_version, updated.model_version_id) == (2, v2.id)
    assert updated.capture == deployed.capture
    with pytest.raises(ConflictError, match="nothing was changed"):
        svc.update(project, "web", 2)
    assert svc.update(project, "web", capture_percent=0).capture.percent == 0

    graph = LineageService(ctx).query("endpoint", deployed.id, direction="upstream", max_depth=1)
    assert {(e.kind) for e in graph.edges} == {"AssociatedWith"}
    assert {n.ref for n in graph.nodes} == {deployed.id, v1.id, v2.id}

    svc.delete(project, "web")
    with pytest.raises(NotFoundError, match="Endpoint 'web' does not exist"):
        svc.get(project, "web")
    with pytest.raises(NotFoundError, match="'web' does not exist"):
        host.invoke(project, "web", {"age": 1, "income": 1.0, "region": "north"})
    events = AuditTrail(ctx).list(entity_kind="endpoint")
    assert [e.action for e in events] == [
        "endpoint.deployed",
        "endpoint.updated",
        "endpoint.updated",
        "endpoint.deleted",
    ]
    assert events[1].before is not None and events[1].before["model_version"] == 1
    assert events[1].after is not None and events[1].after["model_version"] == 2


def test_update_refuses_an_unapproved_version_and_keeps_the_old_one(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    svc = EndpointService(ctx)
    register(ctx, model_dirs[0])
    svc.deploy(project, "web", MODEL, 1)
    register(ctx, model_dirs[1], approve=False)
    with pytest.raises(ConflictError, match="PendingManualApproval"):
        svc.update(project, "web", 2)
    assert svc.get(project, "web").model_version == 1


def test_deploy_refuses_tampered_model_files(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    mv = register(ctx, model_dirs[0])
    manifest = RegistryService(ctx).get_manifest(mv)
    tamper(ctx, manifest["files"]["model.skops"]["digest"])
    for svc in (EndpointService(ctx), EndpointService(ctx, ModelHost(ctx))):
        with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
            svc.deploy(project, "web", MODEL, 1)
    assert EndpointService(ctx).list(project) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capture_percent": 101}, "Capture percentage 101 is out of range."),
        ({"capture_percent": -1}, "Capture percentage -1 is out of range."),
        ({"capture_percent": float("nan")}, "Capture percentage nan is not a number."),
    ],
)
def test_bad_capture_percentages(
    ctx: Context, project: str, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        EndpointService(ctx).deploy(project, "web", MODEL, 1, **kwargs)


def test_unknown_names_suggest_close_ones(
    ctx: Context, project: str, model_dirs: tuple[Path, Path]
) -> None:
    svc = EndpointService(ctx)
    register(ctx, model_dirs[0])
    svc.deploy(project, "eligibility-web", MODEL, 1)
    with pytest.raises(NotFoundError) as caught:
        svc.get(project, "eligibility-wb")
    assert caught.value.hint == "Did you mean 'eligibility-web'?"
    with pytest.raises(InvalidInputError, match="Endpoint name 'bad name' is not valid"):
        svc.deploy(project, "bad name", MODEL, 1)
