"""Identities compare as user names do (Unicode NFKC, case-folded): a change of letter case or
of character width does not make another person for separation of duties or token ownership."""

from __future__ import annotations

import pytest

import civicml as cm
from civicml.core.errors import NotFoundError, PermissionDeniedError
from civicml.core.names import same_user, user_key
from tests.oversight.helpers import MODEL, PROJECT, Scene


def test_user_key_folds_case_and_compatibility_forms() -> None:
    assert user_key("Data-Scientist") == user_key("DATA-SCIENTIST") == "data-scientist"
    assert user_key("\uff24ata-\uff33cientist") == "data-scientist"  # full-width D and S
    assert same_user("Stra\u00dfe", "STRASSE")
    assert not same_user("alice", "alice2") and not same_user(None, "alice")


def test_data_scientist_cannot_approve_or_set_the_policy_of_what_data_scientist_trained(
    scene: Scene,
) -> None:
    trainer = cm.connect(home=scene.home, user="data-scientist")
    project = trainer.project(PROJECT)
    data = project.datasets.version("applications")
    with project.start_run() as run:
        trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
    version = scene.as_("rui").models.register(MODEL, trained, run=run)  # rui registers it
    for name in ("Data-Scientist", "DATA-SCIENTIST", "\uff44ata-scientist"):
        approver = cm.connect(home=scene.home, user=name).project(PROJECT)
        with pytest.raises(
            PermissionDeniedError, match=r"trained model version .* \(separation of duties\)"
        ):
            approver.models.approve(version, note="Looks fine to me.")
        with pytest.raises(PermissionDeniedError, match="separation of duties"):
            approver.models.set_policy(MODEL, {"metrics": {"val_roc_auc": {"min": 0.5}}})
    # The one who registered it, in another case, is refused too.
    with pytest.raises(PermissionDeniedError, match="registered model version"):
        cm.connect(home=scene.home, user="RUI").project(PROJECT).models.approve(
            version, note="Looks fine to me."
        )


def test_tokens_belong_to_their_owner_whatever_the_case(scene: Scene) -> None:
    alice = cm.connect(home=scene.home, user="alice")
    token = alice.tokens.create("laptop").token
    same = cm.connect(home=scene.home, user="ALICE")
    assert [t.id for t in same.tokens.list()] == [token.id]
    assert same.tokens.get(token.id).id == token.id
    with pytest.raises(NotFoundError):
        scene.rosa.tokens.get(token.id)  # not an admin
