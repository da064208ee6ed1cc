"""A step's DataFrame output is handed to the steps after it as soon as it is hashed, and stored
meanwhile: the step is recorded ``succeeded`` (a cache hit for later runs) only once its output
is durable; a store that fails then fails the step and the execution, and retry completes it."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import pytest

import civicml as cm
from civicml.governance.projects import ProjectService
from civicml.pipelines import ExecutionStatus, PipelineService
from civicml.pipelines import service as pipeline_service
from civicml.pipelines.values import Encoded, StoredValue, persist
from civicml.store import Context
from civicml.tracking.service import TrackingService

PROJECT = "benefits"
seen: dict[str, Any] = {}
downstream_started = threading.Event()


@cm.step
def make(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"x": list(range(rows)), "region": ["north", "south"] * (rows // 2)})


@cm.step
def total(frame: pd.DataFrame) -> int:
    here = cm.pipelines.current()
    upstream = PipelineService(here.ctx).get(here.execution_id).step("make")
    seen.setdefault("make_when_total_started", upstream.status.value)
    downstream_started.set()
    frame.loc[0, "x"] = 1_000  # its own copy: the other reader does not see this
    return int(frame["x"].sum())


@cm.step
def count(frame: pd.DataFrame) -> int:
    seen["count_first_x"] = int(frame["x"].iloc[0])
    return len(frame)


@cm.step
def report(total_: int, count_: int) -> dict[str, int]:
    return {"total": total_, "count": count_}


@cm.pipeline(name="handoff")
def handoff(rows: int = 10) -> None:
    frame = make(rows)
    report(total(frame), count(frame))


@pytest.fixture(autouse=True)
def _reset() -> None:
    seen.clear()
    downstream_started.clear()


@pytest.fixture
def service(ctx: Context) -> PipelineService:
    ProjectService(ctx).create(PROJECT)
    return PipelineService(ctx)


def _statuses(execution: Any) -> dict[str, str]:
    return {s.step: s.status.value for s in execution.steps}


def test_the_next_steps_start_before_the_frame_is_durable_and_it_succeeds_after(
    service: PipelineService, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_persist(store: Any, encoded: Encoded) -> StoredValue:
        if encoded.kind == "arrow":  # make's frame: stored only once a reader has started
            assert downstream_started.wait(60), "no step started on the frame in memory"
        return persist(store, encoded)

    monkeypatch.setattr(pipeline_service, "persist", slow_persist)
    execution = service.run(handoff, project=PROJECT)

    assert execution.status is ExecutionStatus.SUCCEEDED
    assert seen["make_when_total_started"] == "running"  # not recorded before it was durable
    assert seen["count_first_x"] == 0
    out = execution.step("make").outputs["output"]
    assert ctx.artifacts.exists(out["digest"])
    assert execution.step("report").outputs  # a JSON output: stored before the next step
    # The cache key holds the frame's content hash, the same as a later run computes.
    again = service.run(handoff, project=PROJECT)
    assert _statuses(again) == dict.fromkeys(_statuses(execution), "cached")
    assert again.step("total").cache_key == execution.step("total").cache_key


def test_a_frame_that_cannot_be_stored_fails_its_step_and_retry_completes(
    service: PipelineService, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(store: Any, encoded: Encoded) -> StoredValue:
        if encoded.kind == "arrow":
            assert downstream_started.wait(60)
            raise OSError("No space left on device")
        return persist(store, encoded)

    monkeypatch.setattr(pipeline_service, "persist", disk_full)
    failed = service.run(handoff, project=PROJECT)

    assert failed.status is ExecutionStatus.FAILED
    assert failed.step("make").status.value == "failed"
    assert "No space left on device" in (failed.step("make").error or "")
    # total had started on the frame in memory and finishes; nothing more starts after it.
    assert failed.step("total").status.value == "succeeded"
    assert failed.step("report").status.value == "skipped"
    assert failed.step("count").status.value == "succeeded"

    monkeypatch.setattr(pipeline_service, "persist", persist)
    downstream_started.set()
    done = service.retry(failed.id, handoff)

    assert done.status is ExecutionStatus.SUCCEEDED
    assert _statuses(done)["make"] == "succeeded"
    assert _statuses(done)["report"] == "succeeded"
    assert ctx.artifacts.exists(done.step("make").outputs["output"]["digest"])


@cm.step(compress=True)
def make_small(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"x": list(range(rows)), "region": ["north", "south"] * (rows // 2)})


@cm.pipeline(name="handoff-compressed")
def handoff_compressed(rows: int = 10) -> None:
    frame = make_small(rows)
    report(total(frame), count(frame))


def test_a_step_may_store_its_frames_compressed_with_the_same_cache_keys(
    service: PipelineService, ctx: Context
) -> None:
    plain = service.run(handoff, project=PROJECT, params={"rows": 600})
    small = service.run(handoff_compressed, project=PROJECT, params={"rows": 600})

    assert plain.status is small.status is ExecutionStatus.SUCCEEDED
    stored = StoredValue.from_dict(plain.step("make").outputs["output"])
    packed = StoredValue.from_dict(small.step("make_small").outputs["output"])
    assert stored.digest == stored.sha256 == packed.sha256 != packed.digest
    assert packed.size < stored.size
    frame = pipeline_service.load_value(ctx.artifacts, packed)
    assert frame["x"].tolist() == list(range(600))
    # The frame's content is the same, so the step after it is a cache hit.
    assert small.step("total").status.value == "cached"
    assert small.step("total").cache_key == plain.step("total").cache_key


def test_a_steps_inputs_are_decoded_while_its_run_is_created(
    service: PipelineService, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading = threading.Event()
    decoded_meanwhile: dict[str, bool] = {}
    load_inputs = pipeline_service._load_inputs
    create_run = TrackingService.create_run

    def load(*args: Any) -> dict[str, Any]:
        loading.set()
        return load_inputs(*args)

    def create(self: TrackingService, project: str, **kwargs: Any) -> Any:
        if kwargs.get("name") == "total":  # reads make's frame, handed over in memory
            decoded_meanwhile["total"] = loading.wait(30)
        return create_run(self, project, **kwargs)

    monkeypatch.setattr(pipeline_service, "_load_inputs", load)
    monkeypatch.setattr(TrackingService, "create_run", create)
    execution = service.run(handoff, project=PROJECT)

    assert execution.status is ExecutionStatus.SUCCEEDED
    assert decoded_meanwhile == {"total": True}
    assert execution.step("report").status.value == "succeeded"
    assert seen["count_first_x"] == 0  # each reader still has its own copy
