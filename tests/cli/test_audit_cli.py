"""``civicml audit verify | export | list`` on the embedded platform (cli/governance.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, update

from civicml.cli.main import main
from civicml.core import FrozenClock, Principal, Settings
from civicml.governance import AuditTrail, ProjectService
from civicml.governance._tables import audit_events, audit_head
from civicml.governance.audit import canonical_json, event_hash
from civicml.store import Context
from tests.conftest import make_context
from tests.governance.helpers import corrupt_audit_table, populate

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def home(settings: Settings) -> Path:
    """The embedded home of ``ctx`` (also $CIVICML_HOME, set by the autouse fixture)."""
    return settings.home


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str, at: Path = home) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(at), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def trail(ctx: Context) -> AuditTrail:
    """Ten real events in the CLI's home."""
    populate(ctx)
    return AuditTrail(ctx)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


# verify ------------------------------------------------------------------------------------------
def test_verify_a_good_chain(cli: Cli, trail: AuditTrail) -> None:
    code, out, err = cli("audit", "verify")

    assert (code, err) == (0, "")
    assert out == "OK: 10 audit events verified, signed head at event 10.\n"


def test_verify_an_empty_trail(cli: Cli) -> None:
    assert cli("audit", "verify") == (0, "OK: 0 audit events verified.\n", "")


def test_verify_names_the_edited_event(cli: Cli, ctx: Context, trail: AuditTrail) -> None:
    event = trail.list()[3]
    with ctx.db.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 4).values(actor="mallory"))

    code, out, err = cli("audit", "verify")

    assert (code, out) == (1, "")
    assert err == (
        f"FAILED after 3 good events: event 4 (run.params_logged on run {event.entity_id}) was "
        f"edited: its content no longer matches its hash (event id {event.id})\n"
    )


def test_verify_names_a_deleted_event(cli: Cli, ctx: Context, trail: AuditTrail) -> None:
    with ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 6))

    code, _, err = cli("audit", "verify")

    assert code == 1
    assert err == "FAILED after 5 good events: event 6 is missing (deleted)\n"


def test_verify_catches_a_truncated_tail_with_a_fixed_head(
    cli: Cli, ctx: Context, trail: AuditTrail
) -> None:
    last_kept = trail.list()[6]
    with ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 7))
        conn.execute(update(audit_head).values(seq=7, hash=last_kept.hash))

    code, _, err = cli("audit", "verify")

    assert code == 1
    assert err == (
        "FAILED after 7 good events: the signed head covers 10 events but the chain holds only "
        "7: the tail was truncated\n"
    )


def test_verify_json(cli: Cli, ctx: Context, trail: AuditTrail) -> None:
    code, out, _ = cli("audit", "verify", "--json")
    good = json.loads(out)
    with ctx.db.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 2).values(roles="auditor"))
    bad_code, bad_out, _ = cli("audit", "verify", "--json")
    bad = json.loads(bad_out)

    assert code == 0
    assert (good["ok"], good["events_checked"], good["problems"]) == (True, 10, [])
    assert good["witness"]["seq"] == 10
    assert bad_code == 1
    assert (bad["ok"], bad["events_checked"]) == (False, 1)
    assert bad["problems"][0]["seq"] == 2


# export and verify --file ----------------------------------------------------------------------
def test_export_writes_header_every_event_and_a_signed_head(
    cli: Cli, trail: AuditTrail, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"

    code, out, _ = cli("audit", "export", str(path))

    assert (code, out) == (0, f"Exported 10 events to {path}\n")
    records = _lines(path)
    assert records[0]["type"] == "header"
    assert records[0]["format"] == "civicml-audit/2"
    assert records[0]["public_key"] == trail.signer.public_key_hex()
    assert [r["seq"] for r in records if r["type"] == "event"] == list(range(1, 11))
    assert [r["hash"] for r in records if r["type"] == "event"] == [e.hash for e in trail.list()]
    assert records[-1]["type"] == "signed_head"
    assert (records[-1]["seq"], records[-1]["hash"]) == (10, trail.list()[-1].hash)


def test_verify_file_passes_on_an_export(cli: Cli, trail: AuditTrail, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert cli("audit", "export", str(path))[0] == 0

    assert cli("audit", "verify", "--file", str(path)) == (
        0,
        "OK: 10 audit events verified, signed head at event 10.\n",
        "",
    )


def test_verify_file_fails_after_an_event_line_is_edited(
    cli: Cli, trail: AuditTrail, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    cli("audit", "export", str(path))
    records = _lines(path)
    event = records[8]  # event 8, run.failed
    event["after"] = json.dumps({"status": "finished"}, separators=(",", ":"))
    _write(path, records)

    code, _, err = cli("audit", "verify", "--file", str(path))

    assert code == 1
    assert err == (
        f"FAILED after 7 good events: event 8 (run.failed on run {event['entity_id']}) was "
        f"edited: its content no longer matches its hash (event id {event['id']})\n"
    )


def test_verify_file_fails_after_event_lines_are_dropped(
    cli: Cli, trail: AuditTrail, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    cli("audit", "export", str(path))
    records = _lines(path)
    _write(path, [r for r in records if r.get("seq") != 3 or r["type"] != "event"])

    code, _, err = cli("audit", "verify", "--file", str(path))

    assert code == 1
    assert err == "FAILED after 2 good events: event 3 is missing (deleted)\n"


def test_verify_file_that_is_not_json_is_bad_input(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("not json\n", encoding="utf-8")

    code, _, err = cli("audit", "verify", "--file", str(path))

    assert code == 2
    assert err.startswith(f"Error: {path}: line 1 is not JSON")


# Forged exports and the key verify --file checks against ---------------------------------------
def _forged_export(cli: Cli, at: Path, path: Path) -> None:
    """Export from ``at``, rewrite event 2, recompute the chain and re-sign with a foreign key."""
    assert cli("audit", "export", str(path), at=at)[0] == 0
    records = _lines(path)
    forger = Ed25519PrivateKey.generate()
    public = forger.public_key().public_bytes_raw().hex()
    header = {**records[0], "public_key": public}
    events = [r for r in records if r["type"] == "event"]
    events[1]["actor"] = "mallory"
    prev = "0" * 64
    for event in events:
        event["prev_hash"] = prev
        fields = {k: v for k, v in event.items() if k not in ("type", "hash")}
        for key in ("before", "after"):  # hashed as canonical text, exported as objects
            if isinstance(fields[key], dict):
                fields[key] = canonical_json(fields[key])
        event["hash"] = prev = event_hash(fields)
    signed_at = "2026-01-01T00:00:00.000000+00:00"
    message = f"civicml-audit-head\n{len(events)}\n{prev}\n{signed_at}".encode()
    head = {
        "type": "signed_head",
        "seq": len(events),
        "hash": prev,
        "signed_at": signed_at,
        "public_key": public,
        "signature": forger.sign(message).hex(),
    }
    _write(path, [header, *events, head])


@pytest.fixture
def site(tmp_path: Path, principal: Principal) -> Iterator[Path]:
    """A second installation with its own home and key, holding ten events."""
    settings = Settings.load(home=tmp_path / "site")
    context = make_context(settings, principal, FrozenClock())
    populate(context)
    yield settings.home
    context.db.close()


def test_verify_file_rejects_a_re_signed_export_of_this_installation(
    cli: Cli, home: Path, trail: AuditTrail, tmp_path: Path
) -> None:
    path = tmp_path / "forged.jsonl"
    _forged_export(cli, home, path)

    code, _, err = cli("audit", "verify", "--file", str(path))

    assert code == 1
    assert err == (
        "FAILED after 10 good events: a signed head in the export has an invalid signature\n"
    )


def test_verify_file_checks_against_the_key_of_home_given_on_the_command_line(
    cli: Cli, site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "forged.jsonl"
    _forged_export(cli, site, path)

    code, _, err = cli("audit", "verify", "--file", str(path), at=site)

    assert code == 1
    assert "invalid signature" in err


def test_verify_file_checks_against_the_key_of_civicml_home(
    cli: Cli, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "forged.jsonl"
    _forged_export(cli, site, path)
    monkeypatch.setenv("CIVICML_HOME", str(site))

    code, _, err = cli("audit", "verify", "--file", str(path), at=site)

    assert code == 1
    assert "invalid signature" in err


# list ------------------------------------------------------------------------------------------
def test_list_json_and_filters(cli: Cli, trail: AuditTrail) -> None:
    code, out, _ = cli("audit", "list", "--json")
    events = json.loads(out)
    run_id = events[7]["entity_id"]

    assert code == 0
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert {(e["actor"], tuple(e["roles"])) for e in events} == {("alice", ("admin",))}
    assert [e["seq"] for e in json.loads(cli("audit", "list", "-p", "p2", "--json")[1])] == [9]
    filtered = cli("audit", "list", "--action", "project.created", "--after", "1", "--json")
    assert [e["project"] for e in json.loads(filtered[1])] == ["p2", "p3"]
    by_entity = json.loads(cli("audit", "list", "--entity", run_id, "--json")[1])
    assert [e["action"] for e in by_entity] == ["run.created", "run.params_logged", "run.failed"]
    assert len(json.loads(cli("audit", "list", "--limit", "3", "--json")[1])) == 3


def test_list_table(cli: Cli, trail: AuditTrail) -> None:
    code, out, _ = cli("audit", "list", "-p", "p3")

    assert code == 0
    assert "Audit events" in out
    assert "project.created" in out
    assert "alice" in out


def test_cli_writes_record_the_user_given_with_user(cli: Cli, home: Path) -> None:
    assert main(["--home", str(home), "--user", "bob", "projects", "create", "by-bob"]) == 0

    code, out, _ = cli("audit", "list", "--json")

    (event,) = json.loads(out)
    assert code == 0
    assert (event["actor"], event["action"], event["project"]) == (
        "bob",
        "project.created",
        "by-bob",
    )
    assert cli("audit", "verify")[0] == 0


# Warnings, a second home, a damaged database (issue 8) -----------------------------------------
def test_verify_prints_events_whose_clock_went_backwards_as_warnings(
    cli: Cli, ctx: Context, trail: AuditTrail, principal: Principal
) -> None:
    slow = make_context(ctx.settings, principal, FrozenClock(datetime(2025, 12, 31, tzinfo=UTC)))
    ProjectService(slow).create("late")
    slow.db.close()
    late = trail.list(project="late")[0]

    code, out, err = cli("audit", "verify")

    assert code == 0
    assert out == "OK: 11 audit events verified, signed head at event 11.\n"
    assert err == (
        f"Warning: event 11 (id {late.id}) is timestamped 2025-12-31T00:00:00.000000+00:00, "
        "24 h before event 10 (2026-01-01T00:00:00.000000+00:00) earlier in the chain: the "
        "clock of the process that wrote it may be wrong.\n"
    )
    warnings = json.loads(cli("audit", "verify", "--json")[1])["warnings"]
    assert [(w["kind"], w["seq"], w["event_id"]) for w in warnings] == [
        ("clock_went_backwards", 11, late.id)
    ]


def test_verify_from_a_second_home_says_it_holds_no_witness(
    cli: Cli, ctx: Context, trail: AuditTrail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "second-home"
    monkeypatch.setenv("CIVICML_DB_URL", ctx.settings.database_url)  # the same database

    code, out, err = cli("audit", "verify", at=second)
    as_json = json.loads(cli("audit", "verify", "--json", at=second)[1])

    assert (code, out) == (1, "")
    assert err.startswith(
        "UNVERIFIED, not a tamper verdict: this civicml home holds no witness (signed chain "
        "head) for the audit chain"
    )
    assert "FAILED" not in err
    assert "Verify from that home, or copy its audit/witness.json" in err
    assert (as_json["ok"], as_json["verdict"], as_json["events_checked"]) == (
        False,
        "unwitnessed",
        10,
    )


def test_verify_file_accepts_the_old_double_encoded_export(
    cli: Cli, trail: AuditTrail, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    cli("audit", "export", str(path))
    records = _lines(path)
    for record in records:  # civicml-audit/1: before/after were JSON text inside the line
        for key in ("before", "after"):
            if record["type"] == "event" and record[key] is not None:
                record[key] = canonical_json(record[key])
    _write(path, records)

    assert cli("audit", "verify", "--file", str(path)) == (
        0,
        "OK: 10 audit events verified, signed head at event 10.\n",
        "",
    )


def test_verify_on_a_damaged_database_fails_with_error_and_hint(
    cli: Cli, ctx: Context, trail: AuditTrail
) -> None:
    ctx.db.close()
    corrupt_audit_table(ctx.settings.home / "civicml.db")

    code, out, err = cli("audit", "verify")
    list_code, _, list_err = cli("audit", "list")

    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == (
        "Error: The audit trail could not be verified: the metadata database is damaged "
        "(SQLite: database disk image is malformed). Verification fails until it is repaired."
    )
    assert lines[1].startswith("Hint: Stop writers, restore the database from a backup")
    assert "Traceback" not in err
    assert list_code == 1
    assert list_err.startswith("Error: The audit trail could not be listed")
