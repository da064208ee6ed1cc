"""The broker clients' edge cases that a live broker shows only now and then."""

from __future__ import annotations

from typing import Any

import pytest

from civicml.sources.brokers import NatsSource, _Loop


class _TimingOut:
    """A pull subscription whose fetch finds nothing, failing as nats-py does."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        raise self.error


@pytest.mark.parametrize("kind", ["nats", "asyncio"])
def test_a_nats_fetch_that_times_out_is_an_empty_receive(kind: str) -> None:
    pytest.importorskip("nats")
    import nats.errors

    # nats-py raises its own TimeoutError, and on some paths of a batch fetch a bare
    # asyncio.TimeoutError: both mean "no message in the window", not a failed run.
    error = nats.errors.TimeoutError() if kind == "nats" else TimeoutError()  # asyncio.TimeoutError
    source = NatsSource.__new__(NatsSource)
    source._io = _Loop()
    source._sub = _TimingOut(error)
    try:
        assert source.receive(10, 0.01) == []
    finally:
        source._io.stop()


def test_a_nats_fetch_that_fails_otherwise_still_fails() -> None:
    pytest.importorskip("nats")
    source = NatsSource.__new__(NatsSource)
    source._io = _Loop()
    source._sub = _TimingOut(ConnectionResetError("gone"))
    try:
        with pytest.raises(ConnectionResetError):
            source.receive(10, 0.01)
    finally:
        source._io.stop()
