"""An endpoint's invocations and their CPU time reach the usage ledger (flushed, and at close)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import civicml as cm


def test_invocations_and_cpu_are_counted_per_endpoint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame["y"] = (frame.a > 0).astype(int)
    with cm.connect(home=home, user="alice") as ml:
        proj = ml.project("ep")
        dv = proj.datasets.ingest("d", frame)
        with proj.start_run() as run:
            trained = cm.train.tabular(dv, target="y", algorithm="logistic", run=run)
        mv = proj.models.register("m", trained, run=run)
    with cm.connect(home=home, user="rosa") as reviewer:
        reviewer.project("ep").models.approve(("m", mv.version), note="validated")
    with cm.connect(home=home, user="alice") as ml:
        ml.project("ep").endpoints.deploy("scoring", model="m", version=mv.version, capture=False)
        host = ml.backend.serving
        for _ in range(20):  # the inline fast path: its CPU clock sampled
            assert host.invoke_nowait("ep", "scoring", [{"a": 0.5, "b": 1.0}]) is not None
        for _ in range(5):  # the worker-thread path: every call timed
            host.invoke("ep", "scoring", [{"a": -0.5, "b": 0.0}] * 50)
        host.flush_usage()
        first = ml.costs.report("ep", by="endpoint").lines
        host.invoke("ep", "scoring", [{"a": 1.0, "b": 1.0}])
    # closing the client flushed the last invocation
    with cm.connect(home=home, user="alice") as ml:
        (line,) = ml.costs.report("ep", by="endpoint").lines
    assert [(r.name, r.invocations) for r in first] == [("scoring", 25)]
    assert first[0].cpu_s > 0
    assert (line.name, line.kind, line.invocations) == ("scoring", "endpoint", 26)
    assert line.cpu_s >= first[0].cpu_s
