"""Pipelines the schedule tests name by reference (``tests.pipelines.scheduled:echo``): the
scheduler imports them because the tests allow this module in ``pipeline_modules``."""

from __future__ import annotations

import threading
from typing import Any

import civicml as cm

#: (tag, dataset, version) of every execution of ``echo`` in this process, in order.
CALLS: list[tuple[str, Any, Any]] = []
LOCK = threading.Lock()


@cm.step(cache=False)
def remember(tag: str, dataset: Any, version: Any) -> dict[str, Any]:
    with LOCK:
        CALLS.append((tag, dataset, version))
    return {"tag": tag, "dataset": dataset, "version": version}


@cm.pipeline(name="sched-echo")
def echo(tag: str = "cron", dataset: Any = None, version: Any = None) -> None:
    remember(tag, dataset, version)


@cm.step(cache=False)
def explode(reason: str) -> int:
    raise RuntimeError(reason)


@cm.pipeline(name="sched-failing")
def failing(reason: str = "the source system is down") -> None:
    explode(reason)


@cm.pipeline(name="sched-needs")
def needs(dataset: str) -> None:
    remember("needs", dataset, None)


not_a_pipeline = 42
