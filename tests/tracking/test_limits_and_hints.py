"""Batch ids name one body, metric history pages, search hints and bounds, per-request limits
(service, embedded and remote SDK, CLI)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

import civicml as cm
from civicml.cli.main import main
from civicml.core import ConflictError, InvalidInputError
from civicml.core.errors import BadRequestError
from civicml.server import create_app
from civicml.store import Context
from civicml.tracking import MetricBatch, MetricValue, TrackingService
from civicml.tracking._tables import metric_batches
from civicml.tracking.schemas import SearchWarning
from tests.server.helpers import API, isolated_settings, serve


@pytest.fixture
def svc(ctx: Context) -> TrackingService:
    return TrackingService(ctx)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = isolated_settings(tmp_path_factory.mktemp("limits"))
    with serve(create_app(settings)) as address:
        yield address


def _values(*numbers: float) -> list[MetricValue]:
    return [MetricValue(key="acc", value=n, step=i, timestamp=1) for i, n in enumerate(numbers)]


# Batch ids -----------------------------------------------------------------------------------
def test_a_batch_id_with_other_values_is_a_conflict_and_stores_nothing(
    svc: TrackingService,
) -> None:
    run = svc.create_run("p")
    svc.log_metrics(run.id, _values(0.5), batch_id="b1")

    with pytest.raises(ConflictError, match=re.escape("Batch 'b1' of run")):
        svc.log_metrics(run.id, _values(0.9), batch_id="b1")
    again = svc.log_metrics(run.id, _values(0.5), batch_id="b1")

    assert (again.stored, again.duplicate) == (0, True)
    assert [v.value for v in svc.metric_history(run.id, "acc")] == [0.5]


def test_a_batch_stored_before_digests_existed_still_counts_as_a_retry(
    svc: TrackingService, ctx: Context
) -> None:
    run = svc.create_run("p")
    svc.log_metrics(run.id, _values(0.5), batch_id="old")
    with ctx.db.write() as uow:  # a row written before migration 0006: no digest
        uow.conn.execute(update(metric_batches).values(digest=None))

    retry = svc.log_metrics(run.id, _values(0.7), batch_id="old")

    assert (retry.stored, retry.duplicate) == (0, True)
    assert [v.value for v in svc.metric_history(run.id, "acc")] == [0.5]


def test_the_same_batch_id_twice_in_one_group_commit(svc: TrackingService) -> None:
    run = svc.create_run("p")

    results = svc.log_metric_batches(
        [
            MetricBatch(run.id, _values(1.0), "x"),
            MetricBatch(run.id, _values(1.0), "x"),
            MetricBatch(run.id, _values(2.0), "x"),
        ]
    )

    assert [(r.stored, r.duplicate) for r in results[:2]] == [(1, False), (0, True)]  # type: ignore[union-attr]
    assert isinstance(results[2], ConflictError)


# Metric history pages ------------------------------------------------------------------------
def test_metric_history_pages_follow_step_time_and_insertion_order(svc: TrackingService) -> None:
    run = svc.create_run("p")
    svc.log_metrics(
        run.id, [MetricValue(key="m", value=i, step=i // 3, timestamp=5) for i in range(10)]
    )

    pages, after = [], None
    while True:
        page = svc.metric_history_page(run.id, "m", after=after, limit=4)
        pages.append([v.value for v in page.values])
        if page.next_cursor is None:
            break
        after = page.next_cursor

    assert pages == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [v.value for v in svc.metric_history(run.id, "m")] == list(range(10))


@pytest.mark.parametrize("cursor", ["", "1.2", "a.b.c", "1.2.3.4", "99999999999999999999.1.1"])
def test_a_cursor_that_was_not_given_is_refused(svc: TrackingService, cursor: str) -> None:
    run = svc.create_run("p")
    with pytest.raises(InvalidInputError, match="is not a metric history cursor"):
        svc.metric_history_page(run.id, "m", after=cursor)


# Search hints and bounds ---------------------------------------------------------------------
def test_search_names_unknown_keys_and_the_ones_that_exist(svc: TrackingService) -> None:
    run = svc.create_run("p", params={"algorithm": "gbm"}, tags={"team": "a"})
    svc.log_metrics(run.id, [MetricValue(key="val_roc_auc", value=0.9)])

    page = svc.search(
        "p", filter="metrics.val_auc > 0.85 and tags.team = 'a'", order_by=["params.algo"]
    )

    assert page.runs == []
    assert page.warnings == [
        "No run of project 'p' has the metric 'val_auc': a filter on it matches no run and "
        "ordering by it changes nothing. Did you mean 'val_roc_auc'? The metrics logged are: "
        "val_roc_auc.",
        "No run of project 'p' has the parameter 'algo': a filter on it matches no run and "
        "ordering by it changes nothing. Did you mean 'algorithm'? The parameters logged are: "
        "algorithm.",
    ]
    assert svc.search("p", filter="metrics.val_roc_auc > 0.85").warnings == []


def test_keys_of_another_project_do_not_count(svc: TrackingService) -> None:
    other = svc.create_run("other")
    svc.log_metrics(other.id, [MetricValue(key="auc", value=0.9)])
    svc.create_run("p")

    [warning] = svc.search("p", filter="metrics.auc > 0").warnings

    assert warning.endswith("No run of the project has any metric yet.")


def test_ten_thousand_clauses_are_refused_before_any_sql(svc: TrackingService) -> None:
    svc.create_run("p")
    text = " and ".join(f"metrics.m{i} > 0" for i in range(10_000))

    with pytest.raises(BadRequestError, match="characters long") as err:
        svc.search("p", filter=text)

    assert "10,000 characters" in (err.value.hint or "")


# SDK: warnings, pages and per-request limits --------------------------------------------------
@pytest.mark.parametrize("remote", [False, True], ids=["embedded", "remote"])
def test_the_sdk_warns_about_unknown_keys(remote: bool, url: str, tmp_path: Path) -> None:
    target = {"url": url} if remote else {"home": tmp_path / "home"}
    with cm.connect(**target) as ml:  # type: ignore[arg-type]
        proj = ml.project(f"warn-{remote}")
        with proj.start_run() as run:
            run.log_metric("val_roc_auc", 0.9)

        with pytest.warns(SearchWarning, match="Did you mean 'val_roc_auc'"):
            found = proj.runs.search("metrics.val_auc > 0.85")
        known = proj.runs.search("metrics.val_roc_auc > 0.85")

    assert found == []
    assert [r.id for r in known] == [run.id]


def test_the_remote_sdk_splits_what_one_request_may_not_carry(url: str) -> None:
    params = {f"p{i}": i for i in range(250)}
    tags = {f"t{i}": "x" for i in range(150)}
    with cm.connect(url) as ml:
        proj = ml.project("split")
        run = proj.start_run(params=params, tags=tags)
        run.log_metrics({f"m{i}": float(i) for i in range(120)}, step=0)
        for step in range(25_000):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.flush()
        history = run.metric_history("loss")
        info = run.info
        runs = proj.runs.search(max_results=2_500)

    assert info.params == {k: str(v) for k, v in params.items()}
    assert {k: v for k, v in info.tags.items() if not k.startswith("civicml.")} == tags
    assert len(info.metrics) == 121
    assert [v.step for v in history] == list(range(25_000))
    assert [r.id for r in runs] == [run.id]
    with httpx.Client(base_url=url) as http:
        page = http.get(f"{API}/runs/{run.id}/metrics/loss").json()
    assert len(page["values"]) == 10_000 and page["next_cursor"]


def test_the_cli_names_unknown_keys_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "cli-home")
    with cm.connect(home=home) as ml:
        with ml.project("elig").start_run() as run:
            run.log_metric("val_roc_auc", 0.9)
    capsys.readouterr()

    code = main(["--home", home, "runs", "list", "-p", "elig", "-f", "metrics.val_auc > 0.85"])
    out, err = capsys.readouterr()

    assert code == 0
    assert err.startswith("Warning: No run of project 'elig' has the metric 'val_auc'")
    assert "Did you mean 'val_roc_auc'?" in err
    assert run.id not in out


@pytest.mark.parametrize(("step", "timestamp"), [(2**63, None), (0, 2**63), (0, True)])
def test_the_sdk_refuses_steps_and_timestamps_the_database_cannot_store(
    tmp_path: Path, step: int, timestamp: int | None
) -> None:
    with cm.connect(home=tmp_path / "home") as ml:
        run = ml.project("p").start_run()
        with pytest.raises(InvalidInputError, match="is not"):
            run.log_metric("x", 1.0, step=step, timestamp=timestamp)
