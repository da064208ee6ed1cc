"""``civicml models policy|gate|approve|dashboard`` and ``civicml cards`` on the embedded
platform: the oversight story end to end, exit codes (0 ok, 1 a failed gate, 2 any 4xx error,
a refused approval included) and one-line errors.

'tara' trains and registers, 'rui' reviews (no role given: admin), 'rosa' is a risk officer
(roles from CIVICML_ROLES, read by the embedded platform's settings).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import civicml as cm
from civicml.cli import _common as cli_common
from civicml.cli.main import main
from civicml.data.samples import benefit_applications
from tests.oversight.helpers import (
    CARD,
    CUSTOM_ROLES,
    GATE_FAILED,
    JUSTIFICATION,
    MODEL,
    POLICY,
    PROJECT,
)

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """eligibility v1 and v2 in project 'benefits', each trained and registered by tara."""
    monkeypatch.setenv("CIVICML_ROLES", json.dumps({"rosa": ["risk_officer"]}))
    monkeypatch.setenv("CIVICML_CUSTOM_ROLES", json.dumps(CUSTOM_ROLES))
    home = tmp_path / "cli-home"
    with cm.connect(home=home, user="tara") as ml:
        proj = ml.project(PROJECT)
        data = proj.datasets.ingest("applications", benefit_applications(600, seed=3))
        for _ in range(2):
            with proj.start_run() as run:
                trained = cm.train.tabular(data, target="eligible", algorithm="logistic", run=run)
            proj.models.register(MODEL, trained, run=run)

    def run(*args: str, user: str = "rui") -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "--user", user, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_error(err: str, message: str) -> list[str]:
    """An ``Error:`` line naming ``message``, at most a ``Hint:`` line after it, no traceback."""
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: ") and message in lines[0], err
    assert len(lines) <= 2 and all(line.startswith("Hint: ") for line in lines[1:]), err
    assert "Traceback" not in err
    return lines


def _json(cli: Cli, *args: str, user: str = "rui") -> Any:
    code, out, err = cli(*args, "-p", PROJECT, "--json", user=user)
    assert code == 0, err
    return json.loads(out)


def test_the_oversight_story_on_the_command_line(cli: Cli, tmp_path: Path) -> None:
    # separation of duties: tara registered and trained v1; a refused approval exits 1
    code, out, err = cli("models", "approve", MODEL, "1", "-m", "mine", "-p", PROJECT, user="tara")
    assert code == 1 and out == ""
    _one_error(err, "tara registered model version eligibility/1")
    assert _json(cli, "models", "history", MODEL, "1") == []

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    code, out, err = cli("models", "policy", "set", MODEL, str(policy), "-p", PROJECT)
    assert code == 0, err
    assert out.strip() == "Approval policy v1 of eligibility set by rui"
    code, out, _ = cli("models", "policy", "show", MODEL, "-p", PROJECT)
    assert out.startswith("# approval policy v1 of eligibility, set by rui at ")
    assert POLICY.strip() in out
    shown = _json(cli, "models", "policy", "show", MODEL)
    assert shown["policy"]["bias"] == [{"metric": "DI", "facet": "sex", "min": 0.8, "max": 1.25}]

    # the gate fails: exit 1, each check printed
    code, out, err = cli("models", "gate", MODEL, "1", "-p", PROJECT)
    assert code == 1, err
    assert "Gate of eligibility v1 (policy v1): FAILED" in out
    assert out.count("FAIL") == 1 + len(GATE_FAILED) and out.count("pass") == 1
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()]
    results = {r[0]: (r[1], r[2]) for r in rows if len(r) == 5 and r[2] in ("pass", "FAIL")}
    assert results == {  # the table wraps long names: 'explanation present' starts a row
        "val_roc_auc": ("metric", "pass"),
        "DI sex": ("bias", "FAIL"),
        "explanation": ("explanation", "FAIL"),
        "card complete": ("card", "FAIL"),
    }
    code, out, _ = cli("models", "gate", MODEL, "1", "-p", PROJECT, "--json")
    assert code == 1
    result = json.loads(out)
    assert result["passed"] is False
    assert [c["name"] for c in result["checks"] if not c["passed"]] == GATE_FAILED

    # a refused approval is a failed operation, as a failing gate is: exit 1, one Error line,
    # nothing changed
    code, out, err = cli("models", "approve", MODEL, "1", "-m", "reviewed", "-p", PROJECT)
    assert code == 1 and out == ""
    lines = _one_error(err, "Approval of eligibility v1 refused: 3 of 4 checks")
    assert all(name in lines[0] for name in GATE_FAILED)
    assert lines[1].startswith("Hint: Fix what failed (civicml models gate")
    assert _json(cli, "models", "show", MODEL, "1")["approval_status"] == "PendingManualApproval"

    # overrides: the role, then a justification long enough
    override = ("models", "approve", MODEL, "1", "-m", "pilot", "-p", PROJECT, "--override")
    code, _, err = cli(*override, JUSTIFICATION)
    assert code == 1
    _one_error(err, "rui may not override the approval gate of eligibility")
    code, _, err = cli(*override, "board said ok", user="rosa")
    assert code == 2  # bad input
    _one_error(err, "The override justification is 13 characters; the policy asks for at least 20")
    code, out, err = cli(*override, JUSTIFICATION, user="rosa")
    assert code == 0, err
    assert out.strip() == "eligibility v1 is Approved (by rosa)"
    [record] = _json(cli, "models", "history", MODEL, "1")
    assert record["evidence"]["override"] == {
        "justification": JUSTIFICATION,
        "by": "rosa",
        "role": "risk_officer",
    }
    refused = _json(cli, "audit", "list", "--action", "model_version.approval_refused")
    assert [(e["actor"], e["after"]["reason"]) for e in refused] == [
        ("tara", "separation_of_duties"),
        ("rui", "gate_failed"),
        ("rui", "override_not_allowed"),
        ("rosa", "override_justification_too_short"),
    ]
    assert refused[1]["after"]["failed"] == GATE_FAILED

    # v2 gets its evidence: bias and explanation reports, and a card written from the CLI
    assert cli(
        "evaluate", "bias", "applications", "-p", PROJECT, "-l", "eligible",
        "--positive-label", "1", "-f", "sex", "--model", MODEL, "--model-version", "2",
    )[0] == 0  # fmt: skip
    assert cli(
        "evaluate", "explain", MODEL, "--version", "2", "-d", "applications", "-p", PROJECT,
        "--rows", "100",
    )[0] == 0  # fmt: skip
    fields = tmp_path / "card.json"
    first = dict(list(CARD.items())[:6])
    fields.write_text(json.dumps(first), encoding="utf-8")
    code, out, err = cli(
        "cards", "edit", MODEL, "2", "--from-file", str(fields), "-m", "draft", "-p", PROJECT
    )
    assert code == 0, err
    assert out.strip() == "Card of eligibility v2 is now version 1 (Draft, 5 field(s) to complete)"
    sets = [arg for k, v in list(CARD.items())[6:] for arg in ("--set", f"{k}={v}")]
    code, out, err = cli("cards", "edit", MODEL, "2", *sets, "-m", "the rest", "-p", PROJECT)
    assert code == 0, err
    assert out.strip() == "Card of eligibility v2 is now version 2 (Draft, complete)"
    history = _json(cli, "cards", "history", MODEL, "2")
    assert [(h["version"], h["note"], len(h["changed"])) for h in history] == [
        (1, "draft", 6),
        (2, "the rest", 5),
    ]
    assert history[1]["fields"] == CARD

    code, out, err = cli("models", "gate", MODEL, "2", "-p", PROJECT)
    assert code == 0, err
    assert "Gate of eligibility v2 (policy v1): PASSED" in out and "FAIL" not in out
    code, out, err = cli("models", "approve", MODEL, "2", "-m", "every check passed", "-p", PROJECT)
    assert code == 0, err
    assert out.strip() == "eligibility v2 is Approved (by rui)"
    code, out, err = cli("cards", "status", MODEL, "2", "Approved", "-m", "reviewed", "-p", PROJECT)
    assert (code, out.strip()) == (0, "Card of eligibility v2 is Approved")

    markdown = tmp_path / "card.md"
    code, out, err = cli(
        "cards", "export", MODEL, "2", "-f", "markdown", "-o", str(markdown), "-p", PROJECT
    )
    assert code == 0, err
    assert out.strip() == f"Wrote the card of eligibility v2 to {markdown}"
    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("# Model card: eligibility v2\n")
    assert "Card status: **Approved** · card version 2 · complete" in text
    assert f"- **Model owner**: {CARD['model_overview.model_owner']}" in text
    decision = "rui: PendingManualApproval → Approved (every check passed); gate passed (policy v1)"
    assert decision in text
    assert "TO COMPLETE" not in text and "### Bias (SageMaker Clarify metrics)" in text
    overridden = tmp_path / "v1.md"
    code, _, err = cli(
        "cards", "export", MODEL, "1", "-f", "markdown", "-o", str(overridden), "-p", PROJECT
    )
    assert code == 0, err
    v1 = overridden.read_text(encoding="utf-8")
    assert f"gate failed (policy v1), overridden: {JUSTIFICATION}" in v1
    assert v1.count("TO COMPLETE") == 11

    board = _json(cli, "models", "dashboard")
    rows = {r["version"]: r for r in board["rows"]}
    assert [r["version"] for r in board["rows"]] == [2, 1]
    assert {v: (r["approval_status"], r["gate"]) for v, r in rows.items()} == {
        2: ("Approved", "passed"),
        1: ("Approved", "failed"),
    }
    assert rows[1]["gate_failed"] == GATE_FAILED
    assert (rows[2]["card_status"], rows[2]["card_complete"], rows[2]["risk_rating"]) == (
        "Approved",
        True,
        "High",
    )
    assert (rows[1]["card_status"], rows[1]["card_missing"]) == ("Draft", 11)
    with pytest.MonkeyPatch.context() as wide:  # nine columns: read them unfolded
        wide.setattr(cli_common.console, "width", 200)
        code, out, _ = cli("models", "dashboard", "-p", PROJECT)
    assert code == 0 and out.startswith("Model dashboard of benefits\n")
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()]
    firsts = [c for c in cells if len(c) == 9 and c[0].startswith("eligib")]  # a row's first line
    assert [(c[0], c[5], c[6], c[7], c[8]) for c in firsts] == [
        ("eligibility v2", "Approved", "High", "passed", ""),
        ("eligibility v1", "Draft, 11 missing", "", "failed (3 failed)", ""),
    ]

    code, out, _ = cli("audit", "verify")
    assert code == 0 and "audit events verified" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("models", "policy", "set", MODEL, "missing.toml"),
            "Cannot read the policy file missing.toml: No such file or directory.",
        ),
        (("models", "policy", "set", MODEL, "."), "Cannot read the policy file .: Is a directory."),
        (("models", "policy", "set", MODEL, "bad.toml"), "metrics.val_roc_auc.minimum"),
        (
            ("cards", "edit", MODEL, "1", "--set", "model_overview.owner=R. Diaz"),
            "'model_overview.owner' is not a field a person writes on a model card.",
        ),
        (
            ("cards", "edit", MODEL, "1", "--set", "intended_uses.risk_rating=Huge"),
            "intended_uses.risk_rating must be one of High, Medium, Low, Unknown, not 'Huge'.",
        ),
        (("cards", "edit", MODEL, "1", "--set", "no-equals-sign"), "is not KEY=VALUE"),
        (("cards", "edit", MODEL, "1", "--from-file", "bad.toml"), "Cannot read card fields"),
        (("cards", "status", MODEL, "1", "Approved"), "has nothing written yet"),
        (("cards", "status", MODEL, "1", "Done"), "Card status 'Done' is not known."),
        (("cards", "export", MODEL, "1", "-o", "card.pdf", "-f", "pdf"), "'pdf' is not known"),
        (("models", "gate", MODEL, "9"), "eligibility"),
        (("models", "approve", "nomodel", "1", "-m", "ok"), "nomodel"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_and_changes_nothing(
    cli: Cli, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "bad.toml").write_text("[metrics]\nval_roc_auc = { minimum = 0.8 }\n")

    code, out, err = cli(*args, "-p", PROJECT)

    assert code == 2 and out == ""
    _one_error(err, message)
    assert _json(cli, "models", "policy", "show", MODEL) is None
    assert _json(cli, "cards", "history", MODEL, "1") == []
    assert not (tmp_path / "card.pdf").exists()
    assert _json(cli, "audit", "list")[-1]["action"] == "model_version.registered"


def test_unknown_card_field_names_the_closest_field(cli: Cli) -> None:
    code, _, err = cli(
        "cards", "edit", MODEL, "1", "--set", "model_overview.model_ower=R. Diaz", "-p", PROJECT
    )
    assert code == 2
    lines = _one_error(err, "'model_overview.model_ower' is not a field")
    assert lines[1].startswith("Hint: Did you mean 'model_overview.model_owner'")
