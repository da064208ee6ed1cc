"""The permission catalog, the built-in roles, custom roles, and the matrix in docs/security.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from civicml.core.permissions import (
    ADMIN_ROLE,
    BUILTIN_ROLES,
    PERMISSIONS,
    PLATFORM_PERMISSIONS,
    role_table,
)
from civicml.core.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def _documented_matrix() -> dict[str, set[str]]:
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- permission-matrix")[1].split("<!-- /permission-matrix -->")[0]
    lines = [line for line in block.splitlines() if line.startswith("| `")]
    header = next(line for line in block.splitlines() if line.startswith("| permission"))
    roles = re.findall(r"`([^`]+)`", header)
    granted: dict[str, set[str]] = {role: set() for role in roles}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        permission = cells[0].strip("`")
        for role, cell in zip(roles, cells[2:], strict=True):
            if cell == "✓":
                granted[role].add(permission)
    return granted


def test_the_documented_matrix_is_the_one_enforced() -> None:
    documented = _documented_matrix()
    assert documented == {role: set(perms) for role, perms in BUILTIN_ROLES.items()}


def test_every_permission_is_documented_with_what_it_allows() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for permission, what in PERMISSIONS.items():
        assert f"| `{permission}` | {what} |" in text


def test_admin_holds_everything_and_project_roles_no_platform_permission() -> None:
    assert BUILTIN_ROLES[ADMIN_ROLE] == frozenset(PERMISSIONS)
    for role, perms in BUILTIN_ROLES.items():
        if role not in (ADMIN_ROLE, "auditor"):
            assert not perms & set(PLATFORM_PERMISSIONS), role
    assert BUILTIN_ROLES["auditor"] & set(PLATFORM_PERMISSIONS) == {"audit.verify"}


def test_viewer_and_auditor_change_nothing() -> None:
    for role in ("viewer", "auditor"):
        writes = {p for p in BUILTIN_ROLES[role] if not p.endswith((".read", ".verify"))}
        assert writes == set(), role


def test_custom_roles_join_the_table_and_labels_give_nothing() -> None:
    table = role_table({"model-reader": ["projects.read", "models.read"], "risk_officer": []})
    assert table["model-reader"] == {"projects.read", "models.read"}
    assert table["risk_officer"] == frozenset()
    assert table["viewer"] == BUILTIN_ROLES["viewer"]


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"viewer": ["models.approve"]}, "redefines a built-in role"),
        ({"approver": ["models.aprove"]}, "unknown permission(s) models.aprove"),
    ],
)
def test_bad_custom_roles_are_refused(custom: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        role_table(custom)


def test_settings_refuse_a_custom_role_with_an_unknown_permission(tmp_path: Path) -> None:
    with pytest.raises((ValidationError, ValueError), match=r"models\.aprove"):
        Settings(home=tmp_path, custom_roles={"approver": ["models.aprove"]})
