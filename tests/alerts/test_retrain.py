"""An alert starts the retraining loop: ``alert.fired`` triggers a schedule, whose pipeline trains
on the data that drifted and registers a candidate that waits for a person's approval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from civicml.alerts import AlertService, RuleCreate
from civicml.core import FrozenClock, Principal
from civicml.core.errors import PermissionDeniedError
from civicml.data import DatasetService
from civicml.governance.audit import AuditTrail
from civicml.governance.projects import ProjectService
from civicml.pipelines.schedule_schemas import FiringStatus, ScheduleCreate
from civicml.pipelines.scheduler import Scheduler
from civicml.pipelines.schedules import ScheduleService
from civicml.registry import ApprovalStatus, RegistryService
from tests.alerts.helpers import PROJECT, alert_settings, context, drift_report

RETRAIN = "tests.alerts.retrain:retrain"


def _frame(offset: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(offset, 1.0, 200)
    z = rng.normal(offset, 1.0, 200)
    return pd.DataFrame({"x": x, "z": z, "label": (x + z > 2 * offset).astype(int)})


def test_a_firing_alert_starts_retraining_and_the_candidate_waits_for_approval(
    tmp_path: Path, clock: FrozenClock
) -> None:
    settings = alert_settings(tmp_path / "home", pipeline_modules=["tests.alerts.retrain"])
    engineer = context(settings, clock, user="erin")  # creates the rule and the schedule
    ProjectService(engineer).create(PROJECT)
    try:
        datasets = DatasetService(engineer)
        datasets.ingest(PROJECT, "baseline", _frame(0.0, 1), progress=False)
        ScheduleService(engineer).create(
            PROJECT,
            ScheduleCreate(
                name="retrain-on-drift",
                pipeline=RETRAIN,
                event="alert.fired",
                match={"rule": "claims-drift", "severity": ["warning", "critical"]},
                params={
                    "dataset": "{event.subject}",
                    "rule": "{event.rule}",
                    "severity": "{event.severity}",
                },
            ),
        )
        AlertService(engineer).create_rule(
            PROJECT,
            RuleCreate(
                name="claims-drift",
                source="monitoring",
                condition="verdict == drift",
                dataset="claims",
                severity="critical",
            ),
        )
        datasets.ingest(PROJECT, "claims", _frame(5.0, 2), progress=False)
        drift_report(engineer, "claims")
        (outcome,) = AlertService(engineer).evaluate(PROJECT).outcomes
        assert outcome.action == "fired"

        scheduler = Scheduler(engineer, name="s1", interval_s=1, lease_s=60)
        try:
            assert len(scheduler.run_once(timeout_s=120)) == 1
            assert scheduler.run_once(timeout_s=120) == []  # the alert starts it once
        finally:
            scheduler.stop(wait=True)
        (firing,) = ScheduleService(engineer).firings(PROJECT, "retrain-on-drift")
        assert firing.status is FiringStatus.SUCCEEDED, firing.error
        assert firing.parameters == {
            "dataset": "claims",
            "rule": "claims-drift",
            "severity": "critical",
        }
        assert firing.event is not None and firing.event["alert_id"] == outcome.alert_id

        # The candidate: registered PendingManualApproval, with its run as evidence...
        registry = RegistryService(engineer)
        (candidate,) = registry.list_versions(PROJECT, "retrained")
        assert candidate.approval_status is ApprovalStatus.PENDING
        assert candidate.run_id is not None and candidate.created_by == "erin"
        assert "retrained after alert claims-drift (critical)" in candidate.description
        # ...never approved by the pipeline: no approval event, and the user it ran as, who
        # registered it, may not approve it (separation of duties); a reviewer does.
        changes = AuditTrail(engineer).list(action="model_version.approval_changed")
        assert changes == []
        with pytest.raises(PermissionDeniedError):
            registry.approve(PROJECT, "retrained", candidate.version, "looks fine")
        reviewer = RegistryService(engineer.as_principal(Principal(user="rosa")))
        approved = reviewer.approve(PROJECT, "retrained", 1, "reviewed the drift evidence")
        assert approved.approval_status is ApprovalStatus.APPROVED
    finally:
        engineer.db.close()
