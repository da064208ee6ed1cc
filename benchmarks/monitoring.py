"""Monitor benchmark: one model-quality window of captured records with delayed labels.

Run from the repository root with the civicml virtualenv::

    .venv/bin/python benchmarks/monitoring.py            # 1,000,000 records, rewrites docs
    .venv/bin/python benchmarks/monitoring.py --quick    # 50,000 records, no docs

An endpoint is deployed (a logistic model), then ``--rows`` captured records in SageMaker's
format are written straight into the artifact store as capture files (35,000 records each, as
the capture writer rotates them at 16 MiB), and one ground-truth upload labels every record.
What is timed is ``MonitorService.run`` of a model-quality monitor: read the window's capture
files (verified, decrypted), join the labels by inference id, compute the metrics (with Model
Monitor's five resampled standard deviations) and store the execution, its report and audit
event. Times are medians over ``--reps`` runs; peak RSS is the process's growth over the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _report import civicml_source, write_section  # noqa: E402

DOCS_MD = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- monitors:begin -->", "<!-- monitors:end -->"
GOAL_S = 5.0
PER_FILE = 35_000


def _record(i: int, event: str, when: datetime, predicted: bool, score: float) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    row = {"age": i % 70 + 18, "income": float(1500 + i % 997), "region": "north"}
    answer = {
        "prediction": predicted,
        "probabilities": [1 - score, score],
        "classes": [False, True],
    }
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "mode": "INPUT",
                    "data": json.dumps(row),
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "mode": "OUTPUT",
                    "data": json.dumps(answer),
                    "encoding": "JSON",
                },
            },
            "eventMetadata": {
                "eventId": event,
                "inferenceId": event,
                "inferenceTime": stamp,
                "requestId": "r",
                "endpointName": "web",
                "modelName": "eligibility",
                "modelVersion": 1,
                "modelVersionId": "x",
                "caller": "bench",
                "variant": "v1",
                "shadow": False,
                "latencyMs": 0.3,
            },
            "eventVersion": "0",
        },
        separators=(",", ":"),
    )


def measure(rows: int, reps: int) -> dict[str, float]:
    from tests.monitors.helpers import deploy
    from tests.serving.helpers import train

    from civicml.core import FrozenClock, Principal, Settings
    from civicml.governance.projects import ProjectService
    from civicml.monitors import MonitorCreate, MonitorService
    from civicml.serving import ModelHost
    from civicml.serving._queries import endpoint_row
    from civicml.store import Context, MetadataStore
    from civicml.store.artifact_index import ArtifactIndex
    from civicml.store.artifacts import artifact_store_for

    home = Path(tempfile.mkdtemp(prefix="civicml-bench-monitors-"))
    settings = Settings.load(home=home)
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    clock = FrozenClock(start)
    ctx = Context(
        db=MetadataStore(settings.database_url),
        artifacts=artifact_store_for(settings),
        principal=Principal(user="bench", roles=frozenset({"admin"})),
        settings=settings,
        clock=clock,
    )
    ProjectService(ctx).create("benefits")
    train(home / "model")
    host = ModelHost(ctx)
    deploy(ctx, host, home / "model")
    svc = MonitorService(ctx)
    svc.create(
        "benefits",
        MonitorCreate(
            name="quality",
            endpoint="web",
            type="model_quality",
            every="1h",
            baseline_dataset="training",
        ),
    )
    with ctx.db.read() as conn:
        endpoint = endpoint_row(conn, ProjectService(ctx).get("benefits", "projects.read"), "web")
    rng = np.random.default_rng(0)
    ids = [uuid.uuid4().hex for _ in range(rows)]
    predicted = rng.random(rows) < 0.5
    scores = rng.random(rows).round(4)
    step = timedelta(seconds=3000 / rows)
    first = start + timedelta(seconds=1)  # inside the window [now - 1h, now]
    for low in range(0, rows, PER_FILE):
        text = "\n".join(
            _record(i, ids[i], first + i * step, bool(predicted[i]), float(scores[i]))
            for i in range(low, min(rows, low + PER_FILE))
        )
        stored = ctx.artifacts.put_bytes((text + "\n").encode())
        with ctx.db.write() as uow:
            ArtifactIndex.add(
                uow,
                project_id=endpoint.project_id,
                owner_kind="endpoint",
                owner_id=endpoint.id,
                path=f"capture/2026/05/01/10/{uuid.uuid4()}.jsonl",
                stored=stored,
                created_by="bench",
                created_at=start,
                media_type="application/x-ndjson",
            )
    clock.advance(hours=1)
    truth = predicted ^ (rng.random(rows) < 0.1)
    svc.upload_ground_truth("benefits", "web", pd.DataFrame({"inference_id": ids, "label": truth}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        execution = svc.run("benefits", "quality")
        times.append(time.perf_counter() - began)
        if execution.labeled != rows:
            raise SystemExit(f"expected {rows} labeled records, got {execution.labeled}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    host.close()
    return {
        "seconds": statistics.median(times),
        "rss_growth_mb": max(0, peak - before) / 1024,
        "rss_peak_mb": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50,000 records; no docs")
    args = parser.parse_args()
    rows = 50_000 if args.quick else args.rows
    found = measure(rows, args.reps)
    verdict = "meets" if found["seconds"] <= GOAL_S else "misses"
    print(
        f"model-quality window of {rows:,} records with labels: {found['seconds']:.2f} s "
        f"(goal <= {GOAL_S:g} s: {verdict}); peak RSS {found['rss_peak_mb']:.0f} MB, "
        f"+{found['rss_growth_mb']:.0f} MB while running"
    )
    if args.quick:
        return
    section = (
        "\n## Monitors: a model-quality window\n\n"
        f"Measured {dt.date.today().isoformat()} on {platform.machine()} "
        f"({platform.python_version()}), civicml {civicml_source(ROOT)}: "
        "`.venv/bin/python benchmarks/monitoring.py` (method in its docstring).\n\n"
        "| window | records | median time | goal | peak RSS (growth while running) |\n"
        "|---|---|---|---|---|\n"
        f"| model quality, labels joined by inference id | {rows:,} | {found['seconds']:.2f} s"
        f" | ≤ {GOAL_S:g} s ({verdict}) | {found['rss_peak_mb']:.0f} MB "
        f"(+{found['rss_growth_mb']:.0f} MB) |\n\n"
    )
    write_section(DOCS_MD, BEGIN, END, section)


if __name__ == "__main__":
    main()
