"""A process killed with SIGKILL mid-write leaves the store consistent, and the next start works."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy import func, select, text

import civicml as cm
from civicml.store._tables import artifacts
from civicml.tracking import RunStatus
from civicml.tracking._tables import metrics


def _spawn(home: Path, script: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CIVICML_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, stdout=subprocess.PIPE
    )


def _wait_for_line(proc: subprocess.Popen[bytes], expected: bytes) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == expected, line


def test_sigkill_while_writing_an_artifact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = _spawn(
        home,
        """
        import sys, time, civicml as cm
        ml = cm.connect()
        run = ml.project("p").start_run()
        class Slow:
            def __init__(self): self.n = 0
            def read(self, size=-1):
                self.n += 1
                if self.n == 3:
                    print("writing", flush=True)
                if self.n > 3:
                    time.sleep(0.05)
                return b"x" * (1 << 20)
        ml.backend.tracking.log_artifact(run.id, "model/huge.bin", Slow())
    """,
    )
    _wait_for_line(proc, b"writing")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    tmp_files = list((home / "artifacts" / "tmp").glob("*.part"))
    assert tmp_files, "the killed write should have left its temp file behind"
    for obj in (home / "artifacts" / "objects").rglob("*"):
        if obj.is_file():  # every visible object is complete: its name is its hash
            assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.name
    with cm.connect(home=home) as ml:  # the next start recovers
        assert not list((home / "artifacts" / "tmp").glob("*.part"))
        with ml.backend.ctx.db.read() as conn:
            assert conn.execute(select(func.count()).select_from(artifacts)).scalar() == 0
        (run,) = ml.project("p").runs.list()
        assert run.status is RunStatus.KILLED  # its process is gone
        assert ml.verify_audit().ok
        with ml.project("p").start_run() as again:
            again.log_bytes(b"fine", "model/ok.bin")
        assert again.read_artifact("model/ok.bin") == b"fine"


def test_sigkill_while_logging_metrics(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = _spawn(
        home,
        """
        import civicml as cm
        ml = cm.connect()
        run = ml.project("p").start_run()
        print("started", flush=True)
        step = 0
        while True:
            run.log_metrics({f"m{i}": float(step) for i in range(10)}, step=step)
            step += 1
    """,
    )
    _wait_for_line(proc, b"started")
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    with cm.connect(home=home) as ml:
        with ml.backend.ctx.db.read() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            stored = conn.execute(select(func.count()).select_from(metrics)).scalar()
            per_step = conn.execute(
                select(metrics.c.step, func.count()).group_by(metrics.c.step)
            ).all()
        assert stored and stored > 0, "group commits ran before the kill"
        assert all(count == 10 for _step, count in per_step), "no partial batch is visible"
        (run,) = ml.project("p").runs.list()
        assert run.status is RunStatus.KILLED
        assert len(run.metrics) == 10
        assert ml.verify_audit().ok
