"""Approval policies: the TOML format, its checks and its errors."""

from __future__ import annotations

import pytest

from civicml.core.errors import InvalidInputError
from civicml.oversight.policy import Bound, parse_policy

POLICY = """
description = "eligibility"

[metrics]
val_roc_auc = { min = 0.8 }
val_log_loss = { max = 0.6 }

[[bias]]
metric = "DI"
facet = "sex"
min = 0.8
max = 1.25

[[bias]]
metric = "DPPL"
facet = "sex"
value = "female"
max_abs = 0.1

[explanation]
required = true

[card]
complete = true
status = "PendingReview"

[data]
min_rows = 500
max_missing_fraction = 0.2

[override]
roles = ["risk_officer"]
"""


def test_a_full_policy_parses_from_toml_and_json() -> None:
    policy = parse_policy(POLICY)
    assert policy.metrics["val_roc_auc"].min == 0.8
    assert [(b.metric, b.facet, b.value) for b in policy.bias] == [
        ("DI", "sex", None),
        ("DPPL", "sex", "female"),
    ]
    assert policy.card is not None and policy.card.status == "PendingReview"
    assert policy.override.roles == ["risk_officer"]
    assert policy.override.min_justification_chars == 20
    assert policy.n_checks() == 7
    again = parse_policy(policy.model_dump_json())
    assert again == policy
    assert parse_policy(policy.model_dump(mode="json")) == policy


@pytest.mark.parametrize(
    ("value", "admitted"),
    [(0.79, False), (0.8, True), (1.0, True), (1.25, True), (1.26, False)],
)
def test_bounds_include_their_limits(value: float, admitted: bool) -> None:
    assert Bound(min=0.8, max=1.25).admits(value) is admitted


def test_max_abs_bounds_both_signs() -> None:
    bound = Bound(max_abs=0.1)
    assert bound.admits(-0.1) and bound.admits(0.05)
    assert not bound.admits(-0.11) and not bound.admits(0.2)
    assert bound.describe() == "|x| <= 0.1"


def test_an_aliases_rule_alone_is_a_policy_and_defaults_to_production() -> None:
    policy = parse_policy('[aliases]\nrequire_approved = ["production", "champion"]')
    assert policy.aliases is not None
    assert policy.aliases.require_approved == ["production", "champion"]
    assert policy.n_checks() == 0
    assert parse_policy({"aliases": {}}).model_dump(exclude_none=True)["aliases"] == {
        "require_approved": ["production"]
    }
    assert parse_policy(POLICY).aliases is None  # the registry then protects production


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("[metrics\nx=1", "not valid TOML or JSON"),
        ("[metrics]\nval_auc = { min = 0.8, mni = 0.1 }", "metrics.val_auc.mni"),
        ("[metrics]\nval_auc = {}", "give at least one of min, max, max_abs"),
        ("[metrics]\nval_auc = { min = 2, max = 1 }", "min 2.0 is above max 1.0"),
        ('[[bias]]\nmetric = "DIX"\nfacet = "sex"\nmin = 0.8', "unknown bias metric 'DIX'"),
        ("[colour]\nred = 1", "colour"),
        ('[override]\nroles = ["x"]', "has no rule"),
        ('[card]\nstatus = "Done"', "card.status"),
        ('[aliases]\nrequire_approved = ["bad alias"]', "'bad alias' is not an alias name"),
        ('[aliases]\nrequired = ["production"]', "aliases.required"),
    ],
)
def test_bad_policies_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match="policy") as err:
        parse_policy(text, what="The policy")
    assert message in err.value.message
    assert err.value.hint
