"""Recorder: jobs run in order on one background thread; errors are kept for check/close, a
failing job does not stop the later ones; call() hands its result (or error) to the caller."""

from __future__ import annotations

import threading

import pytest

from civicml.training._recording import Recorder


def test_jobs_run_in_order_off_the_calling_thread() -> None:
    recorder = Recorder()
    seen: list[tuple[int, str]] = []
    for number in range(6):
        recorder.submit(lambda n: seen.append((n, threading.current_thread().name)), number)
    recorder.close()

    assert [n for n, _ in seen] == list(range(6))
    assert all(name.startswith("civicml-record") for _, name in seen)
    assert threading.current_thread().name not in {name for _, name in seen}


def test_an_error_is_raised_by_check_and_close_and_later_jobs_still_run() -> None:
    recorder = Recorder()
    done: list[int] = []

    def fail() -> None:
        raise OSError("the disk is full")

    recorder.submit(fail)
    recorder.submit(done.append, 1)
    recorder.submit(fail)
    first = recorder.call(lambda: 2)
    assert first.result() == 2  # runs after the jobs before it
    with pytest.raises(OSError, match="the disk is full"):
        recorder.check()
    with pytest.raises(OSError, match="the disk is full"):
        recorder.close()
    assert done == [1]


def test_close_without_raising_and_no_submit_after_close() -> None:
    recorder = Recorder()
    recorder.submit(lambda: 1 / 0)
    recorder.close(raise_error=False)

    with pytest.raises(RuntimeError, match="closed"):
        recorder.submit(print)
    with pytest.raises(RuntimeError, match="closed"):
        recorder.call(print)


def test_a_call_error_goes_to_its_caller_only() -> None:
    recorder = Recorder()
    future = recorder.call(lambda: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        future.result()
    recorder.check()  # nothing kept
    recorder.close()


def test_submit_waits_while_max_pending_jobs_wait() -> None:
    recorder = Recorder(max_pending=1)
    gate = threading.Event()
    recorder.submit(gate.wait, 30)
    second_queued = threading.Event()

    def submit_second() -> None:
        recorder.submit(lambda: None)
        second_queued.set()

    thread = threading.Thread(target=submit_second)
    thread.start()
    assert not second_queued.wait(0.2)  # blocked behind the first job
    gate.set()
    thread.join(30)
    assert second_queued.is_set()
    recorder.close()
