"""Micro-batching: concurrent invocations share one predict; results and errors stay per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from civicml.core import InvalidInputError
from civicml.serving import EndpointService, ModelHost
from civicml.serving.batching import MicroBatcher
from civicml.serving.fastpath import Encoded
from civicml.serving.runtime import LoadedModel
from civicml.store import Context
from civicml.training import TabularModel
from tests.serving.helpers import MODEL, records, register

THREADS = 16
POISON_AGE = 999  # a valid value the wrapped predict refuses (a failure inside predict)


class Calls:
    """Wraps ``LoadedModel.predict``: records each call's row count; can hold the first call
    until a number of requests queued behind it, and fail on a poisoned row."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.hold_until_queued = 0
        self.lock = threading.Lock()

    def wrap(self, original: Callable[[LoadedModel, Any], Any]) -> Callable[..., Any]:
        def predict(loaded: LoadedModel, frame: Any) -> Any:
            with self.lock:
                self.sizes.append(len(frame))
                first = len(self.sizes) == 1
            if first and self.hold_until_queued:
                deadline = time.monotonic() + 10
                while loaded.batcher.queued < self.hold_until_queued:
                    assert time.monotonic() < deadline, "requests never queued"
                    time.sleep(0.001)
            if (ages(frame) == POISON_AGE).any():
                raise RuntimeError("poisoned row")
            return original(loaded, frame)

        return predict


def ages(batch: Any) -> Any:
    """The ``age`` column of a prepared batch: a validated frame or fast-path encoded rows
    (whose number matrix holds ``age`` first: the signature's first number column)."""
    if isinstance(batch, Encoded):
        return batch.numbers[:, 0]
    return batch["age"]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    recorder = Calls()
    monkeypatch.setattr(LoadedModel, "predict", recorder.wrap(LoadedModel.predict))
    yield recorder


@pytest.fixture
def web(ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost) -> str:
    register(ctx, model_dirs[0])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    return "web"


def assert_same(got: Any, want: Any) -> None:
    """Probabilities equal to the last bits: BLAS may round a row's dot product differently in
    a 1-row and a many-row product (the 16th digit), so exact equality is not guaranteed."""
    import numpy as np

    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def run_concurrently(fn: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """``fn(i)`` for i in range(n), each in its own thread; results (or exceptions) in order."""
    out: list[Any] = [None] * n
    start = threading.Barrier(n)

    def worker(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except BaseException as err:
            out[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_concurrent_requests_share_one_predict_with_identical_results(
    project: str, web: str, host: ModelHost, model_dirs: tuple[Path, Path], calls: Calls
) -> None:
    requests = [records(1 + i % 4, seed=100 + i) for i in range(THREADS)]
    model = TabularModel.load(model_dirs[0])
    expected = [
        (model.predict(rows).tolist(), model.predict_proba(rows).tolist()) for rows in requests
    ]
    calls.hold_until_queued = THREADS - 1  # the first predict runs until all others queued
    results = run_concurrently(lambda i: host.invoke(project, web, requests[i]))
    for result, (predictions, probabilities), rows in zip(results, expected, requests, strict=True):
        assert not isinstance(result, BaseException), result
        assert result["predictions"] == predictions
        assert_same(result["probabilities"], probabilities)
        assert len(result["inference_ids"]) == len(rows)
    # The first request alone, then everything that queued meanwhile in ONE predict.
    assert len(calls.sizes) == 2
    assert sum(calls.sizes) == sum(len(rows) for rows in requests)
    ids = [i for r in results for i in r["inference_ids"]]
    assert len(set(ids)) == len(ids)


def test_batched_results_match_unbatched_without_holding(
    project: str, web: str, host: ModelHost, model_dirs: tuple[Path, Path]
) -> None:
    """Free-running: whatever batches form, every caller gets its own rows' predictions."""
    model = TabularModel.load(model_dirs[0])
    requests = [records(1 + i % 3, seed=200 + i) for i in range(THREADS)]
    expected = [model.predict_proba(rows).tolist() for rows in requests]

    def client(i: int) -> list[list[list[float]] | None]:
        return [host.invoke(project, web, requests[i])["probabilities"] for _ in range(20)]

    for answers, want in zip(run_concurrently(client), expected, strict=True):
        assert not isinstance(answers, BaseException), answers
        for answer in answers:
            assert_same(answer, want)


def test_a_bad_request_fails_alone(
    project: str, web: str, host: ModelHost, model_dirs: tuple[Path, Path], calls: Calls
) -> None:
    model = TabularModel.load(model_dirs[0])
    requests = [records(2, seed=300 + i) for i in range(THREADS)]
    requests[3][1]["age"] = "forty"  # fails validation, before batching
    requests[7][0]["age"] = POISON_AGE  # valid, but its predict fails inside the batch
    calls.hold_until_queued = THREADS - 2  # everyone but the leader and the invalid request
    results = run_concurrently(lambda i: host.invoke(project, web, requests[i]))
    assert isinstance(results[3], InvalidInputError) and "'age'" in str(results[3])
    assert isinstance(results[7], RuntimeError) and "poisoned" in str(results[7])
    for i, result in enumerate(results):
        if i in (3, 7):
            continue
        assert not isinstance(result, BaseException), (i, result)
        assert result["predictions"] == model.predict(requests[i]).tolist()
        assert_same(result["probabilities"], model.predict_proba(requests[i]).tolist())
    # A lone leader, then one batch of the other 14. Whichever thread leads is up to the
    # scheduler: when the poisoned request led (and failed alone) the batch succeeds; otherwise
    # the batch fails on the poisoned row and is retried one request at a time.
    assert calls.sizes[:2] == [2, 2 * (THREADS - 2)]
    assert len(calls.sizes) in (2, 2 + THREADS - 2)


def test_a_single_request_is_not_delayed_or_batched(
    project: str, web: str, host: ModelHost, calls: Calls
) -> None:
    for n in (1, 5, 1):
        host.invoke(project, web, records(n))
    assert calls.sizes == [1, 5, 1]  # each predicted at once, alone, with its own rows


def test_lone_predict_gets_the_callers_frame_unchanged() -> None:
    seen: list[Any] = []

    def predict(frame: Any) -> tuple[list[Any], None]:
        seen.append(frame)
        return list(frame["x"]), None

    batcher = MicroBatcher(predict)
    frame = pd.DataFrame({"x": [1, 2]})
    assert batcher.predict(frame) == ([1, 2], None)
    assert seen == [frame] and seen[0] is frame  # no copy, no concatenation, no wait
    assert batcher.queued == 0


def test_batches_respect_max_rows() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def predict(frame: Any) -> tuple[list[Any], None]:
        sizes.append(len(frame))
        if len(sizes) == 1:
            release.wait(10)
        return list(frame["x"]), None

    batcher = MicroBatcher(predict, max_rows=4)
    frames = [pd.DataFrame({"x": [i, i]}) for i in range(7)]

    def call(i: int) -> Any:
        if i:
            while not sizes or batcher.queued < i - 1:  # queue in order after the first
                time.sleep(0.001)
        return batcher.predict(frames[i])

    def releaser() -> None:
        while batcher.queued < 6:
            time.sleep(0.001)
        release.set()

    helper = threading.Thread(target=releaser)
    helper.start()
    results = run_concurrently(call, n=7)
    helper.join()
    assert [r[0] for r in results] == [[i, i] for i in range(7)]
    assert sizes == [2, 4, 4, 4]


# An all-numeric model: validation takes the float64 shortcut. ---------------------------------
def numeric_model() -> LoadedModel:
    import numpy as np

    from civicml.training import fit_tabular

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
    frame["n"] = rng.integers(0, 50, 400)
    frame["label"] = x[:, 0] + rng.normal(size=400) > 0
    model = fit_tabular(frame, "label", algorithm="logistic", seed=0)
    return LoadedModel("v", "numeric", 1, model, list(model.classes_), True)


def numeric_records(rows: int, seed: int) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = [
        {**{f"f{i}": float(v) for i, v in enumerate(rng.normal(size=20))}, "n": int(k)}
        for k in rng.integers(0, 50, rows)
    ]
    return out


def test_numeric_shortcut_equals_model_validate() -> None:
    loaded = numeric_model()
    rows = numeric_records(30, seed=1)
    rows[2]["f3"] = None
    rows[4]["n"] = 7.0  # a whole float in an integer column
    rows[5]["f1"] = 3  # an int in a float column
    pd.testing.assert_frame_equal(loaded.validate(rows), loaded.model.validate(rows))
    # Anything the shortcut does not take plainly goes through the model's own validation.
    for bad, column in (({"n": 1.5}, "'n'"), ({"f0": "x"}, "'f0'"), ({"f0": True}, "'f0'")):
        with pytest.raises(InvalidInputError, match=column):
            loaded.validate([{**rows[0], **bad}])
    with pytest.raises(InvalidInputError, match="'extra'"):
        loaded.validate([{**rows[0], "extra": 1.0}])


def test_numeric_batches_match_unbatched() -> None:
    """Batched answers equal each request's own predict: labels exactly, probabilities to the
    last bits (see :func:`assert_same`)."""
    loaded = numeric_model()
    requests = [numeric_records(1 + i % 3, seed=10 + i) for i in range(THREADS)]
    expected = [loaded.predict(loaded.validate(rows)) for rows in requests]

    def client(i: int) -> list[Any]:
        return [loaded.predict_batched(loaded.validate(requests[i])) for _ in range(20)]

    for answers, (labels, proba) in zip(run_concurrently(client), expected, strict=True):
        assert not isinstance(answers, BaseException), answers
        for got_labels, got_proba in answers:
            assert got_labels == labels
            assert_same(got_proba, proba)
