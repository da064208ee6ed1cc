"""A pipeline's step records are committed without waiting for the disk; the execution's start
and end wait: when ``run`` returns, every record of the execution is durable (the database keeps
commits in order, so the last durable commit makes the ones before it durable too)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

import civicml as cm
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.pipelines import ExecutionStatus, PipelineService
from civicml.store import Context
from civicml.store.db import MetadataStore

PROJECT = "benefits"


@cm.step
def first(n: int) -> int:
    return n + 1


@cm.step
def second(x: int) -> int:
    return x * 2


@cm.pipeline(name="durability")
def durability(n: int = 1) -> None:
    second(first(n))


def test_step_records_skip_the_sync_and_the_execution_end_waits_for_it(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    ProjectService(ctx).create(PROJECT)
    service = PipelineService(ctx)
    writes: list[bool] = []
    original = MetadataStore.write

    @contextlib.contextmanager
    def spy(self: MetadataStore, *, durable: bool = True) -> Iterator[Any]:
        writes.append(durable)
        with original(self, durable=durable) as uow:
            yield uow

    monkeypatch.setattr(MetadataStore, "write", spy)
    execution = service.run(durability, project=PROJECT)

    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.step("second").outputs
    # Each step's start and end skip the sync (four commits); the execution's start and end do
    # not, and its end is the last commit of all.
    assert writes.count(False) >= 4
    assert writes[0] is True
    assert writes[-1] is True
    # Every event of the execution is covered by the signed head of that last, durable commit.
    report = AuditTrail(ctx).verify()
    assert report.ok
    assert report.witness is not None
    assert report.witness.seq == AuditTrail(ctx).list()[-1].seq
