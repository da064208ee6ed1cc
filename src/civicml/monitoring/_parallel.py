"""Columns computed side by side: NumPy's sorts, searches and histograms release the GIL, so a
thread per core shortens a wide report on a large frame almost by the number of cores."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["SortedMemo", "column_pool"]

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Finite values of a numeric column, sorted, by (``"reference"`` or ``"current"``, column):
#: sorted once by the drift tests and read again by the baseline statistics.
SortedMemo = dict[tuple[str, str], NDArray[np.float64]]

#: Below this many cells (rows of both frames) threads cost more than they save.
_MIN_ROWS = 50_000


class _Serial:
    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
        return map(fn, items)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def column_pool(rows: int, columns: int) -> Iterator[Any]:
    """Something with ``map(fn, items)`` (results in order, the first error raised): a thread
    per core, at most one per column, for ``rows`` of at least 50,000; else plain ``map``."""
    workers = min(_cores(), columns)
    if rows < _MIN_ROWS or workers < 2:
        yield _Serial()
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="civicml-drift") as pool:
        yield pool
