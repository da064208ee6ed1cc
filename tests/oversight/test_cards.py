"""Model cards: filled sections, versioned edits, statuses, exports."""

from __future__ import annotations

import json

import pytest

from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError
from tests.oversight.helpers import CARD, Scene, add_evidence


def test_a_new_card_is_filled_from_the_platform_and_lists_what_is_missing(scene: Scene) -> None:
    card = scene.as_("rui").cards.get(scene.mv)
    assert (card.status, card.card_version, card.complete) == ("Draft", 0, False)
    assert len(card.missing) == 11
    overview = card.content["model_overview"]
    assert overview["model_id"] == scene.mv.id
    assert overview["algorithm_type"] == "logistic"
    assert overview["problem_type"] == "Classification"
    assert overview["model_creator"] == "tara"
    assert overview["model_artifact"] == [f"sha256:{scene.mv.artifact_digest}"]
    [dataset] = card.content["training_details"]["training_job_details"]["datasets"]
    assert (dataset["dataset"], dataset["version"], dataset["rows"]) == ("applications", 1, 600)
    profile = {p["column"]: p for p in dataset["profile"]}
    assert set(profile["sex"]["top"]) == {"female", "male"}
    assert sum(profile["sex"]["top"].values()) == 600
    assert (
        profile["age"]["kind"] == "numeric" and 18 <= profile["age"]["min"] <= profile["age"]["max"]
    )
    [validation] = card.content["evaluation_details"]
    metrics = {m["name"]: m["value"] for m in validation["metric_groups"][0]["metric_data"]}
    assert metrics["val_roc_auc"] == scene.mv.metrics["val_roc_auc"]
    assert card.content["approval"] == {"status": "PendingManualApproval", "history": []}


def test_evidence_appears_on_the_card(scene: Scene) -> None:
    add_evidence(scene)
    card = scene.as_("rui").cards.get(scene.mv)
    names = [e["name"] for e in card.content["evaluation_details"]]
    assert names == [
        "Validation",
        "Bias (SageMaker Clarify metrics)",
        "Explanation (mean |SHAP| per input column)",
    ]
    bias = card.content["evaluation_details"][1]["metric_groups"]
    assert {g["name"] for g in bias} == {"sex = female", "sex = male"}
    assert card.complete and card.missing == []


def test_each_edit_is_a_new_audited_version_and_old_versions_stay_readable(
    any_scene: Scene,
) -> None:
    scene = any_scene
    cards = scene.as_("rui").cards
    first = cards.edit(scene.mv, fields={"intended_uses.risk_rating": "High"}, note="workshop")
    second = cards.edit(
        scene.mv, fields={"intended_uses.risk_rating": "Medium", "model_overview.model_owner": "X"}
    )
    assert (first.card_version, second.card_version) == (1, 2)
    history = cards.history(scene.mv)
    assert [h.changed for h in history] == [
        ["intended_uses.risk_rating"],
        ["intended_uses.risk_rating", "model_overview.model_owner"],
    ]
    assert history[0].note == "workshop"
    old = cards.get(scene.mv, card_version=1)
    assert old.content["intended_uses"]["risk_rating"] == "High"
    assert old.content["model_overview"]["model_owner"] is None
    with pytest.raises(ConflictError, match="already says that"):
        cards.edit(scene.mv, fields={"intended_uses.risk_rating": "Medium"})
    cleared = cards.edit(scene.mv, fields={"model_overview.model_owner": None})
    assert "model_overview.model_owner" in cleared.missing
    events = scene.rui.audit_events(action="model_card.updated")
    assert [e.after["card_version"] for e in events] == [1, 2, 3]
    assert events[1].before["intended_uses.risk_rating"] == "High"
    assert events[1].after["intended_uses.risk_rating"] == "Medium"
    with pytest.raises(NotFoundError, match="has no version 9"):
        cards.get(scene.mv, card_version=9)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"intended_uses.risk": "High"}, "not a field a person writes"),
        ({"intended_uses.risk_rating": "Severe"}, "must be one of High, Medium, Low, Unknown"),
        ({"model_overview.model_owner": 3}, "must be text, not int"),
        ({"model_overview.model_owner": "x" * 20_001}, "the most is 20000"),
        ({}, "No card fields were given"),
    ],
)
def test_bad_edits_are_refused_and_store_nothing(
    scene: Scene, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        scene.as_("rui").cards.edit(scene.mv, fields=fields)
    assert scene.as_("rui").cards.history(scene.mv) == []


def test_statuses_follow_sagemaker(scene: Scene) -> None:
    cards = scene.as_("rui").cards
    cards.edit(scene.mv, fields={"intended_uses.risk_rating": "High"})
    with pytest.raises(ConflictError, match="cannot be Approved: required fields are missing"):
        cards.set_status(scene.mv, status="Approved")
    assert cards.set_status(scene.mv, status="PendingReview").status == "PendingReview"
    cards.edit(scene.mv, fields=CARD)
    approved = cards.set_status(scene.mv, status="Approved", note="reviewed by the board")
    assert (approved.status, approved.card_version) == ("Approved", 2)  # no new version
    edited = cards.edit(scene.mv, fields={"business_details.kpis": "Recall >= 0.85"})
    assert edited.status == "Draft"  # an edited card must be reviewed again
    cards.set_status(scene.mv, status="Archived")
    with pytest.raises(ConflictError, match="Archived and read-only"):
        cards.edit(scene.mv, fields={"business_details.kpis": "x"})
    with pytest.raises(ConflictError, match="archived cards do not change status"):
        cards.set_status(scene.mv, status="Draft")
    with pytest.raises(InvalidInputError, match="Card status 'Aproved' is not known") as err:
        cards.set_status(scene.mv, status="Aproved")
    assert err.value.hint is not None and "Approved" in err.value.hint
    assert cards.export(scene.mv, format="markdown").startswith("# Model card: eligibility v1")
    statuses = [
        e.after["status"] for e in scene.rui.audit_events(action="model_card.status_changed")
    ]
    assert statuses == ["PendingReview", "Approved", "Archived"]


def test_a_stale_card_etag_refuses_an_edit_or_a_status_change(scene: Scene) -> None:
    from civicml.core.errors import PreconditionFailedError

    cards = scene.as_("rui").cards
    blank = cards.get(scene.mv)
    first = cards.edit(scene.mv, fields=CARD, note="draft", if_match=cards.etag(blank))
    assert cards.etag(first) == cards.etag(cards.get(scene.mv)) != cards.etag(blank)
    # an edit from the blank card read earlier would overwrite the draft unseen
    with pytest.raises(PreconditionFailedError, match="card of eligibility v1 changed") as err:
        cards.edit(scene.mv, fields={"business_details.kpis": "x"}, if_match=cards.etag(blank))
    assert err.value.status == 412 and err.value.hint is not None
    assert err.value.hint.startswith("Read it again (GET /api/v1/projects/benefits/models/")
    with pytest.raises(PreconditionFailedError):
        cards.set_status(scene.mv, status="PendingReview", if_match=cards.etag(blank))
    review = cards.set_status(scene.mv, status="PendingReview", if_match=cards.etag(first))
    assert cards.etag(review) != cards.etag(first)  # a status change is a change too
    with pytest.raises(PreconditionFailedError):
        cards.edit(scene.mv, fields={"business_details.kpis": "x"}, if_match=cards.etag(first))
    # an earlier card version is not the current card
    with pytest.raises(PreconditionFailedError):
        old = cards.get(scene.mv, card_version=1)
        cards.edit(scene.mv, 1, {"business_details.kpis": "y"})
        cards.edit(scene.mv, fields={"business_details.kpis": "z"}, if_match=cards.etag(old))
    assert [v.version for v in cards.history(scene.mv)] == [1, 2]
    assert cards.get(scene.mv).content["business_details"]["kpis"] == "y"


def test_exports_escape_what_people_write(scene: Scene) -> None:
    add_evidence(scene)
    cards = scene.as_("rui").cards
    cards.edit(scene.mv, fields={"model_overview.model_owner": "<script>alert(1)</script>"})
    html = cards.export(scene.mv)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<svg" in html and "http" not in html.split("</style>")[1]
    markdown = cards.export(scene.mv, format="markdown")
    assert "## Evaluation" in markdown and "| val_roc_auc |" in markdown
    assert "### applications v1" in markdown and "| sex | categorical | 0 |" in markdown
    document = json.loads(cards.export(scene.mv, format="json"))
    assert document["complete"] is True
    assert document["content"]["model_overview"]["model_owner"] == "<script>alert(1)</script>"
    with pytest.raises(InvalidInputError, match="Card format 'pdf' is not known"):
        cards.export(scene.mv, format="pdf")


HOSTILE = {
    "model_overview.model_owner": "<script>alert('owner')</script>",
    "model_overview.model_description": "[click me](javascript:alert(1)) ![x](http://evil/x.png)",
    "business_details.kpis": "| a | b |\n|---|---|\n| 1 | 2 |",
    "business_details.business_problem": "# Approved by the board\n- **all** good\n1. `rm -rf`",
    "intended_uses.intended_uses": "<img src=x onerror=alert(1)> &lt;b&gt; __init__ ~~no~~",
    "additional_information.ethical_considerations": "first line\n\n===\n<details>open",
}


def test_the_markdown_export_escapes_what_people_write(scene: Scene) -> None:
    from markdown_it import MarkdownIt

    add_evidence(scene)
    cards = scene.as_("rui").cards
    cards.edit(scene.mv, fields=HOSTILE, note="hostile text")
    markdown = cards.export(scene.mv, format="markdown")
    assert "<script>" not in markdown and "\\<script\\>alert('owner')\\</script\\>" in markdown
    assert "\\[click me\\](javascript:alert(1))" in markdown
    assert "- **KPIs**: \\| a \\| b \\|  \n  \\|---\\|---\\|  \n  \\| 1 \\| 2 \\|" in markdown
    assert "| val_roc_auc |" in markdown  # identifiers keep their underscores

    html = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown)
    for tag in ("<script", "<img", "<a ", "<details", "<del", "<h1>Approved", "<code>rm"):
        assert tag not in html, tag
    assert "&lt;script&gt;alert('owner')&lt;/script&gt;" in html
    assert "[click me](javascript:alert(1))" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp;lt;b&amp;gt; __init__ ~~no~~" in html
    assert "# Approved by the board<br />" in html and "- **all** good" in html
    assert "1. `rm -rf`" in html
    # the tables are the card's own: one header row per table, none from the written text
    tables = html.count("<table>")
    assert tables == sum(line.startswith("|---|") for line in markdown.splitlines())
    assert "<th>a</th>" not in html and "<th>b</th>" not in html
    # the same text, exported as HTML and JSON, is the text that was written
    document = json.loads(cards.export(scene.mv, format="json"))
    assert document["content"]["business_details"]["kpis"] == HOSTILE["business_details.kpis"]


def test_an_incomplete_card_marks_what_to_complete_in_every_export(scene: Scene) -> None:
    cards = scene.as_("rui").cards
    assert cards.export(scene.mv).count("TO COMPLETE") == 11
    assert cards.export(scene.mv, format="markdown").count("TO COMPLETE") == 11


def test_a_card_still_renders_and_says_so_when_model_files_are_lost(scene: Scene) -> None:
    from tests.serving.helpers import object_path

    ctx = scene.rui.backend.ctx
    path = object_path(ctx, scene.mv.artifact_digest)  # the version's file manifest
    path.chmod(0o644)
    path.unlink()
    card = scene.as_("rui").cards.get(scene.mv)
    overview = card.content["model_overview"]
    assert (
        "does not exist" in overview["model_files_problem"]
        or "missing" in (overview["model_files_problem"])
    )
    assert overview["algorithm_type"] is None
    assert card.content["approval"]["status"] == "PendingManualApproval"
    assert "Model files problem" in scene.as_("rui").cards.export(scene.mv)
