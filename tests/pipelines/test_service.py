"""PipelineService: graph building, caching, resume, parallelism, values and permissions."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pandas as pd
import pytest

import civicml as cm
from civicml.core import FrozenClock, Principal
from civicml.core.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.pipelines import Execution, ExecutionStatus, OutputRef, PipelineService
from civicml.store import Context
from civicml.tracking.service import TrackingService

PROJECT = "benefits"
calls: Counter[str] = Counter()
broken = {"train": False}


@cm.step
def load(rows: int) -> list[int]:
    calls["load"] += 1
    return list(range(rows))


@cm.step(outputs=("train", "test"))
def split(data: list[int], test_every: int) -> tuple[list[int], list[int]]:
    calls["split"] += 1
    return [x for x in data if x % test_every], [x for x in data if not x % test_every]


@cm.step
def fit(train: list[int], alpha: float) -> dict[str, float]:
    calls["fit"] += 1
    if broken["train"]:
        raise RuntimeError("the training data ran out")
    return {"weight": sum(train) * alpha}


@cm.step
def score(model: dict[str, float], test: list[int]) -> float:
    calls["score"] += 1
    return model["weight"] / (1 + len(test))


@cm.step
def describe(data: list[int]) -> dict[str, int]:
    calls["describe"] += 1
    return {"n": len(data)}


@cm.pipeline(name="toy")
def toy(rows: int = 10, test_every: int = 3, alpha: float = 0.5) -> None:
    data = load(rows)
    train, test = split(data, test_every)
    score(fit(train, alpha), test)
    describe(data)


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken["train"] = False


@pytest.fixture
def service(ctx: Context) -> PipelineService:
    ProjectService(ctx).create(PROJECT)
    return PipelineService(ctx)


def statuses(execution: Execution) -> dict[str, str]:
    return {s.step: s.status.value for s in execution.steps}


def test_the_graph_is_built_without_running_a_step() -> None:
    graph = toy.graph()
    assert list(graph.nodes) == ["load", "split", "fit", "score", "describe"]
    assert graph.nodes["fit"].inputs["train"] == OutputRef("split", "train")
    assert graph.nodes["split"].upstream() == {"load"}
    assert calls == Counter()
    assert len(graph.version()) == 64
    assert graph.version() == toy.graph().version()  # content, not identity


def test_a_second_unchanged_run_executes_no_step(service: PipelineService, ctx: Context) -> None:
    first = service.run(toy, project=PROJECT)
    assert first.status is ExecutionStatus.SUCCEEDED, [
        (s.step, s.status, s.error) for s in first.steps
    ]
    assert set(statuses(first).values()) == {"succeeded"}
    executed = Counter(calls)
    second = service.run(toy, project=PROJECT)
    assert second.status is ExecutionStatus.SUCCEEDED
    assert set(statuses(second).values()) == {"cached"}
    assert calls == executed
    step = second.step("fit")
    assert step.cached_from == first.id
    assert step.cache_key == first.step("fit").cache_key
    assert step.cache_key_doc is not None
    assert set(step.cache_key_doc) == {
        "step",
        "code",
        "parameters",
        "inputs",
        "outputs",
        "environment",
    }
    assert step.cache_key_doc["parameters"] == {"alpha": 0.5}
    assert set(step.cache_key_doc["environment"]) >= {"python", "civicml", "numpy", "pandas"}
    run = TrackingService(ctx).get_run(first.step("fit").run_id or "")
    assert run.params["cache_key"] == step.cache_key
    assert run.experiment == "pipeline.toy"
    upstream = LineageService(ctx).query("run", run.id, direction="upstream")
    assert {n.ref for n in upstream.nodes} == {
        run.id,
        first.step("split").run_id,
        first.step("load").run_id,
    }


def test_a_changed_parameter_reruns_exactly_the_steps_downstream(
    service: PipelineService,
) -> None:
    service.run(toy, project=PROJECT)
    calls.clear()
    again = service.run(toy, project=PROJECT, params={"alpha": 2.0})
    assert statuses(again) == {
        "load": "cached",
        "split": "cached",
        "fit": "succeeded",
        "score": "succeeded",
        "describe": "cached",
    }
    assert calls == Counter({"fit": 1, "score": 1})
    assert again.parameters["alpha"] == 2.0
    overridden = service.run(toy(alpha=2.0), project=PROJECT)  # the same, as a bound pipeline
    assert set(statuses(overridden).values()) == {"cached"}


def test_a_failed_step_fails_the_execution_and_retry_reruns_only_it_and_dependants(
    service: PipelineService, ctx: Context
) -> None:
    broken["train"] = True
    failed = service.run(toy, project=PROJECT)
    assert failed.status is ExecutionStatus.FAILED
    assert statuses(failed) == {
        "load": "succeeded",
        "split": "succeeded",
        "fit": "failed",
        "score": "skipped",
        "describe": "succeeded",
    }
    assert failed.step("fit").error == "RuntimeError: the training data ran out"
    assert TrackingService(ctx).get_run(failed.step("fit").run_id or "").status == "failed"
    broken["train"] = False
    calls.clear()
    retried = service.retry(failed.id)
    assert retried.id == failed.id
    assert retried.status is ExecutionStatus.SUCCEEDED
    assert calls == Counter({"fit": 1, "score": 1})
    assert statuses(retried)["fit"] == "succeeded"
    assert statuses(retried)["load"] == "succeeded"
    actions = [e.action for e in AuditTrail(ctx).list(entity_kind="pipeline_execution")]
    assert sorted(actions) == sorted(
        [
            "pipeline.execution.started",
            "pipeline.execution.failed",
            "pipeline.execution.retried",
            "pipeline.execution.succeeded",
        ]
    )
    with pytest.raises(Exception, match="only failed or cancelled executions"):
        service.retry(failed.id)


def test_independent_steps_run_concurrently(service: PipelineService) -> None:
    barrier = threading.Barrier(2, timeout=60)

    @cm.step(cache=False)
    def left() -> int:
        barrier.wait()  # breaks (fails the step) unless `right` runs at the same time
        return 1

    @cm.step(cache=False)
    def right() -> int:
        barrier.wait()
        return 2

    @cm.step
    def add(a: int, b: int) -> int:
        return a + b

    @cm.pipeline(name="fan-in")
    def fan_in() -> None:
        add(left(), right())

    execution = service.run(fan_in, project=PROJECT)
    errors = {s.step: s.error for s in execution.steps if s.error}
    assert statuses(execution) == {
        "left": "succeeded",
        "right": "succeeded",
        "add": "succeeded",
    }, errors


def test_cache_false_and_expiry_are_honoured(service: PipelineService, clock: FrozenClock) -> None:
    @cm.step(cache=False)
    def always() -> int:
        calls["always"] += 1
        return 1

    @cm.step(cache_expiry_s=60)
    def fresh(x: int) -> int:
        calls["fresh"] += 1
        return x

    @cm.pipeline(name="expiry")
    def expiry() -> None:
        fresh(always())

    service.run(expiry, project=PROJECT)
    second = service.run(expiry, project=PROJECT)
    assert statuses(second) == {"always": "succeeded", "fresh": "cached"}
    clock.advance(seconds=120)
    third = service.run(expiry, project=PROJECT)
    assert statuses(third) == {"always": "succeeded", "fresh": "succeeded"}
    assert calls == Counter({"always": 3, "fresh": 2})


def test_a_cached_output_gone_from_the_store_is_not_a_hit(
    service: PipelineService, ctx: Context
) -> None:
    first = service.run(toy, project=PROJECT)
    digest = first.step("describe").outputs["output"]["digest"]
    path = ctx.artifacts._path(digest)  # simulate a lost object
    path.chmod(0o644)
    path.unlink()
    calls.clear()
    second = service.run(toy, project=PROJECT)
    assert statuses(second)["describe"] == "succeeded"
    assert statuses(second)["fit"] == "cached"
    assert calls == Counter({"describe": 1})


def test_dataframe_and_json_outputs_round_trip(service: PipelineService) -> None:
    seen: dict[str, Any] = {}

    @cm.step(outputs=("frame", "summary"))
    def make() -> tuple[pd.DataFrame, dict[str, Any]]:
        frame = pd.DataFrame({"age": [30, 41], "region": ["north", "south"]})
        return frame, {"rows": 2, "names": ["age", "region"], "ok": True, "none": None}

    @cm.step
    def check(frame: pd.DataFrame, summary: dict[str, Any]) -> int:
        seen["frame"], seen["summary"] = frame, summary
        return len(frame)

    @cm.pipeline(name="frames")
    def frames() -> None:
        frame, summary = make()
        check(frame, summary)

    execution = service.run(frames, project=PROJECT)
    assert execution.status is ExecutionStatus.SUCCEEDED
    pd.testing.assert_frame_equal(
        seen["frame"], pd.DataFrame({"age": [30, 41], "region": ["north", "south"]})
    )
    assert seen["summary"] == {"rows": 2, "names": ["age", "region"], "ok": True, "none": None}
    assert execution.step("make").outputs["frame"]["kind"] == "arrow"
    assert execution.step("make").outputs["summary"]["kind"] == "json"


def test_frames_serialize_to_the_same_bytes_and_parquet_values_still_read() -> None:
    """Arrow IPC bytes are stable (so a re-run step's unchanged output keeps downstream cache
    keys), and a DataFrame stored as Parquet by an earlier version reads back."""
    import io

    from civicml.pipelines.values import deserialize, serialize

    frame = pd.DataFrame(
        {"age": [30, 41, None], "region": ["north", "south", "east"]}, index=[7, 8, 9]
    )
    kind, first = serialize(frame, "make", "frame")
    assert (kind, serialize(frame.copy(), "make", "frame")[1]) == ("arrow", first)
    pd.testing.assert_frame_equal(deserialize("arrow", first), frame)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=True)
    pd.testing.assert_frame_equal(deserialize("parquet", buffer.getvalue()), frame)


def test_a_value_that_only_pickle_could_store_is_refused(service: PipelineService) -> None:
    class Model:
        pass

    @cm.step
    def opaque() -> Model:
        return Model()

    @cm.pipeline(name="opaque")
    def opaque_pipeline() -> None:
        opaque()

    execution = service.run(opaque_pipeline, project=PROJECT)
    assert execution.status is ExecutionStatus.FAILED
    error = execution.step("opaque").error or ""
    assert error.startswith("InvalidInputError: Step 'opaque' returned a ")
    assert "Model as 'output', which civicml cannot store as data (it never pickles)" in error

    @cm.pipeline(name="opaque-input")
    def opaque_input() -> None:
        describe(Model())  # type: ignore[arg-type]

    with pytest.raises(InvalidInputError, match=r"Step 'describe' got a .*Model for 'data'"):
        opaque_input.graph()


def test_running_needs_experiments_write(service: PipelineService, ctx: Context) -> None:
    done = service.run(toy, project=PROJECT)
    viewer = ctx.as_principal(Principal(user="val", roles=frozenset({"viewer"})))
    with pytest.raises(PermissionDeniedError):
        PipelineService(viewer).run(toy, project=PROJECT)
    assert PipelineService(viewer).get(done.id).status is ExecutionStatus.SUCCEEDED
    assert [e.id for e in PipelineService(viewer).list(PROJECT)] == [done.id]
    nobody = ctx.as_principal(Principal(user="nobody", roles=frozenset()))
    with pytest.raises(NotFoundError):
        PipelineService(nobody).get(done.id)


def test_bad_parameters_are_refused_with_a_hint(service: PipelineService) -> None:
    with pytest.raises(InvalidInputError, match="has no parameter 'alfa'") as info:
        service.run(toy, project=PROJECT, params={"alfa": 1})
    assert info.value.hint == "Did you mean 'alpha'?"


def test_run_retry_and_cache_on_sqlite_and_postgresql(any_ctx: Context) -> None:
    ProjectService(any_ctx).create(PROJECT)
    service = PipelineService(any_ctx)
    broken["train"] = True
    failed = service.run(toy, project=PROJECT)
    assert statuses(failed)["score"] == "skipped"
    broken["train"] = False
    assert service.retry(failed.id).status is ExecutionStatus.SUCCEEDED
    again = service.run(toy, project=PROJECT)
    assert set(statuses(again).values()) == {"cached"}
    assert again.step("fit").cached_from == failed.id


def test_a_cancel_during_a_run_starts_no_further_step_and_stands(
    service: PipelineService, ctx: Context
) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @cm.step(cache=False)
    def slow() -> int:
        started.set()
        assert release.wait(30)  # a bound on the test, not a timing assertion
        ran.append("slow")
        return 1

    @cm.step(cache=False)
    def after(x: int) -> int:
        ran.append("after")
        return x + 1

    @cm.pipeline(name="cancelled-midway")
    def midway() -> None:
        after(slow())

    result: dict[str, Execution] = {}
    worker = threading.Thread(
        target=lambda: result.update(done=service.run(midway, project=PROJECT))
    )
    worker.start()
    assert started.wait(30)
    [running] = service.list(PROJECT, pipeline="cancelled-midway")
    PipelineService(ctx).cancel(running.id)  # as the CLI or REST would, from elsewhere
    release.set()
    worker.join(30)

    final = service.get(running.id)
    assert final.status is ExecutionStatus.CANCELLED  # the finishing run did not overwrite it
    assert ran == ["slow"] and statuses(final)["after"] == "skipped"
    assert result["done"].status is ExecutionStatus.CANCELLED
