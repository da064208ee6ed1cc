"""Tampering with the audit chain, as someone with database access would, on SQLite and PostgreSQL.

Each test edits rows of ``audit_events`` / ``audit_head`` directly through the engine (no service
involved) and checks that ``AuditTrail.verify`` names the first tampered event and what happened.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, delete, select, update

from civicml.core import ConfigurationError
from civicml.governance import AuditTrail, ProjectService, SignedHead
from civicml.governance._tables import audit_events, audit_head
from civicml.governance.audit import GENESIS, event_hash
from civicml.store import Context

HASHED = (
    "seq",
    "id",
    "at",
    "actor",
    "roles",
    "action",
    "entity_kind",
    "entity_id",
    "project",
    "before",
    "after",
    "prev_hash",
)


# Attacker helpers (raw SQL through the engine) ----------------------------------------------
def _row(conn: Connection, seq: int) -> Any:
    return conn.execute(select(audit_events).where(audit_events.c.seq == seq)).one()


def _set_head(conn: Connection, seq: int) -> None:
    """Point audit_head at event ``seq`` so the database is self-consistent again."""
    digest = GENESIS if seq == 0 else _row(conn, seq).hash
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))


def _edit(ctx: Context, seq: int, **values: Any) -> None:
    with ctx.db.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == seq).values(**values))


def _truncate(ctx: Context, keep: int) -> None:
    """Delete every event after ``keep`` and fix up the head row to match."""
    with ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > keep))
        _set_head(conn, keep)


def _recompute_from(ctx: Context, start: int, **values: Any) -> None:
    """Rewrite event ``start`` and recompute every hash from there on, then move the head."""
    with ctx.db.engine.begin() as conn:
        if values:
            conn.execute(update(audit_events).where(audit_events.c.seq == start).values(**values))
        prev = GENESIS if start == 1 else _row(conn, start - 1).hash
        rows = conn.execute(
            select(audit_events).where(audit_events.c.seq >= start).order_by(audit_events.c.seq)
        ).all()
        for row in rows:
            fields = {name: getattr(row, name) for name in HASHED}
            fields["seq"] = int(fields["seq"])
            fields["prev_hash"] = prev
            prev = event_hash(fields)
            conn.execute(
                update(audit_events)
                .where(audit_events.c.seq == row.seq)
                .values(prev_hash=fields["prev_hash"], hash=prev)
            )
        _set_head(conn, int(rows[-1].seq))


def _problem(ctx: Context) -> tuple[int, str]:
    report = AuditTrail(ctx).verify()
    assert not report.ok
    assert report.problems
    return report.problems[0].seq, report.problems[0].reason


# The untouched chain ---------------------------------------------------------------------------
def test_untouched_chain_verifies(any_ctx: Context, events: int) -> None:
    report = AuditTrail(any_ctx).verify()

    assert report.ok, report.problems
    assert report.problems == []
    assert report.events_checked == events
    assert report.head_seq == events
    assert report.witness is not None
    assert report.witness.seq == events
    assert report.witness.hash == report.head_hash


def test_empty_chain_verifies(any_ctx: Context) -> None:
    report = AuditTrail(any_ctx).verify()

    assert report.ok
    assert (report.events_checked, report.head_seq, report.witness) == (0, 0, None)


# 1. Editing one event --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values",
    [
        {"actor": "mallory"},
        {"after": json.dumps({"params": {"lr": "0.9"}}, separators=(",", ":"))},
        {"roles": "auditor"},
        {"at": "2025-12-31T00:00:00.000000+00:00"},
        {"project": None},
    ],
    ids=["actor", "after-json", "roles", "at", "project"],
)
def test_editing_an_event_is_detected(
    any_ctx: Context, events: int, values: dict[str, Any]
) -> None:
    original = _row_of(any_ctx, 4)
    _edit(any_ctx, 4, **values)

    seq, reason = _problem(any_ctx)

    assert seq == 4
    assert reason == (
        f"event 4 (run.params_logged on run {original.entity_id}) was edited: its content no "
        "longer matches its hash"
    )
    assert AuditTrail(any_ctx).verify().problems[0].event_id == original.id


def test_editing_the_first_event_is_detected(any_ctx: Context, events: int) -> None:
    _edit(any_ctx, 1, actor="mallory")

    report = AuditTrail(any_ctx).verify()

    assert not report.ok
    assert report.events_checked == 0
    assert report.problems[0].seq == 1
    assert "was edited" in report.problems[0].reason


def _row_of(ctx: Context, seq: int) -> Any:
    with ctx.db.engine.connect() as conn:
        return _row(conn, seq)


# 2. Deleting an event --------------------------------------------------------------------------
def test_deleting_an_event_in_the_middle_is_detected(any_ctx: Context, events: int) -> None:
    with any_ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 5))

    report = AuditTrail(any_ctx).verify()

    assert not report.ok
    assert report.events_checked == 4
    assert report.problems[0].seq == 5
    assert report.problems[0].event_id is None
    assert report.problems[0].reason == "event 5 is missing (deleted)"


def test_deleting_an_event_and_renumbering_the_rest_is_detected(
    any_ctx: Context, events: int
) -> None:
    with any_ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 5))
        for seq in range(6, events + 1):
            conn.execute(update(audit_events).where(audit_events.c.seq == seq).values(seq=seq - 1))
        _set_head(conn, events - 1)

    seq, reason = _problem(any_ctx)

    assert seq == 5
    assert reason.startswith("event 5 does not follow event 4")


# 3. Reordering -----------------------------------------------------------------------------------
def test_swapping_seq_values_is_detected(any_ctx: Context, events: int) -> None:
    with any_ctx.db.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 6).values(seq=-1))
        conn.execute(update(audit_events).where(audit_events.c.seq == 7).values(seq=6))
        conn.execute(update(audit_events).where(audit_events.c.seq == -1).values(seq=7))

    seq, reason = _problem(any_ctx)

    assert seq == 6
    assert reason == (
        "event 6 does not follow event 5: the chain was reordered, or an event before it was "
        "deleted or replaced"
    )


def test_swapping_the_content_of_two_rows_is_detected(any_ctx: Context, events: int) -> None:
    with any_ctx.db.engine.begin() as conn:
        third, fourth = _row(conn, 3)._mapping, _row(conn, 4)._mapping
        content = [c for c in audit_events.c.keys() if c not in ("seq", "id")]
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(id="tmp"))
        conn.execute(
            update(audit_events)
            .where(audit_events.c.seq == 4)
            .values(id=third["id"], **{c: third[c] for c in content})
        )
        conn.execute(
            update(audit_events)
            .where(audit_events.c.seq == 3)
            .values(id=fourth["id"], **{c: fourth[c] for c in content})
        )

    seq, reason = _problem(any_ctx)

    assert seq == 3
    assert "does not follow event 2: the chain was reordered" in reason


# 4. Truncating the tail --------------------------------------------------------------------------
def test_truncated_tail_with_fixed_head_is_caught_by_the_witness(
    any_ctx: Context, events: int
) -> None:
    _truncate(any_ctx, keep=7)

    report = AuditTrail(any_ctx).verify()

    assert not report.ok
    assert report.events_checked == 7  # the remaining chain and head row are self-consistent
    assert report.problems[0].seq == 8
    assert report.problems[0].reason == (
        f"the signed head covers {events} events but the chain holds only 7: the tail was truncated"
    )


def test_wiping_every_event_and_the_head_is_caught_by_the_witness(
    any_ctx: Context, events: int
) -> None:
    with any_ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events))
        conn.execute(delete(audit_head))

    seq, reason = _problem(any_ctx)

    assert seq == 1
    assert reason == (
        f"the signed head covers {events} events but the chain holds only 0: the tail was truncated"
    )
    with pytest.raises(
        ConfigurationError,
        match=re.escape("The audit chain head row is missing: the audit_head table was emptied."),
    ):
        ProjectService(any_ctx).create("after-the-wipe")
    with any_ctx.db.engine.connect() as conn:
        assert conn.execute(select(audit_events.c.seq)).all() == []


def test_truncated_tail_without_fixing_the_head_is_caught_by_the_head_row(
    any_ctx: Context, events: int
) -> None:
    with any_ctx.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 7))

    report = AuditTrail(any_ctx).verify()

    assert not report.ok
    assert report.problems[0].seq == 8
    assert report.problems[0].reason == (
        f"the chain ends at event 7 but the recorded head is event {events}: events 8 to "
        f"{events} were deleted"
    )


def test_an_altered_head_row_is_detected(any_ctx: Context, events: int) -> None:
    with any_ctx.db.engine.begin() as conn:
        _set_head(conn, 4)

    seq, reason = _problem(any_ctx)

    assert seq == 4
    assert reason == (
        f"the recorded chain head (event 4) does not match the chain, which ends at event "
        f"{events}: the head row was altered"
    )


# 5. Recomputing the chain ------------------------------------------------------------------------
def test_recomputed_chain_is_caught_by_the_witness(any_ctx: Context, events: int) -> None:
    _recompute_from(any_ctx, 4, actor="mallory")

    report = AuditTrail(any_ctx).verify()

    assert not report.ok
    # The rows and the head are self-consistent; only the signed head outside the DB disagrees,
    # and it can only point at the head event, not at the rewritten one.
    assert report.events_checked == events
    assert report.problems[0].seq == events
    assert report.problems[0].reason == (
        f"event {events} differs from the signed head: the chain was rewritten and its hashes "
        "recomputed"
    )


def test_recomputing_helper_reproduces_real_hashes(any_ctx: Context, events: int) -> None:
    """The attacker's recomputation is faithful: recomputing without an edit changes nothing."""
    before = [e.hash for e in AuditTrail(any_ctx).list()]

    _recompute_from(any_ctx, 1)

    assert [e.hash for e in AuditTrail(any_ctx).list()] == before
    assert AuditTrail(any_ctx).verify().ok


# 6. The witness file -----------------------------------------------------------------------------
def test_forged_witness_seq_and_hash_is_detected(any_ctx: Context, events: int) -> None:
    """Truncate, fix the head, and move the witness back to match — without the private key."""
    _truncate(any_ctx, keep=7)
    path = any_ctx.settings.witness_path
    witness = json.loads(path.read_text())
    witness.update(seq=7, hash=_row_of(any_ctx, 7).hash)
    path.write_text(json.dumps(witness))

    seq, reason = _problem(any_ctx)

    assert seq == 7
    assert reason == (
        "the signed head's signature is invalid (the witness file was altered or signed by "
        "another key)"
    )


def test_witness_signed_by_another_key_is_detected(any_ctx: Context, events: int) -> None:
    _recompute_from(any_ctx, 2, actor="mallory")
    forger = Ed25519PrivateKey.generate()
    head = _row_of(any_ctx, events)
    signed_at = "2026-01-01T00:00:00.000000+00:00"
    message = f"civicml-audit-head\n{events}\n{head.hash}\n{signed_at}".encode()
    forged = SignedHead(
        seq=events,
        hash=head.hash,
        signed_at=signed_at,
        public_key=forger.public_key().public_bytes_raw().hex(),
        signature=forger.sign(message).hex(),
    )
    any_ctx.settings.witness_path.write_text(forged.model_dump_json())

    seq, reason = _problem(any_ctx)

    assert seq == events
    assert "signature is invalid" in reason


def test_missing_witness_is_reported(any_ctx: Context, events: int) -> None:
    path = any_ctx.settings.witness_path
    path.unlink()

    report = AuditTrail(any_ctx).verify()

    assert (report.ok, report.verdict) == (False, "unwitnessed")
    [problem] = report.problems
    assert problem.seq == events
    assert problem.reason.startswith(
        "UNVERIFIED, not a tamper verdict: this civicml home holds no witness (signed chain head) "
        "for the audit chain, so a truncated tail or a recomputed chain cannot be ruled out; "
        f"the chain's {events} events do link correctly."
    )
    assert "copy its audit/witness.json and keys/audit-ed25519.pub into this home" in (
        problem.reason
    )
    assert str(path.parent) not in problem.reason  # no server path in what REST returns


def test_corrupt_witness_file_is_reported_not_raised(any_ctx: Context, events: int) -> None:
    path = any_ctx.settings.witness_path
    path.write_text('{"seq": 10, "hash": ')

    seq, reason = _problem(any_ctx)

    assert seq == events
    assert reason == (
        "The audit witness (audit/witness.json in the civicml home) is unreadable or was altered."
    )


# Tampering followed by ordinary use ------------------------------------------------------------
def _witness_seq(ctx: Context) -> int:
    return int(json.loads(ctx.settings.witness_path.read_text())["seq"])


def test_truncation_stays_detected_after_later_writes(any_ctx: Context, events: int) -> None:
    """Honest writes after the tampering succeed but do not re-sign the truncated chain."""
    _truncate(any_ctx, keep=7)
    for name in ("later-1", "later-2", "later-3", "later-4"):
        ProjectService(any_ctx).create(name)

    report = AuditTrail(any_ctx).verify()

    assert _witness_seq(any_ctx) == events
    assert [e.project for e in AuditTrail(any_ctx).list(after_seq=7)] == [
        "later-1",
        "later-2",
        "later-3",
        "later-4",
    ]
    assert not report.ok
    assert report.problems[0].seq == events
    assert "differs from the signed head" in report.problems[0].reason


def test_recomputed_chain_stays_detected_after_a_later_write(any_ctx: Context, events: int) -> None:
    _recompute_from(any_ctx, 4, actor="mallory")
    ProjectService(any_ctx).create("later")

    report = AuditTrail(any_ctx).verify()

    assert _witness_seq(any_ctx) == events
    assert not report.ok
    assert report.problems[0].seq == events
    assert "the chain was rewritten and its hashes recomputed" in report.problems[0].reason
