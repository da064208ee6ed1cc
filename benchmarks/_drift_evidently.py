"""Evidently side of benchmarks/drift.py; runs in benchmarks/.venv-evidently.

Usage: python _drift_evidently.py ROWS OUT.json — prints nothing, writes per-column verdicts,
the median wall time and the peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import evidently
from _drift_data import frames
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def main() -> None:
    rows, out, reps = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    ref, cur, numeric, categorical = frames(rows)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    times = []
    result = None
    for _ in range(reps):
        start = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        result = snapshot.dict()
        times.append(time.perf_counter() - start)
    columns = {}
    for metric in result["metrics"]:  # type: ignore[index]
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            method = config.get("method") or ""
            columns[config["column"]] = {
                "score": float(metric["value"]),
                "method": method,
                "threshold": config.get("threshold"),
            }
    out.write_text(
        json.dumps(
            {
                "version": evidently.__version__,
                "times": times,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "columns": columns,
            }
        )
    )


if __name__ == "__main__":
    main()
