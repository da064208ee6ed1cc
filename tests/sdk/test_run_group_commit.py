"""A short run is one transaction (embedded) and one request (remote) from start to end.

The first run a client starts in an experiment is written at once; later ones, their
parameters, metrics and end go with the metric writer's group commit (sdk/client.py RunHandle,
tracking/service.py log_metric_batches). These tests prove the number of commits and requests,
that nothing a user reads is missing, and that refusals still reach the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

import civicml as cm
from civicml.core.errors import ConflictError, InvalidInputError, NotFoundError
from civicml.core.settings import Settings
from civicml.sdk._keepalive import KeepAliveConnection
from civicml.sdk.client import Client
from civicml.sdk.remote import RemoteBackend
from civicml.tracking._tables import runs
from civicml.tracking.schemas import MetricValue, Run, RunStatus
from civicml.tracking.service import MetricBatch, NewRun, TrackingService
from tests.server.helpers import isolated_settings, serve

PARAMS = {f"p{i}": i for i in range(10)}


@pytest.fixture(params=["sqlite", "postgresql"])
def ml(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Client]:
    """The embedded client on SQLite and on PostgreSQL (the hot paths send their own SQL)."""
    if request.param == "postgresql":
        settings = Settings.load(home=settings.home, db_url=request.getfixturevalue("pg_url"))
    client = cm.connect(settings=settings)
    yield client
    client.close()


def _commits(ml: Client) -> list[int]:
    """A counter of the transactions committed through the client's database engine."""
    count = [0]
    engine = ml.backend.ctx.db.engine

    @event.listens_for(engine, "commit")
    def _counted(conn: Any) -> None:
        count[0] += 1

    return count


def _short_run(proj: Any, n: int) -> Any:
    with proj.start_run(experiment="loop", params={"seed": n}, tags={"team": "a"}) as run:
        run.log_params(PARAMS)
        run.log_metrics({f"m{i}": i / 10 + n for i in range(10)}, step=0)
    return run


def test_a_short_run_after_the_first_is_one_commit(ml: Client) -> None:
    proj = ml.project("benefits")
    _short_run(proj, 0)  # the first run in the experiment is written at once
    commits = _commits(ml)
    run = _short_run(proj, 1)
    assert commits[0] == 1
    stored = ml.backend.get_run(run.id)
    assert stored.status is RunStatus.FINISHED
    assert stored.params == {"seed": "1", **{k: str(v) for k, v in PARAMS.items()}}
    assert stored.metrics["m3"] == pytest.approx(1.3)
    assert stored.tags["team"] == "a"
    assert stored.experiment == "loop"
    assert run.info.end_time is not None
    found = proj.runs.search("metrics.m3 > 0.2", order_by=["metrics.m3 DESC"])
    assert [r.id for r in found] == [run.id, ml.backend.get_run(found[1].id).id]
    assert found[0].params["p9"] == "9" and found[1].metrics["m3"] == pytest.approx(0.3)


def test_a_deferred_run_is_stored_when_its_id_is_read(ml: Client) -> None:
    proj = ml.project("benefits")
    _short_run(proj, 0)
    run = proj.start_run(experiment="Loop")  # the experiment as named differently: as stored
    run_id = run.id  # reading the id from outside writes the run
    other = cm.connect(settings=ml.backend.settings)
    try:
        seen = other.backend.get_run(run_id)
        assert seen.status is RunStatus.RUNNING and seen.experiment == "loop"
    finally:
        other.close()
    run.end()


def test_a_deferred_run_is_written_by_the_background_commit(ml: Client, settings: Settings) -> None:
    proj = ml.project("benefits")
    _short_run(proj, 0)
    run = proj.start_run(experiment="loop")
    hidden = run._id  # the id without writing the run
    other = cm.connect(settings=ml.backend.settings)
    try:
        deadline = time.monotonic() + 30
        while True:  # within metrics_flush_interval_ms; no timing is asserted
            with other.backend.ctx.db.read() as conn:
                found = conn.execute(select(runs.c.status).where(runs.c.id == hidden)).scalar()
            if found is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found == "running"
    finally:
        other.close()
    run.end()


def test_parameters_are_checked_at_once(ml: Client) -> None:
    proj = ml.project("benefits")
    with proj.start_run(experiment="loop") as run:
        run.log_params({"lr": 0.1})
        run.log_params({"lr": 0.1})  # the same value again is a harmless retry
        with pytest.raises(ConflictError, match=r"'lr' of run .* is already '0\.1'"):
            run.log_params({"lr": 0.2})
        with pytest.raises(InvalidInputError, match="Parameter name"):
            run.log_params({"": 1})
    with pytest.raises(ConflictError, match="it is finished, not running"):
        run.log_param("late", 1)
    assert run.info.params == {"lr": "0.1"}


def test_a_conflict_found_at_commit_is_raised_by_end_and_the_run_still_ends(ml: Client) -> None:
    proj = ml.project("benefits")
    run = proj.start_run(experiment="loop")
    ml.backend.log_params(run.id, {"lr": "0.1"})  # logged elsewhere: the handle cannot know
    run.log_params({"lr": 0.2, "depth": 3})
    run.log_metric("auc", 0.9)
    with pytest.raises(ConflictError, match=r"already '0\.1'"):
        run.end()
    stored = ml.backend.get_run(run.id)
    assert stored.status is RunStatus.FINISHED
    assert stored.params == {"lr": "0.1"}  # the refused call stored none of its parameters
    assert stored.metrics == {"auc": 0.9}


def test_a_batch_that_creates_a_run_is_checked(ml: Client) -> None:
    tracking: TrackingService = ml.backend.tracking
    proj = ml.project("benefits")
    first = _short_run(proj, 0)
    spec = tracking.prepare_run("benefits", experiment="loop", params={"a": 1})
    taken, bad, fine = first.id, "not-an-id", "0" * 31 + "1"
    missing = NewRun(project="benefits", experiment="nowhere", name="", params={}, tags={})
    results = tracking.log_metric_batches(
        [
            MetricBatch(taken, [], create=spec),
            MetricBatch(bad, [], create=spec),
            MetricBatch("0" * 31 + "2", [], create=missing),
            MetricBatch(fine, [], create=spec, end="finished"),
        ]
    )
    assert isinstance(results[0], ConflictError) and "exists already" in results[0].message
    assert isinstance(results[1], InvalidInputError)
    assert isinstance(results[2], NotFoundError) and "'nowhere'" in results[2].message
    ended = results[3]
    assert not isinstance(ended, Exception) and ended.run is not None
    assert ended.run.status is RunStatus.FINISHED and ended.run.params == {"a": "1"}
    with ml.backend.ctx.db.read() as conn:  # nothing of the refused ones was written
        assert conn.execute(select(func.count()).select_from(runs)).scalar() == 2


def test_a_short_remote_run_after_the_first_is_one_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from civicml.server import create_app

    settings = isolated_settings(tmp_path)
    with serve(create_app(settings)) as url:
        ml = cm.connect(url)
        try:
            proj = ml.project("benefits")
            _short_run(proj, 0)
            sent: list[str] = []
            real = RemoteBackend.call

            def counted(self: RemoteBackend, method: str, path: str, **kw: Any) -> Any:
                sent.append(f"{method} {path}")
                return real(self, method, path, **kw)

            lean = KeepAliveConnection.post

            def counted_lean(self: KeepAliveConnection, path: str, *a: Any, **kw: Any) -> Any:
                sent.append(f"POST {path} (keep-alive)")
                return lean(self, path, *a, **kw)

            monkeypatch.setattr(RemoteBackend, "call", counted)
            monkeypatch.setattr(KeepAliveConnection, "post", counted_lean)
            run = _short_run(proj, 1)
            assert sent == ["POST /api/v1/metrics/batches (keep-alive)"]
            monkeypatch.undo()
            stored = ml.backend.get_run(run.id)
            assert stored.status is RunStatus.FINISHED
            assert stored.params["p9"] == "9" and stored.metrics["m9"] == pytest.approx(1.9)
            with pytest.raises(ConflictError, match=r"already '0\.1'"):
                with proj.start_run(experiment="loop") as bad:
                    ml.backend.log_params(bad.id, {"lr": "0.1"})
                    bad.log_params({"lr": 0.2})
            assert ml.backend.get_run(bad.id).status is RunStatus.FINISHED
        finally:
            ml.close()


def test_a_retried_batch_that_created_a_run_is_a_duplicate(ml: Client) -> None:
    """The remote SDK retries a request whose answer was lost: the run it created then is
    not refused as taken, and nothing is stored twice."""
    tracking: TrackingService = ml.backend.tracking
    _short_run(ml.project("benefits"), 0)
    spec = tracking.prepare_run("benefits", experiment="loop", params={"a": 1})
    run_id = "0" * 31 + "7"
    batch = MetricBatch(run_id, [], batch_id="b-1", create=spec, params={"b": 2})
    first = tracking.log_metric_batches([batch])[0]
    again = tracking.log_metric_batches([batch])[0]
    assert not isinstance(first, Exception) and not first.duplicate
    assert not isinstance(again, Exception) and again.duplicate
    assert tracking.get_run(run_id).params == {"a": "1", "b": "2"}


def test_the_run_answered_for_a_short_run_is_the_run_as_stored(ml: Client) -> None:
    """A run created and ended in one group commit is answered from what the commit wrote
    (not read back): it must be exactly what reading it answers, in every field."""
    tracking: TrackingService = ml.backend.tracking
    proj = ml.project("benefits")
    earlier = _short_run(proj, 0)  # written at once: its end is read back
    run = proj.start_run(experiment="loop", params={"seed": 1}, tags={"team": "a"})
    run.log_params({"lr": 0.1})
    run.log_metrics({"loss": 0.5, "auc": float("nan")}, step=0)
    run.log_metrics({"loss": 0.25}, step=1)  # the latest by step
    run.log_metrics({"loss": 0.75}, step=0)  # an older step: not the latest
    run.log_params({"depth": 3})
    ended = run.end()
    assert _same(ended, ml.backend.get_run(run.id))
    assert ended.metrics["loss"] == 0.25 and ended.params["depth"] == "3"
    # Two short runs and the end of older ones in one round, each answered as stored.
    specs = [tracking.prepare_run("benefits", experiment="loop", params={"n": n}) for n in (2, 3)]
    ids = ["0" * 31 + "a", "0" * 31 + "b"]
    open_id = proj.start_run(experiment="loop").id
    results = tracking.log_metric_batches(
        [
            MetricBatch(ids[0], [], create=specs[0]),
            MetricBatch(ids[1], [], create=specs[1], params={"x": "y"}),
            MetricBatch(ids[0], [MetricValue(key="m", value=1.0, step=0)], end="failed"),
            MetricBatch(ids[1], [], end="finished"),
            MetricBatch(ids[1], [], end="finished"),  # a retry of the end: the same run
            MetricBatch(open_id, [MetricValue(key="m", value=2.0, step=0)], end="killed"),
            MetricBatch(earlier.id, [], end="finished"),  # ended before: a retry
        ]
    )
    expected = [ids[0], ids[1], ids[1], open_id, earlier.id]
    for result, run_id in zip(results[2:], expected, strict=True):
        assert not isinstance(result, Exception) and result.run is not None
        assert _same(result.run, tracking.get_run(run_id))


def _same(answered: Run, stored: Run) -> bool:
    """Equal runs, NaN metrics included (NaN is not equal to itself)."""
    nan = {k for k, v in stored.metrics.items() if math.isnan(v)}
    assert {k for k, v in answered.metrics.items() if math.isnan(v)} == nan
    assert answered.model_dump(exclude={"metrics"}) == stored.model_dump(exclude={"metrics"})
    assert {k: v for k, v in answered.metrics.items() if k not in nan} == {
        k: v for k, v in stored.metrics.items() if k not in nan
    }
    return True


def test_a_short_runs_commit_reads_back_nothing_it_wrote(settings: Settings) -> None:
    """A run created, logged to and ended in one group commit is known to its round: its status,
    project and parameters are not queried (that was a query for every short run)."""
    client = cm.connect(settings=settings)
    try:
        proj = client.project("benefits")
        _short_run(proj, 0)  # the first run in the experiment: written at once
        engine = client.backend.ctx.db.engine
        engine.dispose()  # new connections, traced
        statements: list[str] = []
        event.listen(
            engine, "connect", lambda conn, _record: conn.set_trace_callback(statements.append)
        )
        run = _short_run(proj, 1)
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert reads and not [s for s in reads if "runs.status" in s or "FROM params" in s]
        stored = client.backend.get_run(run.id)
        assert stored.status is RunStatus.FINISHED and stored.params["seed"] == "1"
        assert stored.params["p9"] == "9" and stored.tags["team"] == "a"
    finally:
        client.close()


def test_metric_values_are_checked_and_stored_as_plain_numbers() -> None:
    """Exact floats take a shorter check; every other value is checked and converted as
    before."""
    import numpy as np

    from civicml.sdk.client import _metric

    assert _metric("m", 0.5, 3, 7) == ("m", 0.5, 3, 7)
    for value in (np.float64(0.5), np.float32(0.5), 1, np.int64(1), "0.5", True):
        point = _metric("m", value, None, 7)  # type: ignore[arg-type]
        assert type(point.value) is float and point.value == float(value)
        assert point.step == 0
    assert math.isnan(_metric("m", math.nan, 0, 7).value)
    assert _metric("m", math.inf, 0, 7).value == math.inf
    for key, value, step, stamp in (
        ("", 0.5, 0, 7),
        ("k" * 251, 0.5, 0, 7),
        (1, 0.5, 0, 7),
        ("m", "x", 0, 7),
        ("m", 0.5, -1, 7),
        ("m", 0.5, True, 7),
        ("m", 0.5, 2**63, 7),
        ("m", 0.5, 0, -1),
        ("m", 0.5, 0, 2**63),
        ("m", 0.5, 0, 1.5),
    ):
        with pytest.raises(InvalidInputError):
            _metric(key, value, step, stamp)  # type: ignore[arg-type]
