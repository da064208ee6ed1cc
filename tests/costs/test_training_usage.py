"""Training, tuning trials and script mode record their usage on their runs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import civicml as cm


def _data(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": (x > 0).astype(int)})


def test_tabular_training_and_tuning_trials_are_measured(tmp_path: Path) -> None:
    with cm.connect(home=tmp_path / "home") as ml:
        proj = ml.project("t")
        dv = proj.datasets.ingest("d", _data())
        with proj.start_run(experiment="fit") as run:
            cm.train.tabular(dv, target="y", algorithm="logistic", run=run)
        result = cm.train.tune(
            dv,
            target="y",
            algorithm="logistic",
            space={"C": cm.train.tune.float(0.1, 1.0)},
            project=proj,
            max_trials=2,
        )
        report = ml.costs.report("t", by="run")
        parent = ml.backend.get_run(result.tuning_id)
    by_id = {line.id: line for line in report.lines}
    assert by_id[run.id].cpu_s > 0 and by_id[run.id].wall_s > 0 and by_id[run.id].runs == 1
    trials = [t.run_id for t in result.trials]
    assert len(trials) == 2 and all(by_id[t].cpu_s > 0 for t in trials)
    assert parent.params["tuning.seed"] == "0"


@pytest.mark.skipif(sys.platform != "linux", reason="script mode's limits are Linux's")
def test_script_mode_charges_the_scripts_cpu_to_the_run(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            total = sum(i * i for i in range(2_000_000))
            open(os.path.join(os.environ["CIVICML_MODEL_DIR"], "model.txt"), "w").write(str(total))
            """
        )
    )
    with cm.connect(home=tmp_path / "home") as ml:
        proj = ml.project("s")
        dv = proj.datasets.ingest("d", _data(20))
        with proj.start_run(experiment="script") as run:
            cm.train.script(script, dv, target="y", run=run, echo=False)
        (line,) = [r for r in ml.costs.report("s", by="run").lines if r.id == run.id]
    assert line.cpu_s > 0.05  # the subprocess's CPU time, though this thread mostly waited
    assert line.peak_memory_bytes > 0
