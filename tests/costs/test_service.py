"""Cost report and budgets on the real services: sums, storage dedupe, pricing, warnings, stops."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import civicml as cm
from civicml.core.clock import FrozenClock
from civicml.core.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.costs import BudgetExceededError, CostService, Usage
from civicml.costs.report_html import render_report
from civicml.costs.service import record_endpoint_usage
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.pipelines.service import PipelineService
from civicml.store.context import Context
from civicml.tracking.service import TrackingService
from civicml.tracking.usage import record_run_usage
from tests.conftest import make_context

RATES = {"cpu_hour": 36.0, "gpu_hour": 360.0, "memory_gb_hour": 3.6, "storage_gb_month": 1.0}
NOW = datetime(2026, 3, 16, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(home=tmp_path / "home", rates=RATES, currency="EUR")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def costs(ctx: Context) -> Iterator[CostService]:
    ProjectService(ctx).ensure("p", "projects.read")
    yield CostService(ctx)


@cm.step
def numbers(n: int) -> list[int]:
    return [i * i for i in range(n)]


@cm.step
def total(values: list[int]) -> int:
    return sum(values)


@cm.pipeline(name="sums")
def sums(n: int = 50_000) -> None:
    total(numbers(n))


def _run_with(ctx: Context, usage: Usage, project: str = "p") -> str:
    run = TrackingService(ctx).create_run(project, experiment="e")
    record_run_usage(ctx, run.id, usage)
    return run.id


def test_a_pipeline_execution_is_the_sum_of_its_steps(ctx: Context, costs: CostService) -> None:
    first = PipelineService(ctx).run(sums, project="p")
    by_pipeline = costs.report("p", by="pipeline")
    by_run = costs.report("p", by="run")
    (line,) = by_pipeline.lines
    steps = [r for r in by_run.lines if r.id in {s.run_id for s in first.steps}]
    assert line.id == first.id and line.name == "sums" and line.runs == 2 and len(steps) == 2
    for field in ("cpu_s", "wall_s", "memory_gb_s", "cost"):
        assert getattr(line, field) == pytest.approx(sum(getattr(s, field) for s in steps))
    assert line.cpu_s > 0 and line.wall_s > 0 and line.peak_memory_bytes > 0
    assert by_pipeline.total.cpu_s == pytest.approx(line.cpu_s)
    again = PipelineService(ctx).run(sums, project="p")  # every step a cache hit: no work
    assert {s.status.value for s in again.steps} == {"cached"}
    assert [r.id for r in costs.report("p", by="pipeline").lines] == [first.id]


def test_runs_are_priced_by_the_rate_card(ctx: Context, costs: CostService) -> None:
    run_id = _run_with(ctx, Usage(wall_s=10, cpu_s=100, memory_gb_s=50, gpu_s=20))
    record_run_usage(ctx, run_id, Usage(wall_s=5, cpu_s=100))  # a second piece adds up
    (line,) = costs.report("p", by="run").lines
    assert (line.cpu_s, line.wall_s, line.gpu_s, line.runs) == (200, 15, 20, 1)
    # 200 CPU s at 36/h, 50 GB·s at 3.6/h, 20 GPU s at 360/h
    assert line.cost == pytest.approx(2.0 + 0.05 + 2.0)
    assert line.name == "e/" + TrackingService(ctx).get_run(run_id).name


def test_storage_counts_each_content_once(ctx: Context, costs: CostService) -> None:
    tracking = TrackingService(ctx)
    first = tracking.create_run("p", experiment="e")
    second = tracking.create_run("p", experiment="e")
    tracking.log_artifact(first.id, "model.bin", b"x" * 1000)
    tracking.log_artifact(second.id, "copy/model.bin", b"x" * 1000)  # the same bytes again
    tracking.log_artifact(second.id, "other.bin", b"y" * 300)
    report = costs.report("p")
    assert report.total.storage_bytes == 1300
    (line,) = report.lines
    assert line.kind == "project" and line.storage_bytes == 1300
    month_fraction = (NOW - datetime(2026, 3, 1, tzinfo=UTC)) / timedelta(days=30)
    assert line.cost == pytest.approx(1300 / 1e9 * month_fraction)


def test_endpoint_usage_is_reported_per_endpoint(ctx: Context, costs: CostService) -> None:
    proj = ProjectService(ctx).get("p", "projects.read")
    record_endpoint_usage(ctx, [(proj.id, "e" * 32, "scoring", 36.0, 1000)], NOW)
    record_endpoint_usage(ctx, [(proj.id, "e" * 32, "scoring", 36.0, 500)], NOW)
    (line,) = costs.report("p", by="endpoint").lines
    assert (line.name, line.invocations, line.cpu_s) == ("scoring", 1500, 72.0)
    assert line.cost == pytest.approx(0.72)
    assert costs.report("p", by="project").lines[0].invocations == 1500


def test_the_period_filters_lines(ctx: Context, costs: CostService, clock: FrozenClock) -> None:
    _run_with(ctx, Usage(cpu_s=10))
    clock.advance(days=20)  # April
    _run_with(ctx, Usage(cpu_s=1))
    assert costs.report("p").total.cpu_s == 1  # this month
    march = costs.report("p", since=datetime(2026, 3, 1), until=datetime(2026, 4, 1))
    assert march.total.cpu_s == 10


def test_bad_report_input_is_refused(costs: CostService) -> None:
    with pytest.raises(InvalidInputError, match="Cannot group costs by 'team'"):
        costs.report("p", by="team")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="is empty"):
        costs.report("p", since=datetime(2026, 3, 2), until=datetime(2026, 3, 1))
    with pytest.raises(NotFoundError):
        costs.report("nope")


def test_the_warning_is_given_once_a_month(
    ctx: Context, costs: CostService, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    costs.set_budget("p", amount=10.0, warn_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="civicml.costs"):
        _run_with(ctx, Usage(cpu_s=400))  # 4.00 of 10: under the threshold
        _run_with(ctx, Usage(cpu_s=200))  # 6.00: past 50 %
        _run_with(ctx, Usage(cpu_s=100))  # 7.00: still past, no second warning
    events = AuditTrail(ctx).list(project="p", action="budget.warning")
    assert len(events) == 1 and events[0].after["spend"] == pytest.approx(6.0)
    assert len([r for r in caplog.records if "past 50%" in r.getMessage()]) == 1
    status = costs.get_budget("p")
    assert status is not None and status.state.value == "warning"
    assert status.spend == pytest.approx(7.0) and status.fraction == pytest.approx(0.7)
    clock.advance(days=20)  # a new month: spend starts again, and so does the warning
    _run_with(ctx, Usage(cpu_s=600))
    assert len(AuditTrail(ctx).list(project="p", action="budget.warning")) == 2


def test_a_hard_stop_refuses_new_work_and_keeps_what_is_stored(
    ctx: Context, costs: CostService
) -> None:
    done = _run_with(ctx, Usage(cpu_s=1200))  # 12.00 EUR
    costs.set_budget("p", amount=10.0, hard_stop=True)
    message = (
        "Project 'p' has spent 12.00 EUR this month (2026-03), reaching its budget of 10.00 "
        "EUR with a hard stop"
    )
    with pytest.raises(BudgetExceededError, match=re.escape(message)) as refused:
        TrackingService(ctx).create_run("p", experiment="e")
    assert refused.value.status == 409
    assert "civicml costs budget set p --amount" in (refused.value.hint or "")
    with pytest.raises(BudgetExceededError):
        PipelineService(ctx).run(sums, project="p")
    assert PipelineService(ctx).list("p") == []  # no execution was started
    assert TrackingService(ctx).get_run(done).id == done  # nothing stored was lost
    assert len(AuditTrail(ctx).list(project="p", action="budget.exceeded")) == 1
    costs.set_budget("p", amount=20.0, hard_stop=True)  # raised: work starts again
    assert TrackingService(ctx).create_run("p", experiment="e").project == "p"


def test_only_a_project_admin_sets_a_budget(
    settings: Settings, clock: FrozenClock, ctx: Context, costs: CostService
) -> None:
    ProjectService(ctx).grant("p", "vic", "viewer")
    viewer = make_context(settings, Principal(user="vic", roles=frozenset()), clock)
    try:
        with pytest.raises(PermissionDeniedError, match=re.escape("members.write")):
            CostService(viewer).set_budget("p", amount=5.0)
        assert CostService(viewer).get_budget("p") is None  # but may read costs
        assert CostService(viewer).report("p").projects == ["p"]
    finally:
        viewer.db.close()
    status = costs.set_budget("p", amount=5.0)
    assert status.budget.set_by == "alice" and status.budget.currency == "EUR"
    assert [e.action for e in AuditTrail(ctx).list(project="p", action="budget.set")] == [
        "budget.set"
    ]


def test_budget_values_are_checked_and_clearing_twice_is_not_found(costs: CostService) -> None:
    with pytest.raises(InvalidInputError, match="Budget amount -1"):
        costs.set_budget("p", amount=-1)
    with pytest.raises(InvalidInputError, match=re.escape("Warning fraction 1.5")):
        costs.set_budget("p", amount=1, warn_fraction=1.5)
    costs.set_budget("p", amount=1)
    costs.clear_budget("p")
    assert costs.get_budget("p") is None
    with pytest.raises(NotFoundError, match="has no budget"):
        costs.clear_budget("p")


def test_the_html_report_draws_bars_and_runs_no_script(ctx: Context, costs: CostService) -> None:
    _run_with(ctx, Usage(cpu_s=100, wall_s=3))
    costs.set_budget("p", amount=10.0)
    page = render_report(costs.report("p", by="run"))
    assert page.startswith("<!doctype html>") and "<svg" in page and "<rect" in page
    assert "<script" not in page and "Costs of p" in page and "Budgets (2026-03)" in page
