"""One audit key and one witness for several homes (servers) on one PostgreSQL database.

Homes share ``keys_dir`` (where the audit key lives) and set ``audit_witness = "database"``: every
commit's signed head is stored as a row, so any home holding the key verifies the whole chain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from civicml.core import FrozenClock, Principal, Settings
from civicml.governance import AuditTrail, ProjectService
from civicml.governance._tables import audit_events, audit_head, audit_signed_heads
from civicml.store import Context
from tests.conftest import make_context

PER_HOME = 12


@pytest.fixture
def homes(
    pg_url: str, tmp_path: Path, principal: Principal, clock: FrozenClock
) -> Iterator[list[Context]]:
    """Two homes on one PostgreSQL database sharing keys_dir; a third with a keys_dir of its own."""
    shared_keys = tmp_path / "shared-keys"
    contexts = [
        make_context(
            Settings.load(
                home=tmp_path / name,
                db_url=pg_url,
                keys_dir=shared_keys if name != "third" else tmp_path / "third-keys",
                audit_witness="database",
            ),
            principal,
            clock,
        )
        for name in ("first", "second", "third")
    ]
    yield contexts
    for context in contexts:
        context.db.close()


def _write_concurrently(first: Context, second: Context) -> None:
    errors: list[BaseException] = []

    def write(ctx: Context, prefix: str) -> None:
        try:
            for n in range(PER_HOME):
                ProjectService(ctx).create(f"{prefix}-{n}")
            AuditTrail(ctx).flush()  # a writer that is done has signed its newest head
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [
        threading.Thread(target=write, args=(first, "first")),
        threading.Thread(target=write, args=(second, "second")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_two_homes_writing_concurrently_keep_one_verifiable_chain(
    homes: list[Context],
) -> None:
    first, second, _third = homes

    _write_concurrently(first, second)

    total = 2 * PER_HOME
    for ctx in (first, second):
        report = AuditTrail(ctx).verify()
        assert (report.ok, report.verdict, report.events_checked) == (True, "verified", total)
        assert report.witness is not None
        assert (report.witness.seq, report.witness.hash) == (total, report.head_hash)
    assert first.settings.audit_key_path == second.settings.audit_key_path
    assert first.settings.audit_key_path.parent == first.settings.keys_root
    with first.db.read() as conn:
        keys = set(conn.execute(select(audit_signed_heads.c.public_key)).scalars())
    assert keys == {AuditTrail(first).signer.public_key_hex()}


def test_a_home_without_the_key_is_told_it_holds_no_witness(homes: list[Context]) -> None:
    first, second, third = homes
    _write_concurrently(first, second)

    report = AuditTrail(third).verify()

    assert (report.ok, report.verdict, report.events_checked) == (False, "unwitnessed", 24)
    [problem] = report.problems
    assert problem.reason.startswith(
        "UNVERIFIED, not a tamper verdict: this civicml home holds no witness (signed chain head)"
    )
    assert "the same audit key in keys_dir and audit_witness = 'database'" in problem.reason
    assert str(third.settings.home) not in problem.reason


def test_a_truncated_tail_is_caught_by_the_signed_head_in_the_database(
    homes: list[Context],
) -> None:
    first, second, _third = homes
    _write_concurrently(first, second)
    for ctx in (first, second):  # no home witness file left: only the database vouches
        ctx.settings.witness_path.unlink(missing_ok=True)
    with first.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 20))
        kept = conn.execute(select(audit_events.c.hash).where(audit_events.c.seq == 20)).scalar()
        conn.execute(update(audit_head).values(seq=20, hash=kept))
    ProjectService(second).create("after-the-cut")  # an honest write does not re-sign it

    report = AuditTrail(second).verify()

    assert (report.ok, report.verdict) == (False, "failed")
    assert report.problems[0].reason == (
        "the signed head covers 24 events but the chain holds only 21: the tail was truncated"
    )


def test_an_altered_signed_head_row_is_caught(homes: list[Context]) -> None:
    first, second, _third = homes
    _write_concurrently(first, second)
    first.settings.witness_path.unlink(missing_ok=True)
    with first.db.engine.begin() as conn:
        conn.execute(
            update(audit_signed_heads)
            .where(audit_signed_heads.c.seq == 2 * PER_HOME)
            .values(signed_at="2020-01-01T00:00:00.000000+00:00")
        )

    report = AuditTrail(first).verify()

    assert (report.ok, report.verdict) == (False, "failed")
    assert report.problems[0].reason == (
        "the signed head's signature is invalid (the signed head row was altered or signed by "
        "another key)"
    )


def test_a_home_with_its_own_key_keeps_verifying_after_keys_dir_is_set(
    ctx: Context, principal: Principal, clock: FrozenClock, tmp_path: Path
) -> None:
    """Backward compatibility: the key in $CIVICML_HOME/keys is used until it is copied."""
    ProjectService(ctx).create("before")
    AuditTrail(ctx).flush()  # the first signature creates the key
    legacy = ctx.settings.home / "keys" / "audit-ed25519.pem"
    assert ctx.settings.audit_key_path == legacy
    moved = Settings.load(home=ctx.settings.home, keys_dir=tmp_path / "kms")
    later = make_context(moved, principal, clock)
    try:
        assert moved.audit_key_path == legacy
        ProjectService(later).create("after")
        assert AuditTrail(later).verify().ok
        # The documented migration: copy the key (and its .pub) into keys_dir.
        (tmp_path / "kms").mkdir(exist_ok=True)
        for suffix in (".pem", ".pub"):
            shutil.copy(legacy.with_suffix(suffix), tmp_path / "kms" / f"audit-ed25519{suffix}")
        assert moved.audit_key_path == tmp_path / "kms" / "audit-ed25519.pem"
        ProjectService(later).create("copied")
        report = AuditTrail(later).verify()
    finally:
        later.db.close()
    assert (report.ok, report.verdict, report.events_checked) == (True, "verified", 3)


def test_two_real_servers_on_one_database_keep_one_verifiable_chain(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``civicml server`` processes, two homes, one PostgreSQL database, one keys_dir."""
    import civicml as cm
    from tests.conftest import start_server

    monkeypatch.setenv("CIVICML_DB_URL", pg_url)
    monkeypatch.setenv("CIVICML_KEYS_DIR", str(tmp_path / "shared-keys"))
    monkeypatch.setenv("CIVICML_AUDIT_WITNESS", "database")
    homes = [tmp_path / "server-a", tmp_path / "server-b"]
    errors: list[BaseException] = []

    def create(url: str, prefix: str) -> None:
        try:
            with cm.connect(url) as ml:
                for n in range(6):
                    ml.project(f"{prefix}-{n}")
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    with (
        start_server(homes[0], tmp_path / "a.log") as first,
        start_server(homes[1], tmp_path / "b.log") as second,
    ):
        threads = [
            threading.Thread(target=create, args=(first, "a")),
            threading.Thread(target=create, args=(second, "b")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        reports = []
        for url in (first, second):
            with cm.connect(url) as ml:
                reports.append(ml.verify_audit())

    for report in reports:
        assert (report.ok, report.verdict, report.events_checked) == (True, "verified", 12)
    for home in homes:
        done = subprocess.run(
            [sys.executable, "-m", "civicml.cli.main", "audit", "verify"],
            env={**os.environ, "CIVICML_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (done.returncode, done.stdout, done.stderr) == (
            0,
            "OK: 12 audit events verified, signed head at event 12.\n",
            "",
        )
