"""Columns computed side by side: NumPy's sorts, searches and histograms release the GIL, so a
thread per core shortens a wide report on a large frame almost by the number of cores. Each
thread holds its column's working set, so a memory budget caps their number on many cores."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from civicml.core.process import usable_cpus

__all__ = ["column_pool", "workers"]

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Below this many cells (rows of both frames) threads cost more than they save.
_MIN_ROWS = 50_000


class _Serial:
    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
        return map(fn, items)


def workers(rows: int, columns: int, task_bytes: int = 0, budget_bytes: int = 0) -> int:
    """How many threads :func:`column_pool` starts (1: none): one per core, at most one per
    column, none below 50,000 rows; and where ``task_bytes`` (the memory one column's work
    holds) and ``budget_bytes`` (what all of them together may hold) are given, no more than
    the budget allows — but two where there are two cores, so a small box keeps its threads."""
    count = min(usable_cpus(), columns)
    if rows < _MIN_ROWS or count < 2:
        return 1
    if task_bytes > 0 and budget_bytes > 0:
        count = min(count, max(2, budget_bytes // task_bytes))
    return count


@contextlib.contextmanager
def column_pool(
    rows: int, columns: int, *, task_bytes: int = 0, budget_bytes: int = 0
) -> Iterator[Any]:
    """Something with ``map(fn, items)`` (results in order, the first error raised): a thread
    per core as :func:`workers` counts them; else plain ``map``."""
    count = workers(rows, columns, task_bytes, budget_bytes)
    if count < 2:
        yield _Serial()
        return
    with ThreadPoolExecutor(count, thread_name_prefix="civicml-drift") as pool:
        yield pool
