"""Helpers of the governance and audit CLI tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from civicml.governance import ProjectService
from civicml.governance.audit import AuditTrail
from civicml.store import Context
from civicml.tracking.service import TrackingService


def populate(context: Context) -> int:
    """Write ten audit events through the real services; returns how many were written.

    1 project.created p1, 2 experiment.created, 3 run.created, 4 run.params_logged,
    5 run.finished, 6 run.created, 7 run.params_logged, 8 run.failed, 9-10 project.created.
    """
    ProjectService(context).create("p1", description="first")
    tracking = TrackingService(context)
    first = tracking.create_run("p1")
    tracking.log_params(first.id, {"lr": 0.1, "depth": 3})
    tracking.end_run(first.id)
    second = tracking.create_run("p1")
    tracking.log_params(second.id, {"lr": 0.2})
    tracking.end_run(second.id, "failed")
    ProjectService(context).create("p2")
    ProjectService(context).create("p3")
    AuditTrail(context).flush()  # signed now, not within audit_witness_interval_ms
    return 10


def corrupt_audit_table(database: Path) -> None:
    """Overwrite the root page of ``audit_events`` in a closed SQLite file with garbage, so that
    reading the table raises "database disk image is malformed"."""
    with sqlite3.connect(database) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        root = con.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'"
        ).fetchone()[0]
    con.close()
    assert root > 1
    with open(database, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xff" * page_size)
