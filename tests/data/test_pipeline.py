"""The threads of an ingest: order kept, memory bounded, errors raised on the caller's thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from civicml.data._pipeline import BackgroundWriter, Prefetch
from civicml.data.profile import _hash_strings


class _Item:
    def __init__(self, n: int, nbytes: int = 10) -> None:
        self.n = n
        self.nbytes = nbytes


def test_prefetch_keeps_the_order_and_raises_after_the_items_before_the_error() -> None:
    def source() -> Iterator[_Item]:
        yield from (_Item(i) for i in range(50))
        raise ValueError("line 51 is bad")

    seen = []
    with Prefetch(source(), budget=25) as items, pytest.raises(ValueError, match="line 51"):
        for item in items:
            seen.append(item.n)
    assert seen == list(range(50))


def test_prefetch_runs_at_most_its_budget_ahead() -> None:
    produced = []
    release = threading.Event()

    def source() -> Iterator[_Item]:
        for i in range(100):
            produced.append(i)
            yield _Item(i, nbytes=10)

    with Prefetch(source(), budget=30) as items:
        first = next(items)
        release.wait(0.2)  # give the thread time to fill what it may
        assert first.n == 0 and len(produced) <= 5  # 3 held + 1 waiting + the one taken


def test_leaving_early_stops_the_thread_and_closes_the_generator() -> None:
    closed = threading.Event()

    def source() -> Iterator[_Item]:
        try:
            for i in range(10**6):
                yield _Item(i)
        finally:
            closed.set()

    with Prefetch(source(), budget=100) as items:
        assert next(items).n == 0
    assert closed.is_set()


def test_background_writer_writes_in_order_and_raises_a_write_error() -> None:
    written: list[int] = []
    with BackgroundWriter(written.append) as sink:
        for i in range(20):
            sink.submit(i)
        sink.finish()
    assert written == list(range(20))

    def fail(table: Any) -> None:
        raise OSError("disk full")

    with BackgroundWriter(fail) as sink, pytest.raises(OSError, match="disk full"):
        for i in range(20):  # never blocks: after the error the writer drains the queue
            sink.submit(i)
        sink.finish()


def test_string_hashes_depend_on_the_values_only() -> None:
    values = ["", "a", "ab", "ba", "Zürich", "x" * 300_000, "ab"]
    plain = _hash_strings(pa.array(values))
    assert plain[2] == plain[6] and len(set(plain.tolist())) == 6
    assert (_hash_strings(pa.array(values, pa.large_string())) == plain).all()
    assert (_hash_strings(pa.array(values).slice(2, 3)) == plain[2:5]).all()
    many = _hash_strings(pa.array([f"id-{i}" for i in range(200_000)]))
    assert len(set(many.tolist())) == 200_000
    assert 0.45 < float((many < 2**63).mean()) < 0.55  # spread over the 64 bits
