"""The retraining pipeline the alert test's schedule starts (``tests.alerts.retrain:retrain``):
the scheduler imports it because the test allows this module in ``pipeline_modules``."""

from __future__ import annotations

import civicml as cm
from civicml.data.schemas import DatasetVersion
from civicml.pipelines import current, steps


@cm.step(cache=False)
def latest(dataset: str) -> DatasetVersion:
    """The newest version of ``dataset`` (the data that drifted)."""
    from civicml.data.service import DatasetService

    here = current()
    return DatasetService(here.ctx).get_version(here.project, dataset, "latest")


@cm.step(cache=False)
def why(rule: str, severity: str) -> str:
    """The candidate's description: the alert that started it."""
    return f"retrained after alert {rule} ({severity})"


@cm.pipeline(name="retrain-on-alert")
def retrain(dataset: str, rule: str = "", severity: str = "") -> None:
    data = latest(dataset)
    trained = steps.train(data, "label", algorithm="logistic")
    steps.register("retrained", trained, description=why(rule, severity))
