from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from civicml.core import ConflictError, FrozenClock, InvalidInputError, NotFoundError
from civicml.core.process import hostname, process_start
from civicml.governance import AuditTrail, LineageService
from civicml.store import Context
from civicml.tracking import MetricBatch, MetricValue, RunStatus, TrackingService


@pytest.fixture
def svc(ctx: Context) -> TrackingService:
    return TrackingService(ctx)


def test_run_round_trip(any_ctx: Context) -> None:
    svc = TrackingService(any_ctx)
    run = svc.create_run("p", experiment="exp", params={"lr": 0.1}, tags={"team": "a"})
    svc.log_params(run.id, {"depth": 3})
    svc.set_tags(run.id, {"team": "b"})
    svc.log_metrics(
        run.id, [MetricValue(key="loss", value=v, step=i) for i, v in enumerate([1.0, 0.5, 0.25])]
    )
    got = svc.get_run(run.id)
    assert got.params == {"lr": "0.1", "depth": "3"}
    assert got.tags == {"team": "b"}
    assert got.metrics == {"loss": 0.25}
    assert got.status is RunStatus.RUNNING
    assert got.project == "p"
    assert got.experiment == "exp"
    assert got.created_by == "alice"
    ended = svc.end_run(run.id)
    assert ended.status is RunStatus.FINISHED
    assert ended.end_time is not None
    actions = [e.action for e in AuditTrail(any_ctx).list(entity_id=run.id)]
    assert actions == ["run.created", "run.params_logged", "run.tags_set", "run.finished"]
    assert AuditTrail(any_ctx).verify().ok


def test_nan_and_infinity_are_kept(any_ctx: Context) -> None:
    svc = TrackingService(any_ctx)
    run = svc.create_run("p")
    svc.log_metrics(
        run.id,
        [
            MetricValue(key="m", value=math.inf, step=0),
            MetricValue(key="m", value=-math.inf, step=1),
            MetricValue(key="m", value=math.nan, step=2),
        ],
    )
    history = svc.metric_history(run.id, "m")
    assert [v.value for v in history[:2]] == [math.inf, -math.inf]
    assert math.isnan(history[2].value)
    assert math.isnan(svc.get_run(run.id).metrics["m"])


def test_latest_metric_is_by_step_then_time(svc: TrackingService) -> None:
    run = svc.create_run("p")
    svc.log_metrics(run.id, [MetricValue(key="acc", value=0.9, step=10, timestamp=1000)])
    svc.log_metrics(run.id, [MetricValue(key="acc", value=0.1, step=2, timestamp=5000)])
    assert svc.get_run(run.id).metrics["acc"] == 0.9  # an older step does not win
    svc.log_metrics(run.id, [MetricValue(key="acc", value=0.95, step=10, timestamp=2000)])
    assert svc.get_run(run.id).metrics["acc"] == 0.95


def test_retried_batch_is_stored_once(svc: TrackingService) -> None:
    run = svc.create_run("p")
    values = [MetricValue(key="x", value=float(i), step=i) for i in range(5)]
    first = svc.log_metrics(run.id, values, batch_id="batch-1")
    again = svc.log_metrics(run.id, values, batch_id="batch-1")
    assert (first.stored, first.duplicate) == (5, False)
    assert (again.stored, again.duplicate) == (0, True)
    assert len(svc.metric_history(run.id, "x")) == 5


def test_group_commit_reports_errors_per_batch(svc: TrackingService) -> None:
    live = svc.create_run("p")
    done = svc.create_run("p")
    svc.end_run(done.id)
    value = [MetricValue(key="x", value=1.0)]
    results = svc.log_metric_batches(
        [MetricBatch(live.id, value), MetricBatch(done.id, value), MetricBatch("0" * 32, value)]
    )
    assert results[0].stored == 1  # type: ignore[union-attr]
    assert isinstance(results[1], ConflictError)
    assert isinstance(results[2], NotFoundError)
    assert svc.get_run(live.id).metrics == {"x": 1.0}


def test_params_are_immutable(svc: TrackingService) -> None:
    run = svc.create_run("p", params={"lr": 0.1})
    svc.log_params(run.id, {"lr": "0.1"})  # the same value again is fine
    with pytest.raises(ConflictError, match=re.escape("Parameter 'lr' of run")):
        svc.log_params(run.id, {"lr": 0.2})
    assert svc.get_run(run.id).params == {"lr": "0.1"}


def test_ended_runs_refuse_logging(svc: TrackingService) -> None:
    run = svc.create_run("p")
    svc.end_run(run.id, "failed")
    with pytest.raises(ConflictError, match="it is failed, not running"):
        svc.log_metrics(run.id, [MetricValue(key="x", value=1.0)])
    with pytest.raises(ConflictError):
        svc.log_params(run.id, {"a": 1})
    with pytest.raises(ConflictError):
        svc.end_run(run.id, "finished")
    assert svc.end_run(run.id, "failed").status is RunStatus.FAILED  # idempotent retry
    svc.set_tags(run.id, {"note": "tags stay editable"})


@pytest.mark.parametrize("bad", [{"": "x"}, {"k" * 251: "x"}, {"k": "v" * 6001}])
def test_bad_params_are_refused(svc: TrackingService, bad: dict[str, str]) -> None:
    run = svc.create_run("p")
    with pytest.raises(InvalidInputError):
        svc.log_params(run.id, bad)


def test_invalid_names_and_statuses(svc: TrackingService) -> None:
    with pytest.raises(InvalidInputError, match="Experiment name"):
        svc.create_run("p", experiment="../etc")
    with pytest.raises(InvalidInputError, match="Project name"):
        svc.create_run("bad name")
    run = svc.create_run("p")
    with pytest.raises(InvalidInputError, match="not valid"):
        svc.end_run(run.id, "done")
    with pytest.raises(InvalidInputError, match="cannot be ended as 'running'"):
        svc.end_run(run.id, "running")
    with pytest.raises(NotFoundError, match="does not exist"):
        svc.get_run("f" * 32)


def test_artifacts_are_immutable_and_verified(svc: TrackingService, ctx: Context) -> None:
    run = svc.create_run("p")
    info = svc.log_artifact(run.id, "model/model.bin", b"weights")
    assert svc.log_artifact(run.id, "model/model.bin", b"weights") == info
    with pytest.raises(ConflictError, match="never overwritten"):
        svc.log_artifact(run.id, "model/model.bin", b"other weights")
    svc.log_artifact(run.id, "model/meta.json", b"{}")
    svc.log_artifact(run.id, "modelx/other", b"1")
    assert [a.path for a in svc.list_artifacts(run.id, "model")] == [
        "model/meta.json",
        "model/model.bin",
    ]
    _info, handle = svc.open_artifact(run.id, "model/model.bin")
    with handle:
        assert handle.read() == b"weights"
    with pytest.raises(InvalidInputError):
        svc.log_artifact(run.id, "../escape", b"x")
    with pytest.raises(NotFoundError, match="has no artifact"):
        svc.open_artifact(run.id, "missing.bin")


def test_search_filters_and_orders(svc: TrackingService) -> None:
    ids = []
    for i in range(6):
        run = svc.create_run(
            "p", experiment="e1" if i < 4 else "e2", params={"algo": "gbm" if i % 2 else "lr"}
        )
        svc.log_metrics(
            run.id,
            [
                MetricValue(key="auc", value=0.5 + i / 20),
                MetricValue(key="val loss", value=1 - i / 10),
            ],
        )
        if i == 5:
            svc.log_metrics(run.id, [MetricValue(key="auc", value=math.nan, step=1)])
        ids.append(run.id)
    found = svc.search_runs("p", filter="metrics.auc > 0.6", order_by=["metrics.auc DESC"])
    assert [r.id for r in found] == [ids[4], ids[3]]  # NaN latest value never matches
    found = svc.search_runs(
        "p", filter="params.algo = 'gbm' and metrics.auc >= 0.5", order_by=["metrics.auc ASC"]
    )
    assert [r.id for r in found] == [ids[1], ids[3]]
    found = svc.search_runs("p", experiments=["e2"], order_by=["metrics.`val loss`"])
    assert [r.id for r in found] == [ids[5], ids[4]]
    found = svc.search_runs("p", filter="attributes.status = 'RUNNING'", max_results=2)
    assert len(found) == 2
    found = svc.search_runs(
        "p", filter="params.algo LIKE 'g%'", order_by=["metrics.auc DESC"], offset=1
    )
    assert [r.id for r in found] == [ids[1], ids[5]]  # NaN sorts last


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.auc >", "Incomplete clause"),
        ("metric.auc > 'high'", "compares numbers"),
        ("params.algo > 3", "compares strings"),
        ("things.x = 1", "Unknown entity"),
        ("attributes.colour = 'red'", "Unknown run attribute"),
        ("metrics.auc > 1 or metrics.auc < 0", "Cannot parse|Expected 'and'"),
        ("metrics.auc > 1 and", "Incomplete clause|ends with 'and'"),
    ],
)
def test_bad_filters_say_what_is_wrong(svc: TrackingService, text: str, message: str) -> None:
    svc.create_run("p")
    with pytest.raises(InvalidInputError, match=message):
        svc.search_runs("p", filter=text)


def test_abandoned_runs_are_marked_killed(ctx: Context, clock: FrozenClock) -> None:
    svc = TrackingService(ctx)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = svc.create_run("p", host=hostname(), pid=child.pid, pid_start=12345)
    alive = svc.create_run(
        "p", host=hostname(), pid=os.getpid(), pid_start=process_start(os.getpid())
    )
    remote = svc.create_run("p", host="elsewhere", pid=1)
    silent = svc.create_run("p")
    assert set(svc.recover_abandoned()) == {dead.id}
    clock.advance(seconds=ctx.settings.run_heartbeat_timeout_s + 1)
    svc.heartbeat(remote.id)
    assert set(svc.recover_abandoned()) == {silent.id}
    assert svc.get_run(dead.id).status is RunStatus.KILLED
    assert svc.get_run(alive.id).status is RunStatus.RUNNING
    assert svc.get_run(remote.id).status is RunStatus.RUNNING
    reasons = [e.after for e in AuditTrail(ctx).list(action="run.killed")]
    assert reasons[0] is not None and "is gone" in reasons[0]["reason"]
    assert reasons[1] is not None and "no heartbeat" in reasons[1]["reason"]


def test_runs_have_lineage_nodes(svc: TrackingService, ctx: Context) -> None:
    run = svc.create_run("p", experiment="exp", name="first")
    node = LineageService(ctx).get_node("run", run.id)
    assert node.name == "exp/first"


def test_experiments(svc: TrackingService) -> None:
    svc.create_run("p", experiment="a")
    svc.create_experiment("p", "b", description="second")
    assert [e.name for e in svc.list_experiments("p")] == ["a", "b"]
    with pytest.raises(ConflictError):
        svc.create_experiment("p", "a")
    with pytest.raises(NotFoundError, match="'bb' does not exist") as err:
        svc.get_experiment("p", "bb")
    assert err.value.hint == "Did you mean 'b'?"


def test_the_batch_id_lookup_of_a_group_commit_is_an_index_search(ctx: Context) -> None:
    # By batch id alone it scanned every batch ever stored: after a run logged some thousands
    # of synchronous values, each short run took milliseconds more.
    from civicml.tracking.service import _SEEN_BATCHES

    sql = _SEEN_BATCHES.format(runs="?, ?", ids="?")
    with ctx.db.read() as conn:
        plan = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "EXPLAIN QUERY PLAN " + sql, ("a" * 32, "b" * 32, "batch-1")
        ).fetchall()

    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX" in details or "USING PRIMARY KEY" in details, details
    assert "SCAN" not in details, details


def test_a_retried_batch_is_recognised_among_other_runs_batches(svc: TrackingService) -> None:
    a = svc.create_run("p", experiment="e").id
    b = svc.create_run("p", experiment="e").id
    x = [MetricValue(key="x", value=1.0, step=0)]
    svc.log_metric_batches([MetricBatch(a, x, "same-id"), MetricBatch(b, x, "other-id")])

    # b never sent "same-id" and a never sent "other-id": only the true retries are duplicates.
    again = svc.log_metric_batches(
        [
            MetricBatch(a, x, "same-id"),
            MetricBatch(b, x, "same-id"),
            MetricBatch(a, x, "other-id"),
            MetricBatch(b, x, "other-id"),
        ]
    )

    assert [(r.stored, r.duplicate) for r in again] == [
        (0, True),
        (1, False),
        (1, False),
        (0, True),
    ]


def test_many_runs_batches_in_one_round_are_looked_up_in_groups(svc: TrackingService) -> None:
    from civicml.tracking import service

    ids = [svc.create_run("p", experiment="e").id for _ in range(70)]
    x = [MetricValue(key="x", value=1.0, step=0)]
    first = [MetricBatch(r, x, f"b-{n}") for n, r in enumerate(ids)]
    svc.log_metric_batches(first)

    # 70 runs x 70 ids is past the combinations one look-up names: still every retry is seen.
    assert len(ids) ** 2 > service._SEEN_PROBES
    again = svc.log_metric_batches([*first, MetricBatch(ids[0], x, "b-1")])

    assert [r.duplicate for r in again] == [True] * 70 + [False]
    assert again[-1].stored == 1
