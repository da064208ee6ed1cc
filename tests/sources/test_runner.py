"""Scheduled sources: the scheduler's loop runs each due instant once (two runners on one
database), acting as the source's creator; and the micro-batcher against an in-memory stream
(the interface a Kafka source would implement)."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

from civicml.core import FrozenClock
from civicml.pipelines.scheduler import Scheduler
from civicml.sources import SourceCreate, SourceService, SourceUpdate
from civicml.sources.connections import Target
from civicml.sources.runner import SourceRunner
from civicml.sources.schemas import RunStatus, StreamConfig
from civicml.sources.streams import Message, StreamSource, consume
from civicml.store import Context
from tests.sources.helpers import PROJECT


def _files(ctx: Context, rows: range) -> None:
    with sqlite3.connect(ctx.settings.home / "files.db") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in rows])


class _Idle:
    def kick(self) -> bool:
        return False

    def wait(self, timeout_s: float | None = None) -> bool:
        return True


def test_a_due_source_runs_once_across_two_runners(sctx: Context, clock: FrozenClock) -> None:
    _files(sctx, range(1, 21))
    svc = SourceService(sctx)
    svc.create(
        PROJECT,
        SourceCreate(
            name="sched",
            kind="database",
            connection="files",
            database={"table": "t", "watermark": "id"},
            every="10m",
        ),
    )
    first, second = SourceRunner(sctx, name="a"), SourceRunner(sctx, name="b")
    assert first.tick() == [] and second.tick() == []  # not due yet
    clock.advance(minutes=10)
    assert len(first.tick()) == 1
    assert second.tick() == []  # the instant was taken
    runs = svc.runs(PROJECT, "sched")
    assert [(r.trigger, r.rows, r.status) for r in runs] == [("schedule", 20, RunStatus.SUCCEEDED)]
    _files(sctx, range(21, 26))
    clock.advance(minutes=10)
    scheduler = Scheduler(sctx, name="s", alerts=_Idle(), monitors=_Idle())
    assert scheduler.sources is not None
    scheduler.run_once(timeout_s=60)
    assert svc.runs(PROJECT, "sched")[0].rows == 5
    svc.update(PROJECT, "sched", SourceUpdate(enabled=False))
    clock.advance(minutes=10)
    assert first.tick() == []


class _Memory(StreamSource):
    """A stream in memory: sequence numbers as positions, as Kafka offsets would be."""

    log: ClassVar[list[bytes]] = []
    acked = 0

    def open(self, position: dict[str, Any]) -> None:
        self._next = self.acked

    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        got = self.log[self._next : self._next + max_messages]
        start = self._next
        self._next += len(got)
        return [
            Message(body=b, token=start + i, identity=str(start + i)) for i, b in enumerate(got)
        ]

    def committed(self, message: Message, position: dict[str, Any]) -> bool:
        return int(message.token) <= int(position.get("offset", -1))

    def advance(self, position: dict[str, Any], batch: list[Message]) -> dict[str, Any]:
        return {"offset": max(int(m.token) for m in batch)}

    def acknowledge(self, messages: list[Message]) -> None:
        type(self).acked = max(int(m.token) for m in messages) + 1

    @classmethod
    def lag(cls, target: Target, config: StreamConfig, ident: str, position: dict[str, Any]) -> int:
        return len(cls.log) - cls.acked

    def close(self) -> None:
        pass


def test_the_micro_batcher_commits_then_acknowledges() -> None:
    _Memory.log = [b'{"i": %d}' % i for i in range(25)]
    _Memory.acked = 0
    config = StreamConfig(subject="s", batch_rows=10, window_s=60, idle_s=0.01)
    source = _Memory(Target(url="memory://", shown="memory://"), config, "g")
    source.open({})
    batches: list[tuple[int, dict[str, Any], int]] = []

    def commit(messages: list[Message], after: dict[str, Any]) -> dict[str, Any]:
        batches.append((len(messages), after, _Memory.acked))  # nothing acked before commit
        return after

    skipped, position = consume(source, {}, commit)
    assert [(n, a["offset"]) for n, a, _ in batches] == [(10, 9), (10, 19), (5, 24)]
    assert [acked for *_, acked in batches] == [0, 10, 20]
    assert (skipped, position, _Memory.acked) == (0, {"offset": 24}, 25)
    assert _Memory.lag(source.target, config, "g", position) == 0
