"""Group commit of the audit witness: the newest head of many commits is signed once, within
``audit_witness_interval_ms``, at verify/export, and at a normal exit; a killed writer leaves an
unsigned tail that verify reports and the next write signs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from civicml.core import FrozenClock, Principal, Settings
from civicml.governance import ProjectService
from civicml.governance import audit as audit_module
from civicml.governance.audit import AuditTrail
from civicml.store import Context
from tests.conftest import make_context

# Long enough that no timer fires during a test: what is signed is what the test made signed.
_NEVER_MS = 60_000


def _context(tmp_path: Path, principal: Principal, clock: FrozenClock, interval_ms: int) -> Context:
    settings = Settings.load(home=tmp_path / "home", audit_witness_interval_ms=interval_ms)
    return make_context(settings, principal, clock)


def _witness_seq(ctx: Context) -> int | None:
    path = ctx.settings.witness_path
    return json.loads(path.read_bytes())["seq"] if path.is_file() else None


def test_many_commits_are_signed_once_at_flush(
    tmp_path: Path,
    principal: Principal,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = _context(tmp_path, principal, clock, _NEVER_MS)
    signed: list[int] = []
    real_sign = audit_module.AuditSigner.sign

    def counting_sign(self: audit_module.AuditSigner, seq: int, *args: str) -> object:
        signed.append(seq)
        return real_sign(self, seq, *args)

    monkeypatch.setattr(audit_module.AuditSigner, "sign", counting_sign)
    try:
        for n in range(5):
            ProjectService(ctx).create(f"p{n}")
        assert _witness_seq(ctx) is None  # nothing signed yet: all five wait for the flush
        AuditTrail(ctx).flush()
        assert signed == [5]
        assert _witness_seq(ctx) == 5
        AuditTrail(ctx).flush()  # nothing pending: no second signature
        assert signed == [5]
    finally:
        ctx.db.close()


def test_the_timer_signs_without_a_flush(
    tmp_path: Path, principal: Principal, clock: FrozenClock
) -> None:
    ctx = _context(tmp_path, principal, clock, 20)
    try:
        ProjectService(ctx).create("p")
        ProjectService(ctx).create("q")
        deadline = time.monotonic() + 10
        while _witness_seq(ctx) != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _witness_seq(ctx) == 2
    finally:
        ctx.db.close()


def test_an_idle_witness_thread_ends_and_a_later_commit_starts_another(
    tmp_path: Path, principal: Principal, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One signing thread per witness file while commits come; none left once they stop (a
    test suite or a long server touches many homes)."""
    monkeypatch.setattr(audit_module, "_WITNESS_IDLE_EXIT_S", 0.05)
    ctx = _context(tmp_path, principal, clock, 20)

    def thread() -> Any:
        batch = audit_module._BATCHES.get(ctx.settings.witness_path)
        return None if batch is None else batch._thread

    def settle(seq: int) -> Any:
        deadline = time.monotonic() + 10
        while (_witness_seq(ctx) != seq or thread() is not None) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _witness_seq(ctx) == seq
        assert thread() is None

    try:
        ProjectService(ctx).create("p")
        first = thread()  # None only if it has signed and ended already (a slow test thread)
        settle(1)
        if first is not None:
            first.join(5)
            assert not first.is_alive()
        ProjectService(ctx).create("q")  # the thread ended: this commit starts a new one
        settle(2)
    finally:
        ctx.db.close()


def test_interval_zero_signs_every_commit_at_once(
    tmp_path: Path, principal: Principal, clock: FrozenClock
) -> None:
    ctx = _context(tmp_path, principal, clock, 0)
    try:
        ProjectService(ctx).create("p")
        assert _witness_seq(ctx) == 1
        ProjectService(ctx).create("q")
        assert _witness_seq(ctx) == 2
    finally:
        ctx.db.close()


def test_verify_signs_what_this_process_committed_first(
    tmp_path: Path, principal: Principal, clock: FrozenClock
) -> None:
    ctx = _context(tmp_path, principal, clock, _NEVER_MS)
    try:
        ProjectService(ctx).create("p")
        report = AuditTrail(ctx).verify()
        assert (report.ok, report.verdict, report.warnings) == (True, "verified", [])
        assert report.witness is not None and report.witness.seq == 1
    finally:
        ctx.db.close()


def _writer(home: Path, names: list[str], *, killed: bool) -> None:
    """Create projects in another process; ``killed`` ends it without running exit handlers,
    as SIGKILL would, before its timer could sign."""
    code = textwrap.dedent(
        f"""
        import os, sys
        import civicml as cm
        ml = cm.connect()
        for name in {names!r}:
            ml.create_project(name)
        sys.stdout.flush()
        {"os._exit(0)" if killed else "pass"}
        """
    )
    env = {
        **os.environ,
        "CIVICML_HOME": str(home),
        "CIVICML_AUDIT_WITNESS_INTERVAL_MS": str(_NEVER_MS),
        "CIVICML_USER": "writer",
    }
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_a_normal_exit_signs_the_newest_head(
    tmp_path: Path, principal: Principal, clock: FrozenClock
) -> None:
    home = tmp_path / "home"
    _writer(home, ["a", "b", "c"], killed=False)
    ctx = _context(tmp_path, principal, clock, _NEVER_MS)
    try:
        assert _witness_seq(ctx) == 3
        report = AuditTrail(ctx).verify()
        assert (report.ok, report.verdict, report.warnings) == (True, "verified", [])
    finally:
        ctx.db.close()


def test_a_killed_writer_leaves_an_unsigned_tail_that_the_next_write_signs(
    tmp_path: Path, principal: Principal, clock: FrozenClock
) -> None:
    home = tmp_path / "home"
    _writer(home, ["a"], killed=False)  # signed: event 1
    _writer(home, ["b", "c"], killed=True)  # events 2 and 3 committed, never signed
    ctx = _context(tmp_path, principal, clock, _NEVER_MS)
    try:
        assert _witness_seq(ctx) == 1
        report = AuditTrail(ctx).verify()
        assert (report.ok, report.verdict, report.events_checked) == (True, "verified", 3)
        [warning] = report.warnings
        assert (warning.kind, warning.seq) == ("unsigned_tail", 2)
        assert warning.message.startswith("2 events after the signed head at event 1 are not")

        ProjectService(ctx).create("d")  # the next write signs a head covering all of them
        report = AuditTrail(ctx).verify()
        assert (report.ok, report.verdict) == (True, "verified")
        # (the test's frozen clock is behind the writers' real one: only that is noticed)
        assert [w.kind for w in report.warnings] == ["clock_went_backwards"]
        assert report.witness is not None and report.witness.seq == 4
    finally:
        ctx.db.close()
