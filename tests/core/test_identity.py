"""Resolving the principal (``civicml.core.identity``)."""

from __future__ import annotations

import getpass

import pytest

from civicml.core import InvalidInputError, Principal, resolve_principal


def test_the_named_user_gets_the_roles_the_setting_gives() -> None:
    roles = {"rosa": ["risk_officer"]}

    assert resolve_principal("rosa", roles) == Principal("rosa", frozenset({"risk_officer"}))
    assert resolve_principal("alice", roles).roles == frozenset({"admin"})


def test_without_a_name_the_os_user_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "osuser")

    assert resolve_principal().user == "osuser"


def test_an_invisible_actor_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="U\\+202E RIGHT-TO-LEFT OVERRIDE"):
        resolve_principal("alice\u202e", source="X-CivicML-User header")


def test_a_decomposed_name_is_the_same_principal_as_the_composed_one() -> None:
    assert resolve_principal("Jose\u0301") == resolve_principal("Jos\u00e9")
