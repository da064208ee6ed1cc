"""An embedded client judges ``monitor:NAME`` rollout alarms as a server does (it installs the
same hook), so a script's guarded rollout rolls back on a monitor with violations."""

from __future__ import annotations

from pathlib import Path

import civicml as cm
from civicml.core.settings import Settings
from civicml.data.samples import benefit_applications

P = "embedded-guard"


def test_an_embedded_rollout_rolls_back_on_a_monitor_with_violations(tmp_path: Path) -> None:
    roles = {"rosa": ["reviewer"]}
    settings = Settings.load(home=tmp_path / "home", user="alice", roles=roles)
    with cm.connect(settings=settings, user="alice") as ml:
        proj = ml.project(P)
        data = proj.datasets.ingest("applications", benefit_applications(800, seed=4))
        versions = []
        for algorithm in ("logistic", "logistic"):
            with proj.start_run() as run:
                trained = cm.train.tabular(data, target="eligible", algorithm=algorithm, run=run)
            versions.append(proj.models.register("eligibility", trained, run=run))
    reviewer = Settings.load(home=tmp_path / "home", user="rosa", roles=roles)
    with cm.connect(settings=reviewer, user="rosa") as ml:
        for mv in versions:
            ml.project(P).models.approve(mv, note="validated")
    with cm.connect(settings=settings, user="alice") as ml:
        proj = ml.project(P)
        ep = proj.endpoints.deploy("eligibility", versions[0])
        proj.monitors.add("guard", endpoint="eligibility", type="data_quality", every="1h")
        drifted = benefit_applications(60, seed=9, drifted=True).drop(columns=["eligible"])
        drifted["income"] = 10_000_000.0
        ep.predict(drifted)
        assert proj.monitors.run("guard").status.value == "completed_with_violations"
        ep.update(versions[1], strategy="canary", bake="0s", alarms=["monitor:guard"])
        rolled = ep.rollout.tick()
        assert rolled.status.value == "rolled_back"
        assert rolled.reason is not None and "monitor:guard" in rolled.reason
        assert [v.model_version for v in ep.variants()] == [1]
