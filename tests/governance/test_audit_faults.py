"""The audit trail under faults a real installation meets: a writer with a wrong clock, a
damaged database page, a second home without the witness, exports of the old format."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from civicml.core import FrozenClock, Principal, Settings
from civicml.core.errors import ServiceUnavailableError
from civicml.governance import AuditTrail, ProjectService, verify_export
from civicml.governance.audit import _exported_fields, canonical_json
from civicml.store import Context
from tests.conftest import make_context
from tests.governance.helpers import corrupt_audit_table, populate

START = datetime(2026, 1, 1, tzinfo=UTC)  # the FrozenClock's time
_HOUR = timedelta(hours=1)


# (a) Timestamps that go backwards ------------------------------------------------------------
def test_events_whose_clock_went_backwards_are_warnings_not_failures(
    any_ctx: Context, principal: Principal
) -> None:
    populate(any_ctx)  # events 1-10 at START
    slow = make_context(any_ctx.settings, principal, FrozenClock(START - _HOUR))
    ProjectService(slow).create("late")  # event 11, an hour in the past
    ProjectService(any_ctx).create("on-time")  # event 12, at START again
    slow.db.close()
    late = AuditTrail(any_ctx).list(action="project.created", project="late")[0]

    report = AuditTrail(any_ctx).verify()

    assert (report.ok, report.verdict, report.events_checked) == (True, "verified", 12)
    assert [(w.kind, w.seq, w.event_id) for w in report.warnings] == [
        ("clock_went_backwards", 11, late.id)
    ]
    assert report.warnings[0].message == (
        f"event 11 (id {late.id}) is timestamped 2025-12-31T23:00:00.000000+00:00, 1 h before "
        "event 10 (2026-01-01T00:00:00.000000+00:00) earlier in the chain: the clock of the "
        "process that wrote it may be wrong"
    )


def test_an_export_reports_the_same_warnings(ctx: Context, principal: Principal) -> None:
    populate(ctx)
    slow = make_context(ctx.settings, principal, FrozenClock(START - _HOUR))
    ProjectService(slow).create("late")
    slow.db.close()
    path = ctx.settings.home / "audit.jsonl"
    AuditTrail(ctx).export(path)

    report = verify_export(path)

    assert report.ok
    assert [(w.kind, w.seq) for w in report.warnings] == [("clock_went_backwards", 11)]


def test_warnings_are_capped_with_a_count(ctx: Context, principal: Principal) -> None:
    ProjectService(ctx).create("first")
    slow = make_context(ctx.settings, principal, FrozenClock(START - _HOUR))
    for number in range(105):
        ProjectService(slow).create(f"late-{number}")
    slow.db.close()

    warnings = AuditTrail(ctx).verify().warnings

    assert len(warnings) == 101
    assert {w.kind for w in warnings[:100]} == {"clock_went_backwards"}
    assert (warnings[100].kind, warnings[100].message) == (
        "more_warnings",
        "5 more warning(s) of the same kind were left out",
    )


# (b) A damaged database page ------------------------------------------------------------------
def test_a_damaged_audit_table_fails_verification_with_a_clear_503(
    settings: Settings, principal: Principal, clock: FrozenClock
) -> None:
    ctx = make_context(settings, principal, clock)
    populate(ctx)
    ctx.db.close()
    corrupt_audit_table(settings.home / "civicml.db")
    damaged = make_context(settings, principal, clock)  # the store still opens
    trail = AuditTrail(damaged)

    message = re.escape(
        "The audit trail could not be verified: the metadata database is damaged "
        "(SQLite: database disk image is malformed). Verification fails until it is repaired."
    )
    with pytest.raises(ServiceUnavailableError, match=message) as err:
        trail.verify()
    with pytest.raises(ServiceUnavailableError, match="could not be listed"):
        trail.list()
    with pytest.raises(ServiceUnavailableError, match="could not be exported"):
        trail.export(settings.home / "audit.jsonl")
    with pytest.raises(ServiceUnavailableError, match="could not be recorded"):
        ProjectService(damaged).create("after-damage")
    damaged.db.close()

    assert err.value.status == 503
    assert "PRAGMA integrity_check" in (err.value.hint or "")
    assert str(settings.home) not in err.value.message + (err.value.hint or "")
    assert not (settings.home / "audit.jsonl").exists()


# (c) The export holds objects; the old double-encoded format still verifies ---------------------
def test_an_export_holds_before_and_after_as_objects(ctx: Context) -> None:
    populate(ctx)
    path = ctx.settings.home / "audit.jsonl"
    AuditTrail(ctx).export(path)

    records = [json.loads(line) for line in path.read_text().splitlines()]
    events = [r for r in records if r["type"] == "event"]

    assert records[0]["format"] == "civicml-audit/2"
    assert events[0]["after"] == {"description": "first", "name": "p1"}
    assert all(e["after"] is None or isinstance(e["after"], dict) for e in events)
    assert verify_export(path, AuditTrail(ctx).signer).ok


def test_an_export_of_the_old_format_still_verifies(ctx: Context) -> None:
    populate(ctx)
    path = ctx.settings.home / "audit.jsonl"
    AuditTrail(ctx).export(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:  # as civicml-audit/1 wrote them: JSON text inside the line
        if record["type"] == "event":
            for key in ("before", "after"):
                if record[key] is not None:
                    record[key] = canonical_json(record[key])
        elif record["type"] == "header":
            record["format"] = "civicml-audit/1"
    old = ctx.settings.home / "old.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in records))

    assert verify_export(old, AuditTrail(ctx).signer).ok
    assert (
        json.loads(old.read_text().splitlines()[1])["after"]
        == '{"description":"first","name":"p1"}'
    )


def test_an_event_whose_text_is_not_canonical_is_exported_as_the_text() -> None:
    row = SimpleNamespace(
        seq=1,
        id="e",
        at="t",
        actor="a",
        roles="",
        action="x",
        entity_kind="k",
        entity_id="i",
        project=None,
        before='{"b": 1, "a": 2}',  # not canonical: exporting the object would change the bytes
        after='{"a":2,"b":1}',
        prev_hash="0" * 64,
    )

    fields = _exported_fields(row)

    assert (fields["before"], fields["after"]) == ('{"b": 1, "a": 2}', {"a": 2, "b": 1})


# (d) A second home on the same database ----------------------------------------------------------
def test_a_second_home_without_the_witness_is_unverified_not_tampered(
    any_ctx: Context, principal: Principal, clock: FrozenClock, tmp_path: Path
) -> None:
    populate(any_ctx)
    second = Settings.load(home=tmp_path / "second-home", db_url=any_ctx.settings.database_url)
    other = make_context(second, principal, clock)

    unwitnessed = AuditTrail(other).verify()
    (second.home / "audit").mkdir(parents=True)
    (second.home / "keys").mkdir()
    shutil.copy(any_ctx.settings.witness_path, second.witness_path)
    source_key = any_ctx.settings.audit_key_path
    shutil.copy(source_key.with_suffix(".pub"), second.audit_key_path.with_suffix(".pub"))
    witnessed = AuditTrail(other).verify()
    other.db.close()

    assert (unwitnessed.ok, unwitnessed.verdict, unwitnessed.events_checked) == (
        False,
        "unwitnessed",
        10,
    )
    assert unwitnessed.problems[0].reason.startswith("UNVERIFIED, not a tamper verdict")
    assert (witnessed.ok, witnessed.verdict, witnessed.witness.seq) == (True, "verified", 10)  # type: ignore[union-attr]
