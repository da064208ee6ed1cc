"""Micro-batching: concurrent invocations of one model share one ``predict`` call.

A :class:`MicroBatcher` sits in front of :meth:`LoadedModel.predict
<civicml.serving.runtime.LoadedModel.predict>`. It never waits on purpose: a request that finds
the model idle predicts at once, alone (a lone request is never delayed). Requests that arrive
while a ``predict`` is running queue up; when that ``predict`` returns, the queued requests (up
to ``max_rows`` rows) become the next batch, run by one of them — the *leader* — as ONE
``predict`` on their concatenated frames, and each caller gets its own slice of the result.
Under load, batches therefore grow to whatever arrived during one ``predict``, which on a
linear model costs about the same for 1 row as for 1,000.

Validation stays per request (the caller validates before submitting), so a bad request fails
alone. Should a batched ``predict`` raise anyway, its requests are retried one by one, so only
the request that really fails sees the error. A batch holds either validated frames or fast-path
encoded rows (:class:`~civicml.serving.fastpath.Encoded`), never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_MAX_ROWS", "MicroBatcher", "Prediction", "concat_frames"]

#: Stop adding requests to a batch once it holds this many rows.
DEFAULT_MAX_ROWS = 1024

Prediction = tuple[list[Any], list[list[float]] | None]
PredictFn = Callable[[Any], Prediction]


class _Request:
    __slots__ = ("done", "error", "frame", "lead", "result", "rows")

    def __init__(self, frame: Any) -> None:
        self.frame = frame
        self.rows = len(frame)
        self.done = threading.Event()
        self.lead: list[_Request] | None = None  # set when this request must run a batch
        self.result: Prediction | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Coalesce concurrent :meth:`predict` calls into one call of ``predict_fn``.

    Args:
        predict_fn: Predicts for a validated frame; answers one prediction (and probability row)
            per row, in order.
        max_rows: The most rows one batch may hold (one request larger than this runs alone).

    Example:
        >>> batcher = MicroBatcher(loaded.predict)  # doctest: +SKIP
        >>> predictions, probabilities = batcher.predict(frame)  # doctest: +SKIP
    """

    def __init__(self, predict_fn: PredictFn, *, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self._predict_fn = predict_fn
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False  # a batch is being predicted (or handed to its leader)

    @property
    def queued(self) -> int:
        """How many requests wait for the running ``predict`` to finish."""
        with self._lock:
            return len(self._queue)

    def predict(self, frame: Any) -> Prediction:
        """Predictions for ``frame``, predicted alone or together with concurrent requests."""
        request = _Request(frame)
        with self._lock:
            if self._busy:
                self._queue.append(request)
                lone = False
            else:
                self._busy = True
                lone = True
        if lone:
            self._run([request])
        else:
            request.done.wait()
            batch = request.lead
            if batch is not None:  # promoted: predict this batch for everyone in it
                self._run(batch)
        if request.error is not None:
            raise request.error
        result = request.result
        if result is None:  # pragma: no cover - every batch member gets a result or an error
            raise RuntimeError("micro-batcher: a request finished without a result")
        return result

    def _run(self, batch: list[_Request]) -> None:
        """Predict ``batch``, hand out the results, then hand the queue to its next leader."""
        try:
            self._predict_batch(batch)
        finally:
            with self._lock:
                following = self._take()
                if not following:
                    self._busy = False
            for request in batch:
                request.done.set()
            if following:
                following[0].lead = following
                following[0].done.set()

    def _take(self) -> list[_Request]:
        """The next batch from the queue: at least one request, at most ``max_rows`` rows."""
        if not self._queue:
            return []
        taken = 1
        rows = self._queue[0].rows
        kind = type(self._queue[0].frame)  # frames and encoded batches are not concatenated
        while (
            taken < len(self._queue)
            and rows + self._queue[taken].rows <= self._max_rows
            and type(self._queue[taken].frame) is kind
        ):
            rows += self._queue[taken].rows
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _predict_batch(self, batch: list[_Request]) -> None:
        if len(batch) == 1:
            self._predict_one(batch[0])
            return
        try:
            predictions, probabilities = self._predict_fn(concat_frames([r.frame for r in batch]))
        except Exception:
            for request in batch:  # find the request that fails; the others still succeed
                self._predict_one(request)
            return
        start = 0
        for request in batch:
            end = start + request.rows
            request.result = (
                predictions[start:end],
                None if probabilities is None else probabilities[start:end],
            )
            start = end

    def _predict_one(self, request: _Request) -> None:
        try:
            request.result = self._predict_fn(request.frame)
        except BaseException as err:  # re-raised in the caller's thread
            request.error = err


def concat_frames(frames: list[Any]) -> Any:
    """Stack prepared batches of one kind into one, rows in order: validated frames (same
    columns, same dtypes) or fast-path :class:`~civicml.serving.fastpath.Encoded` rows."""
    from civicml.serving.fastpath import Encoded

    if isinstance(frames[0], Encoded):
        return Encoded.concat(frames)
    import pandas as pd  # type: ignore[import-untyped]

    return pd.concat(frames, ignore_index=True)
