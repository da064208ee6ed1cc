from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from civicml.core import CivicMLError, ConflictError
from civicml.store import Context
from civicml.tracking import (
    MetricBatch,
    MetricBatchResult,
    MetricValue,
    MetricWriter,
    TrackingService,
)


def test_buffered_values_are_durable_after_flush(ctx: Context) -> None:
    svc = TrackingService(ctx)
    run = svc.create_run("p")
    writer = MetricWriter(svc.log_metric_batches, interval=10)  # only flush() commits
    for i in range(1000):
        writer.submit(run.id, [MetricValue(key="loss", value=1 / (i + 1), step=i)])
    writer.flush(run.id)
    assert len(svc.metric_history(run.id, "loss")) == 1000
    writer.close()


def test_concurrent_synchronous_callers_share_commits(ctx: Context) -> None:
    svc = TrackingService(ctx)
    run = svc.create_run("p")
    rounds: list[int] = []

    def sink(batches: Sequence[MetricBatch]) -> Sequence[MetricBatchResult | CivicMLError]:
        rounds.append(len(batches))
        return svc.log_metric_batches(batches)

    writer = MetricWriter(sink, interval=0.05)

    def log(n: int) -> None:
        for i in range(25):
            writer.submit(run.id, [MetricValue(key=f"k{n}", value=i, step=i)], synchronous=True)

    threads = [threading.Thread(target=log, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert sum(rounds) == 200
    assert all(len(svc.metric_history(run.id, f"k{n}")) == 25 for n in range(8))


def test_values_queued_after_a_callers_round_are_written_by_the_thread(ctx: Context) -> None:
    """The thread is not woken for each value queued while it waits for a deadline (a caller
    wrote the round it was waiting for meanwhile): it still writes them, without a flush."""
    svc = TrackingService(ctx)
    run = svc.create_run("p")
    writers: list[str] = []

    def sink(batches: Sequence[MetricBatch]) -> Sequence[MetricBatchResult | CivicMLError]:
        writers.append(threading.current_thread().name)
        return svc.log_metric_batches(batches)

    writer = MetricWriter(sink, interval=0.2)
    for step in range(5):
        writer.submit(run.id, [MetricValue(key="loss", value=1.0, step=step)])
        writer.submit(run.id, [MetricValue(key="auc", value=1.0, step=step)], synchronous=True)
    writer.submit(run.id, [MetricValue(key="loss", value=2.0, step=9)])  # no flush follows
    deadline = time.monotonic() + 30
    while len(svc.metric_history(run.id, "loss")) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(svc.metric_history(run.id, "loss")) == 6
    assert writers[-1] == "civicml-metrics"
    writer.close()


def test_synchronous_error_is_raised_to_the_caller(ctx: Context) -> None:
    svc = TrackingService(ctx)
    run = svc.create_run("p")
    svc.end_run(run.id)
    writer = MetricWriter(svc.log_metric_batches)
    with pytest.raises(ConflictError, match="not running"):
        writer.submit(run.id, [MetricValue(key="x", value=1.0)], synchronous=True)
    writer.close()


def test_buffered_error_is_raised_by_the_next_call(ctx: Context) -> None:
    svc = TrackingService(ctx)
    run = svc.create_run("p")
    svc.end_run(run.id)
    writer = MetricWriter(svc.log_metric_batches, interval=0.01)
    writer.submit(run.id, [MetricValue(key="x", value=1.0)])  # accepted into the buffer
    with pytest.raises(ConflictError, match="not running"):
        writer.flush(run.id)
    writer.flush(run.id)  # reported once
    writer.close()


def test_submit_with_batch_id_is_idempotent(ctx: Context) -> None:
    svc = TrackingService(ctx)
    run = svc.create_run("p")
    writer = MetricWriter(svc.log_metric_batches)
    values = [MetricValue(key="x", value=1.0)]
    first = writer.submit(run.id, values, synchronous=True, batch_id="b1")
    second = writer.submit(run.id, values, synchronous=True, batch_id="b1")
    assert first == MetricBatchResult(stored=1)
    assert second == MetricBatchResult(stored=0, duplicate=True)
    writer.close()


def test_flush_waits_for_a_round_already_being_written() -> None:
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def slow_sink(batches: Sequence[MetricBatch]) -> Sequence[MetricBatchResult | CivicMLError]:
        started.set()
        release.wait(5)
        written.append(len(batches))
        return [MetricBatchResult(stored=len(b.values)) for b in batches]

    writer = MetricWriter(slow_sink, interval=0.01)
    writer.submit("r" * 32, [MetricValue(key="x", value=1.0)])
    assert started.wait(5)  # the background round has taken the item: the queue is empty
    threading.Timer(0.2, release.set).start()
    writer.flush()
    assert written == [1], "flush returned before the round in progress was durable"
    writer.close()
