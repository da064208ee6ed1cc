"""The ledger's upsert: built once per dialect, adding each line's figures to its period's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from civicml.costs import ledger
from civicml.costs._tables import usage_lines
from civicml.costs.ledger import UsageLine, add_line
from civicml.costs.meter import Usage


def test_lines_add_up_with_one_statement_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    insert = ledger.sqlite.insert

    def counting(table: Any) -> Any:
        built.append(table)
        return insert(table)

    monkeypatch.setattr(ledger.sqlite, "insert", counting)
    ledger._upsert.cache_clear()
    engine = create_engine("sqlite://")
    usage_lines.metadata.create_all(engine, tables=[usage_lines])
    hour = datetime(2026, 3, 1, 9, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            for i, peak in enumerate((100, 300, 200)):
                usage = Usage(
                    wall_s=1.0, cpu_s=0.5, gpu_s=0.0, memory_gb_s=0.25, peak_memory_bytes=peak
                )
                line = UsageLine("p1", "run", "r1", "train", hour, usage, invocations=1)
                add_line(conn, line, hour.replace(minute=i))
            add_line(conn, UsageLine("p1", "run", "r2", "score", hour, usage), hour)
            rows = conn.execute(select(usage_lines).order_by(usage_lines.c.subject_id)).all()
    finally:
        ledger._upsert.cache_clear()
        engine.dispose()

    assert len(built) == 1  # the statement is built once; each line only binds its values
    first, second = rows
    assert (first.subject_id, first.wall_s, first.cpu_s, first.memory_gb_s) == ("r1", 3, 1.5, 0.75)
    assert first.peak_memory_bytes == 300 and first.invocations == 3
    assert first.updated_at.replace(tzinfo=UTC) == hour.replace(minute=2)
    assert (second.subject_id, second.wall_s, second.invocations) == ("r2", 1.0, 0)
