"""Tests of the audit trail (``civicml.governance.audit``): recording, reading, the signed witness,
the export, the same-transaction guarantee and concurrent appenders."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import math
import os
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError

from civicml.core import ConflictError, FrozenClock, Principal, Settings
from civicml.governance import AuditSigner, AuditTrail, ProjectService, SignedHead, verify_export
from civicml.governance._tables import audit_events, audit_head, projects
from civicml.governance.audit import GENESIS, canonical_json, event_hash
from civicml.store import Context
from tests.conftest import make_context
from tests.governance.helpers import populate

ACTIONS = [
    "project.created",
    "experiment.created",
    "run.created",
    "run.params_logged",
    "run.finished",
    "run.created",
    "run.params_logged",
    "run.failed",
    "project.created",
    "project.created",
]


def _head_row(ctx: Context) -> tuple[int, str] | None:
    with ctx.db.read() as conn:
        row = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
    return None if row is None else (int(row.seq), row.hash)


def _count(ctx: Context) -> int:
    with ctx.db.read() as conn:
        return len(conn.execute(select(audit_events.c.seq)).all())


# Recording -------------------------------------------------------------------------------------
def test_services_record_one_event_per_change_with_principal_and_project(ctx: Context) -> None:
    populate(ctx)

    events = AuditTrail(ctx).list()

    assert [e.action for e in events] == ACTIONS
    assert [e.seq for e in events] == list(range(1, 11))
    assert {e.actor for e in events} == {"alice"}
    assert {tuple(e.roles) for e in events} == {("admin",)}
    assert [e.project for e in events] == ["p1"] * 8 + ["p2", "p3"]
    assert events[0].entity_kind == "project"
    assert events[0].after == {"description": "first", "name": "p1"}
    assert events[3].after == {"params": {"depth": "3", "lr": "0.1"}}
    assert (events[7].before, events[7].after) == ({"status": "running"}, {"status": "failed"})
    assert events[0].at == "2026-01-01T00:00:00.000000+00:00"


def test_each_event_hashes_its_fields_and_links_to_the_one_before(ctx: Context) -> None:
    populate(ctx)

    events = AuditTrail(ctx).list()

    assert events[0].prev_hash == GENESIS
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash
    with ctx.db.read() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
    for row in rows:
        fields = {k: v for k, v in row._mapping.items() if k != "hash"}
        assert event_hash(fields) == row.hash


def test_canonical_json_is_the_generic_encoders_text() -> None:
    """What canonical_json writes (and event_hash hashes) is exactly the configured generic
    encoder's text, or verify would fail on old chains."""
    generic = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )
    texts = ["", "plain", 'q"uote\\', "line\nbreak\t\x00\x1f", "é ünïcode \u2028 \U0001f600"]
    names = ["id", "at", "actor", "roles", "action", "entity_kind", "entity_id", "project"]
    for n, text_ in enumerate(texts):
        fields: dict[str, Any] = {name: f"{text_}{i}" for i, name in enumerate(names)}
        fields |= {"seq": 10**n, "before": None, "after": text_, "prev_hash": GENESIS}
        assert canonical_json(fields) == generic.encode(fields)
        assert event_hash(fields) == hashlib.sha256(generic.encode(fields).encode()).hexdigest()
    value = {"b": [1, None, True, 2.5, -0.0, 1e300], "a": {"y": "é", "x": date(2026, 1, 2)}}
    assert canonical_json(value) == generic.encode(value)
    assert canonical_json("text") == generic.encode("text")
    assert canonical_json(None) == "null"
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": math.nan})
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json([math.inf])


def test_events_record_the_acting_principal_and_sorted_roles(ctx: Context) -> None:
    bob = ctx.as_principal(Principal(user="bob", roles=frozenset({"auditor", "admin"})))

    ProjectService(bob).create("by-bob")

    (event,) = AuditTrail(ctx).list()
    assert (event.actor, event.roles, event.project) == ("bob", ["admin", "auditor"], "by-bob")


def test_events_record_the_clock_time(ctx: Context, clock: FrozenClock) -> None:
    clock.advance(hours=3, microseconds=5)

    ProjectService(ctx).create("later")

    assert AuditTrail(ctx).list()[0].at == "2026-01-01T03:00:00.000005+00:00"


# Reading ---------------------------------------------------------------------------------------
def test_list_filters(ctx: Context) -> None:
    populate(ctx)
    trail = AuditTrail(ctx)
    run_id = trail.list(action="run.failed")[0].entity_id

    assert [e.seq for e in trail.list(project="p2")] == [9]
    assert [e.seq for e in trail.list(project="p1", entity_kind="experiment")] == [2]
    assert [e.action for e in trail.list(entity_id=run_id)] == [
        "run.created",
        "run.params_logged",
        "run.failed",
    ]
    assert [e.seq for e in trail.list(action="project.created")] == [1, 9, 10]
    assert [e.seq for e in trail.list(after_seq=8)] == [9, 10]
    assert [e.seq for e in trail.list(after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in trail.list(limit=0)] == [1]  # at least one
    assert trail.list(project="nope") == []
    assert trail.list(after_seq=10) == []


# The same transaction ----------------------------------------------------------------------------
def test_a_failed_change_leaves_no_event_no_head_and_no_witness(any_ctx: Context) -> None:
    populate(any_ctx)
    trail = AuditTrail(any_ctx)
    witness = any_ctx.settings.witness_path.read_bytes()
    head = _head_row(any_ctx)

    with pytest.raises(RuntimeError, match="state change failed"), any_ctx.db.write() as uow:
        trail.record(uow, "thing.changed", "thing", "t1", project="p1", after={"x": 1})
        raise RuntimeError("state change failed")

    assert _count(any_ctx) == 10
    assert _head_row(any_ctx) == head
    assert any_ctx.settings.witness_path.read_bytes() == witness
    assert trail.verify().ok


def test_a_state_change_failing_after_the_record_rolls_the_record_back(any_ctx: Context) -> None:
    populate(any_ctx)
    trail = AuditTrail(any_ctx)
    witness = any_ctx.settings.witness_path.read_bytes()
    existing = ProjectService(any_ctx).get("p1", "projects.read")

    with pytest.raises(IntegrityError), any_ctx.db.write() as uow:
        trail.record(uow, "project.created", "project", "dup", project="p1")
        uow.conn.execute(insert(projects).values(**existing.model_dump()))  # duplicate key

    assert _count(any_ctx) == 10
    assert _head_row(any_ctx) == (10, trail.list()[-1].hash)
    assert any_ctx.settings.witness_path.read_bytes() == witness
    # The next event takes the seq the rolled-back one would have had.
    ProjectService(any_ctx).create("next")
    assert trail.list(after_seq=10)[0].seq == 11
    assert trail.verify().ok


def test_several_records_in_one_transaction_sign_the_last_head_once(ctx: Context) -> None:
    trail = AuditTrail(ctx)

    with ctx.db.write() as uow:
        for n in range(3):
            trail.record(uow, "thing.changed", "thing", f"t{n}")
        assert not ctx.settings.witness_path.exists()  # signed only after commit

    report = trail.verify()
    assert report.ok
    assert report.witness is not None
    assert (report.witness.seq, report.witness.hash) == (3, trail.list()[-1].hash)


def test_a_head_committed_without_waiting_for_the_disk_is_signed_by_the_next_durable_one(
    ctx: Context,
) -> None:
    trail = AuditTrail(ctx)
    with ctx.db.write() as uow:
        trail.record(uow, "thing.changed", "thing", "t0")
    first = trail.verify().witness
    assert first is not None and first.seq == 1

    with ctx.db.write(durable=False) as uow:
        trail.record(uow, "thing.changed", "thing", "t1")
    report = trail.verify()
    # Not signed: a power cut may still undo it, and a signed head the chain lacks would read
    # as a truncated chain.
    assert report.ok
    assert report.witness is not None and report.witness.seq == 1

    with ctx.db.write() as uow:
        trail.record(uow, "thing.changed", "thing", "t2")
    report = trail.verify()
    assert report.ok
    assert report.witness is not None
    assert (report.witness.seq, report.witness.hash) == (3, trail.list()[-1].hash)


# The signing key and the witness -----------------------------------------------------------------
def test_the_key_is_created_private_and_the_witness_follows_the_head(ctx: Context) -> None:
    populate(ctx)
    signer = AuditTrail(ctx).signer

    assert stat.S_IMODE(os.stat(ctx.settings.audit_key_path).st_mode) == 0o600
    assert signer.pub_path.is_file()
    witness = signer.read_witness()
    assert witness is not None
    assert (witness.seq, witness.hash) == (10, AuditTrail(ctx).list()[-1].hash)
    assert witness.public_key == signer.public_key_hex()
    assert signer.check(witness)


def test_the_witness_never_moves_backwards(ctx: Context) -> None:
    populate(ctx)
    signer = AuditTrail(ctx).signer
    before = signer.read_witness()

    signer.advance_witness(3, "0" * 64, "2026-01-01T00:00:00.000000+00:00")

    assert signer.read_witness() == before


def test_a_head_signed_by_another_key_does_not_check(ctx: Context) -> None:
    populate(ctx)
    signer = AuditTrail(ctx).signer
    other = AuditSigner(ctx.settings.home / "other" / "key.pem", ctx.settings.home / "w.json")

    assert not signer.check(other.sign(10, "a" * 64, "2026-01-01T00:00:00.000000+00:00"))


# Verification under concurrent writers ----------------------------------------------------------
def test_verify_during_a_concurrent_append_reports_no_problem(
    any_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(any_ctx)
    trail = AuditTrail(any_ctx)
    snapshot = trail._snapshot

    @contextlib.contextmanager
    def another_writer_commits_mid_read() -> Iterator[Any]:
        with snapshot() as (head, rows):
            ProjectService(any_ctx).create("concurrent")  # commits while verify is reading
            yield head, rows

    monkeypatch.setattr(trail, "_snapshot", another_writer_commits_mid_read)

    report = trail.verify()

    assert report.ok, report.problems


def test_verify_of_a_broken_chain_closes_its_cursor(
    pg_ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(pg_ctx)
    with pg_ctx.db.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 2).values(actor="mallory"))
    leaked: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", leaked.append)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        report = AuditTrail(pg_ctx).verify()
        gc.collect()

    assert not report.ok
    assert [repr(u.exc_value) for u in leaked] == []


# Export ----------------------------------------------------------------------------------------
def _export(ctx: Context, path: Path) -> list[dict[str, Any]]:
    assert AuditTrail(ctx).export(path) == _count(ctx)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_writes_header_events_and_signed_heads(ctx: Context, tmp_path: Path) -> None:
    populate(ctx)
    trail = AuditTrail(ctx)

    records = _export(ctx, tmp_path / "audit.jsonl")

    assert [r["type"] for r in records] == ["header"] + ["event"] * 10 + ["witness", "signed_head"]
    assert records[0] == {
        "type": "header",
        "format": "civicml-audit/2",
        "public_key": trail.signer.public_key_hex(),
        "exported_at": "2026-01-01T00:00:00.000000+00:00",
    }
    events = trail.list()
    assert [r["seq"] for r in records[1:11]] == [e.seq for e in events]
    assert [r["hash"] for r in records[1:11]] == [e.hash for e in events]
    assert records[1]["actor"] == "alice"
    assert records[1]["after"] == {"description": "first", "name": "p1"}  # an object, not text
    assert records[1]["before"] is None
    signed = SignedHead.model_validate({k: v for k, v in records[-1].items() if k != "type"})
    assert (signed.seq, signed.hash) == (10, events[-1].hash)
    assert trail.signer.check(signed)
    assert not list(tmp_path.glob(".audit.jsonl.*.part"))


def test_export_verifies_offline_with_and_without_the_installation_key(
    ctx: Context, tmp_path: Path
) -> None:
    populate(ctx)
    path = tmp_path / "audit.jsonl"
    _export(ctx, path)

    for signer in (AuditTrail(ctx).signer, None):
        report = verify_export(path, signer)
        assert report.ok, report.problems
        assert (report.events_checked, report.head_seq) == (10, 10)


def test_export_with_an_edited_event_fails_verification(ctx: Context, tmp_path: Path) -> None:
    populate(ctx)
    path = tmp_path / "audit.jsonl"
    records = _export(ctx, path)
    records[5]["actor"] = "mallory"  # event 5
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    report = verify_export(path, AuditTrail(ctx).signer)

    assert not report.ok
    assert report.problems[0].seq == 5
    assert "event 5 (run.finished on run" in report.problems[0].reason
    assert report.problems[0].reason.endswith("was edited: its content no longer matches its hash")


def test_export_with_a_truncated_tail_fails_verification(ctx: Context, tmp_path: Path) -> None:
    populate(ctx)
    path = tmp_path / "audit.jsonl"
    records = _export(ctx, path)
    kept = records[:8] + records[-2:]  # events 1-7 and the signed heads
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    report = verify_export(path, AuditTrail(ctx).signer)

    assert not report.ok
    assert report.problems[0].seq == 8
    assert "the tail was truncated" in report.problems[0].reason


def test_export_without_signed_heads_fails_verification(ctx: Context, tmp_path: Path) -> None:
    populate(ctx)
    path = tmp_path / "audit.jsonl"
    records = _export(ctx, path)
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:-2]), encoding="utf-8")

    report = verify_export(path)

    assert not report.ok
    assert report.problems[0].reason == "the export carries no signed head"


def _forge(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite event 2, recompute every hash and re-sign the head with a key of our own."""
    forger = Ed25519PrivateKey.generate()
    public = forger.public_key().public_bytes_raw().hex()
    header, *events = (r for r in records if r["type"] in ("header", "event"))
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
    message = f"civicml-audit-head\n{events[-1]['seq']}\n{prev}\n{signed_at}".encode()
    head = {
        "type": "signed_head",
        "seq": events[-1]["seq"],
        "hash": prev,
        "signed_at": signed_at,
        "public_key": public,
        "signature": forger.sign(message).hex(),
    }
    return [{**header, "public_key": public}, *events, head]


def test_a_re_signed_export_fails_against_the_installation_key(
    ctx: Context, tmp_path: Path
) -> None:
    populate(ctx)
    path = tmp_path / "audit.jsonl"
    forged = _forge(_export(ctx, path))
    path.write_text("".join(json.dumps(r) + "\n" for r in forged), encoding="utf-8")

    report = verify_export(path, AuditTrail(ctx).signer)

    assert not report.ok
    assert report.problems[0].reason == "a signed head in the export has an invalid signature"
    # Without the installation's key only internal consistency can be checked (documented).
    assert verify_export(path).ok


def test_export_with_an_event_missing_a_field_fails_verification(
    ctx: Context, tmp_path: Path
) -> None:
    populate(ctx)
    path = tmp_path / "audit.jsonl"
    records = _export(ctx, path)
    del records[3]["actor"]  # event 3
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    report = verify_export(path, AuditTrail(ctx).signer)

    assert not report.ok
    assert report.problems[0].seq == 3


def test_export_of_an_empty_trail(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    records = _export(ctx, path)

    assert [r["type"] for r in records] == ["header"]
    assert records[0]["public_key"] == AuditTrail(ctx).signer.public_key_hex()
    report = verify_export(path, AuditTrail(ctx).signer)
    assert (report.ok, report.events_checked) == (True, 0)


# Concurrent appenders ------------------------------------------------------------------------
@pytest.mark.parametrize("shared_store", [True, False], ids=["one-store", "store-per-thread"])
def test_threads_appending_concurrently_keep_one_chain(
    ctx: Context, settings: Settings, principal: Principal, shared_store: bool
) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def create_projects(worker: int) -> None:
        context = ctx if shared_store else make_context(settings, principal, FrozenClock())
        try:
            start.wait()
            service = ProjectService(context)
            for n in range(20):
                service.create(f"w{worker}-{n}")
        except BaseException as err:
            errors.append(err)
        finally:
            if not shared_store:
                context.db.close()

    threads = [threading.Thread(target=create_projects, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []  # in particular no "database is locked"
    events = AuditTrail(ctx).list(limit=10_000)
    assert [e.seq for e in events] == list(range(1, 81))
    assert {e.project for e in events} == {f"w{w}-{n}" for w in range(4) for n in range(20)}
    report = AuditTrail(ctx).verify()
    assert report.ok, report.problems
    assert report.events_checked == 80
    assert report.witness is not None
    assert report.witness.seq == 80


APPENDER = """
import sys, time
from pathlib import Path
from civicml.core import Settings
from civicml.governance import ProjectService
from civicml.sdk.embedded import open_context

tag, count, gate = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
ctx = open_context(Settings.load())
(gate / f"ready-{tag}").touch()
while not (gate / "go").exists():
    time.sleep(0.005)
service = ProjectService(ctx)
for n in range(count):
    service.create(f"{tag}-{n}")
ctx.db.close()
"""


def test_processes_appending_concurrently_keep_one_chain(
    settings: Settings, principal: Principal, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = {
        tag: subprocess.Popen(
            [sys.executable, "-c", APPENDER, tag, "25", str(gate)],
            env={**os.environ, "CIVICML_HOME": str(settings.home), "CIVICML_USER": tag},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("proc-a", "proc-b")
    }
    deadline = time.monotonic() + 60
    while not all((gate / f"ready-{tag}").exists() for tag in procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
            break
        time.sleep(0.01)
    (gate / "go").touch()
    outputs = {tag: proc.communicate(timeout=120) for tag, proc in procs.items()}

    for tag, proc in procs.items():
        assert proc.returncode == 0, outputs[tag][1].decode()
    ctx = make_context(settings, principal, FrozenClock())
    try:
        events = AuditTrail(ctx).list(limit=10_000)
        assert [e.seq for e in events] == list(range(1, 51))
        assert sorted(e.actor for e in events) == ["proc-a"] * 25 + ["proc-b"] * 25
        report = AuditTrail(ctx).verify()
        assert report.ok, report.problems
        assert report.witness is not None
        assert report.witness.seq == 50
    finally:
        ctx.db.close()


def _wait_for_a_lock_wait(ctx: Context) -> None:
    """Block until some session of this database waits on a row/transaction lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with ctx.db.engine.connect() as conn:
            if conn.execute(query).scalar():
                return
        time.sleep(0.01)
    raise RuntimeError("the second writer never blocked on the first")


def test_the_first_two_writers_on_postgres_do_not_collide(pg_ctx: Context) -> None:
    """The second writer waits for the first one's lock on the head row, then follows it."""
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first_writer() -> None:
        with pg_ctx.db.write() as uow:
            AuditTrail(pg_ctx).record(uow, "thing.created", "thing", "t1")
            holding.set()
            release.wait(timeout=60)

    def second_writer() -> None:
        try:
            ProjectService(pg_ctx).create("second")
        except (ConflictError, IntegrityError) as err:
            errors.append(err)

    first = threading.Thread(target=first_writer)
    first.start()
    holding.wait(timeout=60)
    second = threading.Thread(target=second_writer)
    second.start()
    try:
        _wait_for_a_lock_wait(pg_ctx)
    finally:
        release.set()
        first.join()
        second.join()

    assert errors == []
    report = AuditTrail(pg_ctx).verify()
    assert report.ok
    assert report.events_checked == 2
