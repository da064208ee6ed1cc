"""Shadow variants: sampled copies of live requests, answered off the request path, compared."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from civicml.core import ConflictError, InvalidInputError, Settings
from civicml.governance.audit import AuditTrail
from civicml.serving import (
    CaptureService,
    CaptureWriter,
    EndpointService,
    ModelHost,
    ShadowReportService,
    VariantService,
)
from civicml.serving._shadow_process import ShadowWorkers
from civicml.serving.comparison import compare
from civicml.serving.runtime import LoadedModel
from civicml.store import Context
from civicml.training import TabularModel
from tests.serving.helpers import MODEL, records, register


def _shadowed(ctx: Context, host: ModelHost, model_dirs: tuple[Path, Path], percent: float) -> None:
    register(ctx, model_dirs[0])
    register(ctx, model_dirs[1])
    EndpointService(ctx, host).deploy("benefits", "web", MODEL, 1)
    VariantService(ctx, host).set_shadow("benefits", "web", MODEL, 2, percent=percent)


def _ready(host: ModelHost, project: str, seed: int = 100) -> list[int]:
    """Send copies until the shadow's worker is ready (until then they are answered in the
    thread, or dropped after a failure); the pids of the ready workers."""
    workers = host._shadow_workers
    assert workers is not None
    deadline = time.monotonic() + 120
    while not workers._workers:
        assert time.monotonic() < deadline, "the worker did not become ready"
        host.invoke(project, "web", records(1, seed=seed))
        assert host.drain_shadow()
        time.sleep(0.1)
    return [w.process.pid for w in workers._workers.values()]


def test_the_shadow_never_changes_a_live_answer(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _shadowed(ctx, host, model_dirs, 100)
    rows = records(40, seed=3)
    live = TabularModel.load(model_dirs[0])
    answers = [host.invoke(project, "web", [row]) for row in rows]
    assert {a["variant"] for a in answers} == {"v1"}
    np.testing.assert_allclose(
        [a["probabilities"][0] for a in answers], live.predict_proba(rows), rtol=1e-12
    )
    assert host.drain_shadow()
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    shadow = [c for c in captured if c["eventMetadata"]["shadow"]]
    assert len(shadow) == len(captured) - len(shadow) == 40
    assert {c["eventMetadata"]["variant"] for c in shadow} == {"v2-shadow"}
    ids = [a["inference_ids"][0] for a in answers]
    assert sorted(c["eventMetadata"]["eventId"] for c in shadow) == sorted(ids)  # pairs
    expected = TabularModel.load(model_dirs[1]).predict_proba(rows)
    by_id = {c["eventMetadata"]["eventId"]: c for c in shadow}
    got = [json.loads(by_id[i]["captureData"]["endpointOutput"]["data"]) for i in ids]
    np.testing.assert_allclose([g["probabilities"] for g in got], expected, rtol=1e-12)
    frame = CaptureService(ctx, host.capture).to_frame(project, "web")
    assert len(frame) == 40  # the shadow's records are never live data
    pinned = host.invoke(project, "web", rows[:1], variant="v2-shadow")  # tried by hand
    assert pinned["variant"] == "v2-shadow"


def test_pinned_requests_are_not_copied_and_the_sample_follows_the_percent(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _shadowed(ctx, host, model_dirs, 25)
    n = 800
    for _ in range(n):
        host.invoke(project, "web", records(1))
    host.invoke(project, "web", records(1), variant="v1")
    assert host.drain_shadow()
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    copies = sum(bool(c["eventMetadata"]["shadow"]) for c in captured)
    sigma = (n * 0.25 * 0.75) ** 0.5
    assert abs(copies - n * 0.25) <= 4.5 * sigma


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_full_shadow_queue_drops_copies_and_counts_them(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    settings = Settings.load(
        home=ctx.settings.home, serving_shadow_queue=1, serving_shadow_mode=mode
    )
    host = ModelHost(replace(ctx, settings=settings), capture=CaptureWriter(ctx, max_age_s=3600))
    try:
        _shadowed(ctx, host, model_dirs, 100)
        gate, gate_reached = threading.Event(), threading.Event()
        if mode == "thread":
            original = LoadedModel.predict

            def slow(self: LoadedModel, frame: Any) -> Any:
                if self.version == 2:  # the shadow waits until released
                    gate_reached.set()
                    gate.wait(30)
                return original(self, frame)

            monkeypatch.setattr(LoadedModel, "predict", slow)
        else:
            _ready(host, project)  # the copies go to the worker, not to this thread
            answer = ShadowWorkers.answer

            def stuck(self: ShadowWorkers, route: Any, copies: list[bytes]) -> Any:
                gate_reached.set()
                gate.wait(30)  # the worker's answers wait until released
                return answer(self, route, copies)

            monkeypatch.setattr(ShadowWorkers, "answer", stuck)
        warm = sum(1 for c in CaptureService(ctx, host.capture).records(project, "web")
                   if c["eventMetadata"]["shadow"])  # fmt: skip
        rows = records(1)
        answers = [host.invoke(project, "web", rows)["variant"] for _ in range(20)]
        assert answers == ["v1"] * 20  # every live answer came while the shadow was stuck
        info = EndpointService(ctx, host).get(project, "web")
        assert info.stats is not None and info.stats.shadow_dropped >= 18
        assert gate_reached.wait(10)  # the shadow was stuck where this mode answers
        gate.set()
        assert host.drain_shadow()
        shadow = [
            c
            for c in CaptureService(ctx, host.capture).records(project, "web")
            if c["eventMetadata"]["shadow"]
        ]
        assert 1 <= len(shadow) - warm <= 2 and all(
            "probabilities" in c["captureData"]["endpointOutput"]["data"] for c in shadow
        )
    finally:
        host.close()


def test_a_shadow_needs_capture_and_a_sensible_percent(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    register(ctx, model_dirs[1])
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1, capture=False)
    variants = VariantService(ctx, host)
    with pytest.raises(ConflictError, match="has data capture off"):
        variants.set_shadow(project, "web", MODEL, 2)
    EndpointService(ctx, host).update(project, "web", capture=True)
    with pytest.raises(InvalidInputError, match="Shadow percentage 0 copies nothing"):
        variants.set_shadow(project, "web", MODEL, 2, percent=0)
    with pytest.raises(InvalidInputError, match="Shadow percentage 120 is out of range"):
        variants.set_shadow(project, "web", MODEL, 2, percent=120)
    with pytest.raises(ConflictError, match="has a live variant 'v1'"):
        variants.set_shadow(project, "web", MODEL, 2, name="v1")
    with pytest.raises(ConflictError, match="has no shadow variant"):
        variants.remove_shadow(project, "web")
    info = variants.set_shadow(project, "web", MODEL, 2, percent=10)
    assert [(v.name, v.role.value, v.shadow_percent) for v in info.variants] == [
        ("v1", "live", 0.0),
        ("v2-shadow", "shadow", 10.0),
    ]
    assert [v.name for v in variants.remove_shadow(project, "web").variants] == ["v1"]


def test_the_comparison_report_agrees_with_an_independent_count(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _shadowed(ctx, host, model_dirs, 100)
    rows = records(150, seed=5)
    for row in rows:
        host.invoke(project, "web", [row])
    reports = ShadowReportService(ctx, host)
    report = reports.create(project, "web", min_pairs=100, min_agreement=0.5)
    full = reports.read(project, "web", report.id)
    a, b = TabularModel.load(model_dirs[0]), TabularModel.load(model_dirs[1])
    same = (a.predict(rows) == b.predict(rows)).sum()
    diff = np.abs(a.predict_proba(rows) - b.predict_proba(rows)).max(axis=1)
    assert (full.pairs, full.agreements, full.task) == (150, int(same), "classification")
    assert full.agreement_rate == pytest.approx(same / 150)
    assert full.score_differences is not None
    assert full.score_differences.mean_abs == pytest.approx(diff.mean(), rel=1e-9)
    assert full.score_differences.max_abs == pytest.approx(diff.max(), rel=1e-9)
    assert full.score_differences.p90 == pytest.approx(np.quantile(diff, 0.9), rel=1e-9)
    assert full.live_latency.n == full.shadow_latency.n == 150
    assert full.shadow_errors == 0 and full.live_variants == ["v1"]
    assert report.summary.recommendation == full.recommendation
    assert [f.path for f in report.files] == ["report.html", "report.json"]
    with reports.open_file(project, "web", report.id, "report.html") as handle:
        page = handle.read().decode()
    assert "Shadow v2-shadow vs live on endpoint web" in page and "<script" not in page
    assert reports.list(project, "web") == [report]
    strict = reports.create(project, "web", min_pairs=1000)
    assert strict.summary.recommendation == "do_not_promote"
    assert "Only 150 pairs were captured; at least 1000 are needed." in strict.summary.reasons
    actions = [e.action for e in AuditTrail(ctx).list(entity_kind="endpoint")]
    assert actions.count("endpoint.shadow_report_created") == 2


def _record(event: str, prediction: Any, *, shadow: bool, latency: float = 1.0) -> dict[str, Any]:
    return {
        "captureData": {"endpointOutput": {"data": json.dumps({"prediction": prediction})}},
        "eventMetadata": {
            "eventId": event,
            "variant": "s" if shadow else "live",
            "shadow": shadow,
            "latencyMs": latency,
            "modelName": "m",
            "modelVersion": 2 if shadow else 1,
        },
    }


def test_regression_agreement_uses_the_tolerance_and_latency_can_block_a_promotion() -> None:
    records_ = []
    for i, (live, shadow) in enumerate([(100.0, 100.5), (100.0, 102.0), (0.001, 0.005)]):
        records_.append(_record(str(i), live, shadow=False, latency=1.0))
        records_.append(_record(str(i), shadow, shadow=True, latency=5.0))
    records_.append(_record("lonely", 1.0, shadow=True))  # its live record was not captured
    result = compare(records_, shadow_variant="s", tolerance=0.01, min_pairs=3, min_agreement=0.5)
    assert (result.task, result.pairs, result.agreements, result.unpaired) == (
        "regression", 3, 2, 1,
    )  # fmt: skip
    assert result.score_differences is not None
    assert result.score_differences.max_abs == pytest.approx(2.0)
    assert result.recommendation == "do_not_promote"
    assert any("p99 latency 5 ms is above 1.2 ms" in r for r in result.reasons)


def test_the_shadow_thread_answers_a_burst_in_order_on_few_wake_ups() -> None:
    """Copies queued while the thread waits are all answered, in order, each on its own, on a
    few wake-ups (not one per copy: a wake-up takes the interpreter lock from the live
    requests); a failing copy does not stop the rest; close() ends the thread."""
    from datetime import UTC, datetime

    from civicml.serving.shadow import ShadowAnswer, ShadowJob, ShadowRunner

    answered: list[int] = []

    def answer(job: ShadowJob) -> ShadowAnswer:
        if job.rows == 3:
            raise RuntimeError("this copy fails")
        return ShadowAnswer(predictions=[job.rows])

    def record(job: ShadowJob, got: ShadowAnswer | None) -> None:
        assert got is not None and got.predictions is not None
        answered.append(got.predictions[0])

    runner = ShadowRunner(answer, record, queue_size=100)
    waits = 0
    blocking_get = runner._queue.get

    def counted_get(block: bool = True, timeout: float | None = None) -> Any:
        nonlocal waits
        waits += block  # get_nowait() is get(block=False): no wait
        return blocking_get(block, timeout)

    runner._queue.get = counted_get  # type: ignore[method-assign]
    when = datetime.now(UTC)
    for i in range(40):
        assert runner.offer(ShadowJob(route=None, rows=i, inference_ids=[], caller=None, time=when))
    assert runner.drain(10)
    assert answered == [i for i in range(40) if i != 3]
    assert waits <= 5, f"{waits} wake-ups for 40 copies offered at once"
    runner.close()
    assert runner._thread is not None and not runner._thread.is_alive()


def test_on_an_event_loop_fast_copies_are_answered_between_its_callbacks() -> None:
    """With answer_on_loop, copies the predicate takes are answered on the loop, one per turn,
    in order, offered from the loop's thread or another; the others go to the shadow thread;
    a full loop queue drops copies; drain() on the loop's thread answers what waits there;
    close() drops what is left."""
    import asyncio
    from datetime import UTC, datetime

    from civicml.serving.shadow import ShadowAnswer, ShadowJob, ShadowRunner

    where: dict[Any, str] = {}
    events: list[tuple[str, Any]] = []

    def answer(job: ShadowJob) -> ShadowAnswer:
        where[job.rows] = threading.current_thread().name
        events.append(("copy", job.rows))
        return ShadowAnswer(predictions=[job.rows])

    def record(job: ShadowJob, got: ShadowAnswer | None) -> None:
        assert got is not None and got.predictions == [job.rows]

    runner = ShadowRunner(answer, record, queue_size=50)
    when = datetime.now(UTC)

    def job(rows: Any) -> ShadowJob:
        return ShadowJob(route=None, rows=rows, inference_ids=[], caller=None, time=when)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runner.answer_on_loop(loop, lambda j: j.rows != "slow")
        for i in range(10):
            assert runner.offer(job(i))
            loop.call_soon(events.append, ("work", i))  # the loop's own callbacks
        assert runner.offer(job("slow"))
        other = threading.Thread(target=lambda: [runner.offer(job(100 + i)) for i in range(5)])
        other.start()
        other.join()
        for _ in range(200):
            if len(where) == 16:
                break
            await asyncio.sleep(0.01)
        assert runner.drain(0)
        # The loop's queue holds 50 copies at most: the rest are dropped (the caller counts).
        assert sum(runner.offer(job(1000 + i)) for i in range(60)) == 50
        assert runner.drain(5)  # on the loop's thread: answered here, now
        runner.offer(job("left"))
        runner.close()
        assert runner.drain(0)  # dropped, not waited for

    asyncio.run(scenario())
    on_loop = {where[i] for i in [*range(10), *range(100, 105), *range(1000, 1050)]}
    assert on_loop == {"MainThread"}
    assert where["slow"] == "civicml-shadow"
    assert "left" not in where and 1050 not in where
    # One copy per turn: the loop's own callbacks ran before the second copy, not after all.
    assert events.index(("work", 9)) < events.index(("copy", 1))
    copies = [rows for kind, rows in events if kind == "copy" and isinstance(rows, int)]
    assert copies[:10] == list(range(10))  # in the order offered


def test_a_server_loop_answers_shadow_copies_without_the_shadow_thread(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    """A model host given the server's event loop answers copies to a fast-path shadow on it:
    every copy captured with the shadow's answer and its own latency, the shadow thread never
    started."""
    import asyncio

    if host._shadow._workers is not None:
        pytest.skip("process mode on this machine: the loop is not used")
    _shadowed(ctx, host, model_dirs, 100)
    rows = records(25, seed=4)

    async def serve() -> list[Any]:
        host.answer_shadow_on(asyncio.get_running_loop())
        answers = [host.invoke(project, "web", [row]) for row in rows]
        for _ in range(300):
            if host._shadow._pending == 0:
                break
            await asyncio.sleep(0.01)
        return answers

    answers = asyncio.run(serve())
    assert host._shadow._thread is None
    assert host.drain_shadow(5)
    captured = list(CaptureService(ctx, host.capture).records(project, "web"))
    shadow = {c["eventMetadata"]["eventId"]: c for c in captured if c["eventMetadata"]["shadow"]}
    ids = [a["inference_ids"][0] for a in answers]
    assert sorted(shadow) == sorted(ids)
    got = [json.loads(shadow[i]["captureData"]["endpointOutput"]["data"]) for i in ids]
    expected = TabularModel.load(model_dirs[1]).predict_proba(rows)
    np.testing.assert_allclose([g["probabilities"] for g in got], expected, rtol=1e-12)
    assert all(shadow[i]["eventMetadata"]["latencyMs"] is not None for i in ids)


def test_copies_go_to_a_worker_in_one_message_unless_too_big_or_not_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of plain records is one message (one json.dumps); records that are not plain
    JSON (a DataFrame, a NaN) stay for the thread; past the message size the copies are split,
    in order, each message the JSON array of its copies' records."""
    from datetime import UTC, datetime

    import pandas as pd

    from civicml.serving import shadow
    from civicml.serving.shadow import ShadowJob

    def job(rows: Any) -> ShadowJob:
        return ShadowJob(None, rows, ["i"], None, datetime.now(UTC))

    plain = [job([{"a": n}]) for n in range(4)]
    odd = [job(pd.DataFrame([{"a": 1}])), job([{"a": float("nan")}])]
    [(sent, data)], here = shadow._messages(plain)
    assert sent == plain and here == [] and json.loads(data) == [j.rows for j in plain]
    messages, here = shadow._messages([plain[0], odd[0], plain[1], odd[1]])
    assert here == odd and [(s, json.loads(d)) for s, d in messages] == [
        (plain[:2], [plain[0].rows, plain[1].rows])
    ]
    monkeypatch.setattr(shadow, "_CHUNK_BYTES", 25)
    messages, here = shadow._messages(plain)
    assert here == [] and [len(s) for s, _ in messages] == [2, 2]
    assert [r for s, d in messages for r in json.loads(d)] == [j.rows for j in plain]
