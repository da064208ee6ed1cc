"""The monitors service: creation and its errors, permissions, the window reader, reports the
alert engine reads (a violation fires a rule), the rollout hook, the dashboard, re-baselining,
failures and removal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from civicml.alerts.schemas import RuleCreate
from civicml.alerts.service import AlertService
from civicml.core import ConflictError, FrozenClock, InvalidInputError, NotFoundError, Principal
from civicml.core.errors import PermissionDeniedError
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.monitoring.service import MonitoringService
from civicml.monitors import ExecutionStatus, MonitorCreate, MonitorService
from civicml.monitors.hook import monitor_alarm
from civicml.monitors.window import _parse_fast, _parse_slow, iso_ms, read_window
from civicml.oversight.dashboard import DashboardService
from civicml.serving import CaptureService, EndpointService, ModelHost
from civicml.store import Context
from tests.monitors.helpers import ENDPOINT, deploy, inputs, labels_for, monitor
from tests.serving.helpers import PROJECT


def test_creation_errors_say_what_to_do(
    ctx: Context, project: str, host: ModelHost, model_dir: Path
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "inputs", "data_quality")
    svc = MonitorService(ctx, host.capture)
    with pytest.raises(ConflictError, match="conflicts with the existing monitor"):
        monitor(ctx, host, "INPUTS", "data_quality")
    with pytest.raises(NotFoundError, match="Endpoint 'nope' does not exist"):
        monitor(ctx, host, "other", "data_quality", endpoint="nope")
    with pytest.raises(InvalidInputError, match="no recorded training data"):
        monitor(ctx, host, "other", "data_quality", baseline_dataset=None)
    with pytest.raises(InvalidInputError, match="not valid"):
        monitor(ctx, host, "bad name!", "data_quality")
    with pytest.raises(InvalidInputError, match="positive label 'maybe'"):
        monitor(ctx, host, "other", "model_quality", positive_label="maybe")
    with pytest.raises(InvalidInputError, match="model_quality constraints"):
        monitor(ctx, host, "other", "model_quality", constraints={"metrics": {}})
    with pytest.raises(NotFoundError, match="Monitor 'input' does not exist") as found:
        svc.get(PROJECT, "input")
    assert found.value.hint == "inputs" or "inputs" in (found.value.hint or "")


def test_reading_and_writing_take_the_monitoring_permissions(
    ctx: Context, project: str, host: ModelHost, model_dir: Path
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "inputs", "data_quality")
    viewer = MonitorService(ctx.as_principal(Principal(user="val", roles=frozenset({"viewer"}))))
    assert [m.name for m in viewer.list(PROJECT)] == ["inputs"]
    for attempt in (
        lambda: viewer.run(PROJECT, "inputs"),
        lambda: viewer.delete(PROJECT, "inputs"),
        lambda: viewer.set_constraints(PROJECT, "inputs", {}),
        lambda: viewer.upload_ground_truth(
            PROJECT, ENDPOINT, pd.DataFrame({"inference_id": ["a"], "label": [1]})
        ),
        lambda: viewer.create(
            PROJECT, MonitorCreate(name="x", endpoint=ENDPOINT, type="data_quality")
        ),
    ):
        with pytest.raises(PermissionDeniedError, match=r"monitoring\.write"):
            attempt()
    nobody = MonitorService(ctx.as_principal(Principal(user="eve", roles=frozenset())))
    with pytest.raises(NotFoundError):
        nobody.list(PROJECT)


def test_the_window_reader_parses_fast_and_slow_alike(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    start = clock.now()
    host.invoke(PROJECT, ENDPOINT, inputs(30))
    clock.advance(minutes=10)
    late = host.invoke(PROJECT, ENDPOINT, inputs(5, seed=9))
    end = clock.now()
    clock.advance(minutes=10)
    host.invoke(PROJECT, ENDPOINT, inputs(7, seed=11))  # after the window
    (info,) = CaptureService(ctx, host.capture).files(PROJECT, ENDPOINT)
    data = ctx.artifacts.read_bytes(info.digest)
    fast = _parse_fast(data, iso_ms(start), iso_ms(end))
    slow = _parse_slow(data, iso_ms(start), iso_ms(end))
    assert fast is not None and fast.ids.to_pylist() == slow.ids and len(fast.ids) == 30
    assert list(fast.predictions) == slow.predictions
    assert fast.classes == slow.classes == [False, True]
    assert (fast.probabilities == slow.probabilities).all()
    assert pd.DataFrame(slow.inputs).equals(fast.inputs)
    window = read_window(ctx, PROJECT, ENDPOINT, start, end + pd.Timedelta(milliseconds=1))
    assert window.rows == 35 and list(window.inference_ids[-5:]) == late["inference_ids"]
    assert window.probabilities is not None and window.probabilities.shape == (35, 2)
    mixed = data + json.dumps(json.loads(data.splitlines()[0]) | {"eventVersion": 7}).encode()
    assert _parse_slow(mixed, iso_ms(start), iso_ms(end)).ids[:30] == slow.ids


def test_a_violation_is_a_report_an_alert_rule_fires_on(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "quality", "model_quality")
    alerts = AlertService(ctx)
    alerts.create_rule(
        PROJECT,
        RuleCreate(
            name="quality-broke",
            source="monitoring",
            condition="status == completed_with_violations",
            dataset="quality",
            report_kind="model_quality",
        ),
    )
    clock.advance(minutes=1)
    answer = host.invoke(PROJECT, ENDPOINT, inputs(60))
    svc = MonitorService(ctx, host.capture)
    svc.upload_ground_truth(PROJECT, ENDPOINT, labels_for(answer, flip=0.5))
    execution = svc.run(PROJECT, "quality")
    assert execution.status is ExecutionStatus.COMPLETED_WITH_VIOLATIONS
    (outcome,) = alerts.evaluate(PROJECT).outcomes
    assert (outcome.subject, outcome.action, outcome.value) == (
        "quality",
        "fired",
        "completed_with_violations",
    )
    # the row is the alert engine's, not a drift report: the monitoring stage does not list it
    assert MonitoringService(ctx).list_reports(PROJECT) == []
    with pytest.raises(NotFoundError):
        MonitoringService(ctx).get_report(execution.id)
    events = [e for e in AuditTrail(ctx).list(project=PROJECT) if e.action == "monitor.executed"]
    assert events[-1].after["status"] == "completed_with_violations"
    graph = LineageService(ctx).query("monitor_execution", execution.id, direction="upstream")
    assert {n.kind for n in graph.nodes} >= {"endpoint", "dataset_version", "model_version"}


def test_the_rollout_hook_and_the_dashboard_read_the_latest_status(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    monitor(ctx, host, "inputs", "data_quality", min_rows=30)
    assert monitor_alarm(ctx, PROJECT, "inputs") is None  # nothing to judge yet
    board = DashboardService(ctx).dashboard(PROJECT)
    assert board.rows[0].monitors == {"inputs": "none yet"}
    clock.advance(minutes=1)
    host.invoke(PROJECT, ENDPOINT, inputs(40, income_scale=4.0))
    svc = MonitorService(ctx, host.capture)
    assert svc.run(PROJECT, "inputs").status is ExecutionStatus.COMPLETED_WITH_VIOLATIONS
    assert monitor_alarm(ctx, PROJECT, "inputs") is True
    assert DashboardService(ctx).dashboard(PROJECT).rows[0].monitors == {
        "inputs": "completed_with_violations"
    }
    clock.advance(hours=2)
    host.invoke(PROJECT, ENDPOINT, inputs(40))
    assert svc.run(PROJECT, "inputs").status is ExecutionStatus.COMPLETED
    assert monitor_alarm(ctx, PROJECT, "inputs") is False
    page = svc.page(PROJECT, "inputs")
    assert page.count("<svg") >= 3 and "share_drifted over executions" in page


def test_no_data_failure_rebaseline_and_removal(
    ctx: Context, project: str, host: ModelHost, model_dir: Path, clock: FrozenClock
) -> None:
    deploy(ctx, host, model_dir)
    created = monitor(ctx, host, "quality", "model_quality")
    svc = MonitorService(ctx, host.capture)
    empty = svc.run(PROJECT, "quality")
    assert (empty.status, empty.records, empty.error) == (
        ExecutionStatus.NO_DATA,
        0,
        "No captured records in the window.",
    )
    redone = svc.rebaseline(PROJECT, "quality", dataset="training", version=1)
    assert redone.baseline.version == 2 and redone.constraints_version == 2
    assert redone.constraints == created.constraints  # same data, same suggestion
    EndpointService(ctx, host).delete(PROJECT, ENDPOINT)
    failed = svc.run(PROJECT, "quality")
    assert failed.status is ExecutionStatus.FAILED
    assert "Endpoint 'web' does not exist" in (failed.error or "")
    assert [f.path for f in failed.files] == ["report.html", "report.json"]
    html = svc.open_file(PROJECT, "quality", failed.id, "report.html").read().decode()
    assert "Status: failed" in html
    removed = svc.delete(PROJECT, "quality")
    assert removed.latest is not None and removed.latest.id == failed.id
    assert svc.list(PROJECT) == []
