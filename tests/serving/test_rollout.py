"""Guarded updates: canary, linear and all-at-once steps, bake times, automatic rollback."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from civicml.core import ConflictError, FrozenClock, InvalidInputError, NotFoundError
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.serving import (
    EndpointService,
    ModelHost,
    RolloutService,
    VariantService,
    set_monitor_status,
)
from civicml.serving.rollout import parse_alarm, parse_duration, rollout_steps, step_weights
from civicml.serving.runtime import ModelOutputError
from civicml.serving.schemas import RolloutStrategy
from civicml.store import Context
from tests.serving.helpers import MODEL, records, register, train_nan


def _versions(ctx: Context, model_dirs: tuple[Path, Path]) -> None:
    register(ctx, model_dirs[0])
    register(ctx, model_dirs[1])


def _share(host: ModelHost, project: str, variant: str, n: int = 1000) -> int:
    rows = records(1)
    return sum(host.invoke(project, "web", rows)["variant"] == variant for _ in range(n))


def _within_binomial(count: int, n: int, p: float) -> None:
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= 4.5 * sigma + 1, (count, n, p)


def _actions(ctx: Context) -> list[str]:
    return [e.action for e in AuditTrail(ctx).list(entity_kind="endpoint")]


def test_a_canary_bakes_then_takes_all_the_traffic(
    ctx: Context, clock: FrozenClock, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _versions(ctx, model_dirs)
    endpoints = EndpointService(ctx, host)
    endpoints.deploy(project, "web", MODEL, 1)
    info = endpoints.update(
        project, "web", 2, strategy="canary", canary_percent="10%", bake_s="1m",
        alarms=["5xx_rate>0", "p99_ms>60000"],
    )  # fmt: skip
    rollout = info.rollout
    assert rollout is not None and rollout.status.value == "in_progress"
    assert (rollout.steps, rollout.current_step, rollout.current_percent) == ([10.0, 100.0], 0, 10)
    assert {v.name: round(v.share, 6) for v in info.variants} == {"v1": 0.9, "v2": 0.1}
    n = 1000
    _within_binomial(_share(host, project, "v2", n), n, 0.1)

    service = RolloutService(ctx, host)
    assert service.tick(project, "web").current_step == 0  # not baked yet: nothing changes
    clock.advance(seconds=60)
    stepped = service.tick(project, "web")
    assert (stepped.current_step, stepped.current_percent) == (1, 100.0)
    assert stepped.new_variant_stats is not None and stepped.new_variant_stats.invocations > 0
    assert [r.fired for r in stepped.readings] == [False, False]
    assert _share(host, project, "v2", 50) == 50
    clock.advance(seconds=60)
    done = service.tick(project, "web")
    assert done.status.value == "succeeded" and done.finished_at is not None
    assert done.reason is not None and "without an alarm" in done.reason
    again = service.tick(project, "web")  # idempotent: an ended rollout stays as it ended
    assert (again.status, again.finished_at, again.reason) == (
        done.status,
        done.finished_at,
        done.reason,
    )
    final = endpoints.get(project, "web")
    assert [(v.name, v.weight) for v in final.variants] == [("v2", 1.0)]
    assert (final.model_version, final.rollout) == (2, None)
    assert _actions(ctx) == [
        "endpoint.deployed",
        "endpoint.rollout_started",
        "endpoint.rollout_step",
        "endpoint.rollout_succeeded",
    ]
    graph = LineageService(ctx).get_node("rollout", done.id)
    assert graph.kind == "rollout"


@pytest.mark.parametrize(
    ("strategy", "options", "shares"),
    [
        ("linear", {"linear_steps": 4}, [0.25, 0.5, 0.75, 1.0]),
        ("all_at_once", {}, [1.0]),
    ],
)
def test_linear_and_all_at_once_steps(
    ctx: Context,
    clock: FrozenClock,
    project: str,
    model_dirs: tuple[Path, Path],
    host: ModelHost,
    strategy: str,
    options: dict[str, int],
    shares: list[float],
) -> None:
    _versions(ctx, model_dirs)
    endpoints = EndpointService(ctx, host)
    endpoints.deploy(project, "web", MODEL, 1)
    endpoints.update(project, "web", 2, strategy=strategy, bake_s=30, **options)  # type: ignore[arg-type]
    service = RolloutService(ctx, host)
    seen = []
    for _ in shares:
        info = endpoints.get(project, "web")
        seen.append(round(next(v.share for v in info.variants if v.name == "v2"), 6))
        clock.advance(seconds=30)
        service.tick(project, "web")
    assert seen == shares
    assert service.get(project, "web").status.value == "succeeded"
    assert [v.name for v in endpoints.get(project, "web").variants] == ["v2"]


def test_an_alarm_rolls_back_by_itself_and_says_why(
    ctx: Context, clock: FrozenClock, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register(ctx, model_dirs[0])
    train_nan(model_dirs[0].parent / "nan")
    register(ctx, model_dirs[0].parent / "nan")  # v2: answers NaN, a 502 every time
    endpoints = EndpointService(ctx, host)
    endpoints.deploy(project, "web", MODEL, 1)
    endpoints.update(
        project, "web", 2, strategy="linear", linear_steps=2, bake_s=600, alarms=["5xx_rate>0.05"]
    )
    failed = 0
    for _ in range(200):
        try:
            host.invoke(project, "web", records(1))
        except ModelOutputError:
            failed += 1
    assert failed > 0  # the new version misbehaves on half the traffic...
    rolled = RolloutService(ctx, host).tick(project, "web")  # ...so the bake is cut short
    assert rolled.status.value == "rolled_back"
    assert rolled.reason is not None and rolled.reason.startswith("alarm 5xx_rate>0.05 fired")
    assert "step 1 of 2, 50% on v2" in rolled.reason
    assert rolled.readings[0].fired and rolled.readings[0].value == pytest.approx(1.0)
    info = endpoints.get(project, "web")
    assert [(v.name, v.weight) for v in info.variants] == [("v1", 1.0)]  # v2 is gone again
    assert {host.invoke(project, "web", records(1))["variant"] for _ in range(20)} == {"v1"}
    events = AuditTrail(ctx).list(entity_kind="endpoint")
    assert events[-1].action == "endpoint.rollout_rolled_back"
    assert events[-1].after is not None and "5xx_rate" in events[-1].after["reason"]
    clock.advance(hours=1)
    assert RolloutService(ctx, host).tick(project, "web").status.value == "rolled_back"


def test_cancel_restores_the_old_weights(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _versions(ctx, model_dirs)
    endpoints = EndpointService(ctx, host)
    endpoints.deploy(project, "web", MODEL, 1, variant="blue")
    VariantService(ctx, host).put(project, "web", "green", MODEL, 2)  # weight 0, pre-existing
    started = RolloutService(ctx, host).start(
        project, "web", MODEL, 2, strategy="all_at_once", bake_s=600
    )
    assert (started.new_variant, started.old_weights) == ("green", {"blue": 1.0})
    with pytest.raises(ConflictError, match="has a rollout in progress"):
        VariantService(ctx, host).set_weights(project, "web", {"blue": 2})
    with pytest.raises(ConflictError, match="has a rollout in progress"):
        endpoints.update(project, "web", 1)
    with pytest.raises(ConflictError, match="has a rollout in progress"):
        RolloutService(ctx, host).start(project, "web", MODEL, 1, strategy="canary")
    cancelled = RolloutService(ctx, host).cancel(project, "web", reason="not today")
    assert cancelled.status.value == "cancelled"
    assert cancelled.reason == "cancelled by alice: not today"
    info = endpoints.get(project, "web")
    assert [(v.name, v.weight) for v in info.variants] == [("blue", 1.0), ("green", 0.0)]
    with pytest.raises(ConflictError, match="no rollout in progress"):
        RolloutService(ctx, host).cancel(project, "web")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_ticks_take_each_step_once_and_a_restart_continues(
    backend: str,
    request: pytest.FixtureRequest,
    clock: FrozenClock,
    model_dirs: tuple[Path, Path],
) -> None:
    ctx: Context = request.getfixturevalue("ctx" if backend == "sqlite" else "pg_ctx")
    project = "benefits"
    ProjectService(ctx).create(project)
    host = ModelHost(ctx)
    request.addfinalizer(host.close)
    _versions(ctx, model_dirs)
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    RolloutService(ctx, host).start(
        project, "web", MODEL, 2, strategy="linear", linear_steps=3, bake_s=10
    )
    clock.advance(seconds=10)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def tick() -> None:
        try:
            barrier.wait()
            RolloutService(ctx, host).tick(project, "web")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=tick) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _actions(ctx).count("endpoint.rollout_step") == 1
    # "restart": a new model host and service, as a new server process would have
    restarted = ModelHost(ctx)
    try:
        clock.advance(seconds=10)
        assert RolloutService(ctx, restarted).tick_all() == 1
        assert RolloutService(ctx, restarted).get(project, "web").current_step == 2
        assert restarted.invoke(project, "web", records(1))["variant"] == "v2"
    finally:
        restarted.close()
    events = AuditTrail(ctx).list(entity_kind="endpoint")
    assert events[-1].actor == "alice" and any(r.startswith("rollout:") for r in events[-1].roles)


def test_a_monitor_alarm_asks_the_hook(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    _versions(ctx, model_dirs)
    EndpointService(ctx, host).deploy(project, "web", MODEL, 1)
    set_monitor_status(None)  # an embedded client or a server of an earlier test installs one
    with pytest.raises(InvalidInputError, match="monitor status hook"):
        RolloutService(ctx, host).start(
            project, "web", MODEL, 2, strategy="canary", alarms=["monitor:drift"]
        )
    asked: list[tuple[str, str]] = []

    def violating(_: Context, project_name: str, monitor: str) -> bool:
        asked.append((project_name, monitor))
        return True

    set_monitor_status(violating)
    try:
        RolloutService(ctx, host).start(
            project, "web", MODEL, 2, strategy="canary", alarms=["monitor:drift"]
        )
        rolled = RolloutService(ctx, host).tick(project, "web")
    finally:
        set_monitor_status(None)
    assert set(asked) == {(project, "drift")}  # asked on every read of the rollout
    assert rolled.status.value == "rolled_back"
    assert rolled.reason is not None and "monitor:drift" in rolled.reason


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"strategy": "blue_green"}, InvalidInputError, "Rollout strategy 'blue_green'"),
        ({"strategy": "canary", "canary_percent": 100}, InvalidInputError, "Canary size 100"),
        ({"strategy": "linear", "linear_steps": 1}, InvalidInputError, "takes 2 to 20 steps"),
        ({"strategy": "canary", "bake_s": "10x"}, InvalidInputError, "Bake time '10x'"),
        ({"strategy": "canary", "alarms": ["p98>5"]}, InvalidInputError, "Alarm 'p98>5'"),
        ({"strategy": "linear", "canary_percent": 5}, InvalidInputError, "no canary size"),
        ({"bake_s": 5}, InvalidInputError, "need a rollout strategy"),
        ({"strategy": "canary", "version": 1}, ConflictError, "nothing to roll out"),
        ({"strategy": "canary", "version": 9}, NotFoundError, "9"),
    ],
)
def test_bad_rollouts_are_refused(
    ctx: Context,
    project: str,
    model_dirs: tuple[Path, Path],
    host: ModelHost,
    options: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    _versions(ctx, model_dirs)
    endpoints = EndpointService(ctx, host)
    endpoints.deploy(project, "web", MODEL, 1)
    version = options.pop("version", 2)
    with pytest.raises(error, match=message):
        endpoints.update(project, "web", version, **options)  # type: ignore[arg-type]
    assert endpoints.get(project, "web").rollout is None


def test_parsing() -> None:
    assert [parse_duration(v) for v in ("30s", "10m", "1h", "2d", "250ms", 5, "0.3s")] == [
        30.0, 600.0, 3600.0, 172800.0, 0.25, 5.0, 0.3,
    ]  # fmt: skip
    assert parse_alarm("error_rate>1%") == {"metric": "error_rate", "op": ">", "threshold": 0.01}
    assert parse_alarm("p99_ms >= 50") == {"metric": "p99_ms", "op": ">=", "threshold": 50.0}
    assert parse_alarm("monitor:income-drift") == {"metric": "monitor", "monitor": "income-drift"}
    for bad in ("p99_ms>5%", "error_rate>2", "latency>5", "5xx_rate>-1", "error_rate>nan"):
        with pytest.raises(InvalidInputError):
            parse_alarm(bad)
    assert rollout_steps(RolloutStrategy.LINEAR, None, 3) == [33.333333, 66.666667, 100.0]
    weights = step_weights({"blue": 3.0, "red": 1.0}, "green", 20)
    assert weights["green"] / sum(weights.values()) == pytest.approx(0.2)
    assert weights["blue"] / weights["red"] == 3.0  # the old variants keep their proportions
