"""Authorization in the service layer: roles per project, deny by default, 404 for what a
caller may not know exists, 403 naming the permission otherwise."""

from __future__ import annotations

import pytest

from civicml.core.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from civicml.core.identity import Principal, resolve_principal
from civicml.governance import AuditTrail, LineageService, ProjectService
from civicml.governance.access import GRANT_CACHE
from civicml.store import Context
from civicml.tracking.service import TrackingService

NOBODY = Principal(user="nobody", roles=frozenset())


def as_(ctx: Context, user: str, *roles: str, projects: frozenset[str] | None = None) -> Context:
    principal = Principal(user=user, roles=frozenset(roles))
    if projects is not None:
        principal = Principal(user=user, roles=frozenset(roles), projects=projects)
    return ctx.as_principal(principal)


@pytest.fixture
def two_projects(ctx: Context) -> tuple[str, str]:
    GRANT_CACHE.clear()
    ProjectService(ctx).create("benefits")
    ProjectService(ctx).create("housing")
    run = TrackingService(ctx).create_run("housing")
    TrackingService(ctx).end_run(run.id)
    return "benefits", run.id


def test_a_user_without_a_grant_sees_nothing_and_learns_nothing(
    ctx: Context, two_projects: tuple[str, str]
) -> None:
    _, housing_run = two_projects
    nobody = ProjectService(ctx.as_principal(NOBODY))
    assert nobody.list() == []
    with pytest.raises(NotFoundError) as hidden:
        nobody.get("housing", "projects.read")
    with pytest.raises(NotFoundError) as missing:
        nobody.get("housng", "projects.read")
    assert hidden.value.message == "Project 'housing' does not exist."
    assert missing.value.message == "Project 'housng' does not exist."
    assert "housing" not in (missing.value.hint or "")  # no did-you-mean from hidden projects
    with pytest.raises(NotFoundError, match=r"Run .* does not exist"):
        TrackingService(ctx.as_principal(NOBODY)).get_run(housing_run)
    with pytest.raises(NotFoundError):  # nor may they create one: that is a platform permission
        nobody.ensure("fresh", "projects.read")


def test_a_grant_opens_one_project_and_names_the_missing_permission(
    ctx: Context, two_projects: tuple[str, str]
) -> None:
    ProjectService(ctx).grant("benefits", "Vera", "viewer")
    vera = as_(ctx, "vera")  # the grant was given as 'Vera': names compare case-blind
    assert [p.name for p in ProjectService(vera).list()] == ["benefits"]
    TrackingService(vera).list_experiments("benefits")
    with pytest.raises(PermissionDeniedError) as denied:
        TrackingService(vera).create_run("benefits")
    assert "'experiments.write'" in denied.value.message
    with pytest.raises(NotFoundError):
        ProjectService(vera).get("housing", "projects.read")


def test_only_members_write_may_grant_and_revoke(
    ctx: Context, two_projects: tuple[str, str]
) -> None:
    service = ProjectService(ctx)
    service.grant("benefits", "vera", "viewer")
    service.grant("benefits", "pat", "project-admin")
    with pytest.raises(PermissionDeniedError, match=r"members\.write"):
        ProjectService(as_(ctx, "vera")).grant("benefits", "vera", "project-admin")
    pat = ProjectService(as_(ctx, "pat"))
    made = pat.grant("benefits", "dan", "data-scientist")
    assert (made.user, made.role, made.granted_by) == ("dan", "data-scientist", "pat")
    assert pat.grant("benefits", "dan", "data-scientist") == made  # idempotent
    assert {(g.user, g.role) for g in pat.members("benefits")} == {
        ("dan", "data-scientist"),
        ("pat", "project-admin"),
        ("vera", "viewer"),
    }
    with pytest.raises(InvalidInputError, match="platform role"):
        pat.grant("benefits", "dan", "admin")
    with pytest.raises(InvalidInputError, match="is not a role"):
        pat.grant("benefits", "dan", "data_scientist")
    dan = as_(ctx, "dan")
    TrackingService(dan).create_run("benefits")
    pat.revoke("benefits", "dan", "data-scientist")  # in this process: effective at once
    with pytest.raises(NotFoundError):
        TrackingService(dan).create_run("benefits")
    with pytest.raises(NotFoundError, match="holds no grant"):
        pat.revoke("benefits", "dan", "data-scientist")
    actions = [e.action for e in AuditTrail(ctx).list(project="benefits")]
    assert actions.count("project.role_granted") == 3
    assert actions.count("project.role_revoked") == 1


def test_a_credential_scoped_to_one_project_reaches_no_other(
    ctx: Context, two_projects: tuple[str, str]
) -> None:
    _, housing_run = two_projects
    scoped = as_(ctx, "ops", "admin", projects=frozenset({"benefits"}))
    assert [p.name for p in ProjectService(scoped).list()] == ["benefits"]
    with pytest.raises(NotFoundError):
        TrackingService(scoped).get_run(housing_run)
    with pytest.raises(NotFoundError):
        LineageService(scoped).query("run", housing_run)


def test_audit_events_follow_the_projects_and_verify_needs_a_platform_auditor(
    ctx: Context, two_projects: tuple[str, str]
) -> None:
    ProjectService(ctx).grant("benefits", "rita", "reviewer")
    ProjectService(ctx).grant("benefits", "vera", "viewer")
    rita = AuditTrail(as_(ctx, "rita"))
    assert {e.project for e in rita.list()} == {"benefits"}
    with pytest.raises(NotFoundError):
        rita.list(project="housing")
    with pytest.raises(PermissionDeniedError, match=r"audit\.verify"):
        rita.verify()
    with pytest.raises(PermissionDeniedError, match=r"audit\.read"):
        AuditTrail(as_(ctx, "vera")).list(project="benefits")
    auditor = AuditTrail(as_(ctx, "aud", "auditor"))  # held on every project
    assert {e.project for e in auditor.list()} >= {"benefits", "housing"}
    assert auditor.verify().ok


def test_roles_setting_keys_compare_as_user_names() -> None:
    roles = {"Rosa": ["reviewer"]}
    assert resolve_principal("ROSA", roles).roles == frozenset({"reviewer"})
    full_width = "\uff52\uff4f\uff53\uff41"
    assert resolve_principal(full_width, roles).roles == frozenset({"reviewer"})
