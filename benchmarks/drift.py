"""Drift benchmark: civicml ``drift_report`` vs Evidently 0.7 ``DataDriftPreset``.

Run from the repository root with the civicml virtualenv::

    .venv/bin/python benchmarks/drift.py            # 100,000 x 25, rewrites docs/benchmarks.md
    .venv/bin/python benchmarks/drift.py --quick    # 5,000 rows, no docs

and civicml alone on ``--large`` rows (1,000,000) in a fresh process: time, and the peak memory
above the two frames (issue 11's goals: at most 3 s, at most the frames plus 20 %).

Both sides get the same frames (``benchmarks/_drift_data.py``, seeded): 13 numeric and 12
categorical columns, every other one drifted. Evidently runs in its own virtualenv
(``benchmarks/.venv-evidently``, created on first use: Evidently 0.7 needs ``pandas<3``) in a
subprocess, with the same column types declared. Verdicts are compared per column where both
use the same test; times are medians over ``--reps`` runs, peak RSS per process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

from _drift_data import frames  # noqa: E402
from _report import write_section  # noqa: E402

EVIDENTLY_VENV = BENCH / ".venv-evidently"
EVIDENTLY_REQUIREMENTS = ["evidently>=0.7,<0.8", "pandas<3"]
DOCS_MD = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- drift:begin -->", "<!-- drift:end -->"
GOAL_SPEEDUP = 10.0
GOAL_LARGE_S = 3.0
GOAL_LARGE_MEMORY = 0.20
X = "\N{MULTIPLICATION SIGN}"
# Evidently's display names -> civicml's test names
SAME_TEST = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "PSI": "psi",
}


def ensure_evidently() -> Path:
    py = EVIDENTLY_VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {EVIDENTLY_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", *EVIDENTLY_REQUIREMENTS], check=True
        )
    return py


def run_civicml(rows: int, reps: int) -> dict[str, object]:
    from civicml.monitoring import drift_report

    ref, cur, _, categorical = frames(rows)
    out: dict[str, object] = {}
    for label, check in (("drift", False), ("drift+constraints", True)):
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            report = drift_report(ref, cur, categorical=categorical, check_constraints=check)
            times.append(time.perf_counter() - start)
        out[label] = times
    out["report"] = report
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_evidently(rows: int, reps: int) -> dict[str, object]:
    py = ensure_evidently()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evidently.json"
        subprocess.run(
            [str(py), str(BENCH / "_drift_evidently.py"), str(rows), str(path), str(reps)],
            check=True,
            timeout=1800,
        )
        result: dict[str, object] = json.loads(path.read_text())
        return result


def compare(report: object, evidently: dict[str, object]) -> list[dict[str, object]]:
    rows = []
    ev_columns: dict[str, dict[str, object]] = evidently["columns"]  # type: ignore[assignment]
    for col in report.columns:  # type: ignore[attr-defined]
        ev = ev_columns.get(col.column)
        if ev is None:
            continue
        method = str(ev["method"])
        score, threshold = float(ev["score"]), float(ev["threshold"])  # type: ignore[arg-type]
        if "p_value" in method:
            ev_drift = score <= threshold if method.startswith("K-S") else score < threshold
        else:
            ev_drift = score >= threshold
        rows.append(
            {
                "column": col.column,
                "civicml_test": col.stattest,
                "evidently_test": method,
                "same_test": SAME_TEST.get(method) == col.stattest,
                "civicml_score": col.drift_score,
                "evidently_score": score,
                "civicml_drift": col.drift_detected,
                "evidently_drift": ev_drift,
            }
        )
    return rows


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def large_child(rows: int, reps: int) -> None:
    """In a fresh process: build the frames, then time ``drift_report`` with constraints (wall
    and CPU time, all threads) and record the peak resident memory above the frames; prints
    JSON."""
    import gc

    from civicml.monitoring import drift_report

    before = _status_mib("VmRSS")
    ref, cur, _, categorical = frames(rows)
    gc.collect()
    with_frames = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # reset the peak (VmHWM) to the current RSS
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        drift_report(ref, cur, categorical=categorical)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    frames_mib = with_frames - before
    peak_over = _status_mib("VmHWM") - with_frames
    print(
        json.dumps(
            {
                "times": times,
                "cpu_times": cpu,
                "frames_mib": frames_mib,
                "peak_over_mib": peak_over,
                "load_before": os.getloadavg(),
            }
        )
    )


def run_large(rows: int, reps: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, "--large-child", str(rows), "--reps", str(reps)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def render_large(rows: int, large: dict[str, object]) -> list[str]:
    t = statistics.median(large["times"])  # type: ignore[arg-type]
    cpu = statistics.median(large.get("cpu_times") or [float("nan")])  # type: ignore[arg-type]
    load = large.get("load_before") or [float("nan")] * 3
    share = float(large["peak_over_mib"]) / float(large["frames_mib"])  # type: ignore[arg-type]
    return [
        "",
        f"**{rows:,} rows {X} 25 columns, civicml only** (Evidently would need minutes and "
        "gigabytes here), with constraints, in a fresh process, median of "
        f"{len(large['times'])}: **{t:.2f} s**; the two frames take "  # type: ignore[arg-type]
        f"{float(large['frames_mib']):.0f} MiB and the report's peak adds "  # type: ignore[arg-type]
        f"{float(large['peak_over_mib']):.0f} MiB ({share:.0%} of the frames). Goals (issue 11): "  # type: ignore[arg-type]
        f"≤ {GOAL_LARGE_S:.0f} s — **{'met' if t <= GOAL_LARGE_S else 'not met'}**; memory ≤ the "
        f"frames + {GOAL_LARGE_MEMORY:.0%} — "
        f"**{'met' if share <= GOAL_LARGE_MEMORY else 'not met'}**. Columns are compared side by "
        "side, a thread per core (NumPy's sorts release the GIL), as many as 15 % of the frames' "
        "size holds (at least two): each holds a column's two sorted sides and one block of their "
        f"merge. CPU time of the report, all threads: {cpu:.2f} s; the load average was "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} when this part started (on a shared "
        "machine the wall time follows the load; the CPU time much less).",  # type: ignore[index]
    ]


def render(
    rows: int,
    civ: dict[str, object],
    ev: dict[str, object],
    cmp: list[dict[str, object]],
    large: tuple[int, dict[str, object]] | None = None,
) -> str:
    ev_t = statistics.median(ev["times"])  # type: ignore[arg-type]
    d_t = statistics.median(civ["drift"])  # type: ignore[arg-type]
    c_t = statistics.median(civ["drift+constraints"])  # type: ignore[arg-type]
    same = [r for r in cmp if r["same_test"]]
    agree = sum(r["civicml_drift"] == r["evidently_drift"] for r in same)
    max_diff = max(
        (abs(float(r["civicml_score"]) - r["evidently_score"]) for r in same),  # type: ignore[arg-type, operator]
        default=0.0,
    )
    load = os.getloadavg()
    import numpy
    import pandas
    import scipy

    lines = [
        "## Drift",
        "",
        "_Generated by `.venv/bin/python benchmarks/drift.py` — do not edit by hand; re-run the "
        "script._",
        "",
        f"- **Date:** {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {os.cpu_count()} cores, {platform.machine()}, Linux "
        f"{platform.release()}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
        f"- **Versions:** Python {platform.python_version()}; civicml with NumPy "
        f"{numpy.__version__}, SciPy {scipy.__version__}, pandas {pandas.__version__}; "
        f"Evidently {ev['version']} (own virtualenv, pandas<3)",
        f"- **Data:** reference and current {rows:,} rows {X} 25 columns (13 numeric, 12 "
        f"categorical; every other column drifted), {len(ev['times'])} repetition(s), "  # type: ignore[arg-type]
        "median reported.",
        "",
        "| | Time | Peak RSS (process) | Speed-up vs Evidently |",
        "|---|---:|---:|---:|",
        f"| Evidently `Report([DataDriftPreset()])` | {ev_t:.2f} s | "
        f"{ev['peak_rss_mib']:.0f} MiB | 1{X} |",
        f"| civicml `drift_report(..., check_constraints=False)` | {d_t:.2f} s | — | "
        f"{ev_t / d_t:.1f}{X} |",
        f"| civicml `drift_report(...)` (with Model Monitor constraints) | {c_t:.2f} s | "
        f"{civ['peak_rss_mib']:.0f} MiB | {ev_t / c_t:.1f}{X} |",
        "",
        f"Goal: ≥ {GOAL_SPEEDUP:.0f}{X} faster than Evidently with the same verdict per column "
        f"where both use the same test — **{'met' if ev_t / c_t >= GOAL_SPEEDUP else 'not met'}** "
        f"with constraints, **{'met' if ev_t / d_t >= GOAL_SPEEDUP else 'not met'}** without. "
        f"Same test on {len(same)} of {len(cmp)} columns; verdicts agree on {agree} of "
        f"{len(same)}; largest score difference {max_diff:.2e}. Evidently's time excludes its "
        "import; RSS is the whole process (frames included).",
        *(render_large(*large) if large is not None else []),
        "",
        "| Column | Test | civicml score | Evidently score | civicml drift | Evidently drift |",
        "|---|---|---:|---:|---|---|",
    ]
    for r in cmp:
        lines.append(
            f"| {r['column']} | {r['civicml_test']} | {float(r['civicml_score']):.6f} | "  # type: ignore[arg-type]
            f"{float(r['evidently_score']):.6f} | {r['civicml_drift']} | {r['evidently_drift']} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5,000 rows, 1 rep, no docs")
    parser.add_argument("--large", type=int, default=1_000_000, help="civicml-only rows")
    parser.add_argument("--large-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_child is not None:
        large_child(args.large_child, args.reps)
        return
    rows, reps = (5000, 1) if args.quick else (args.rows, args.reps)
    ev = run_evidently(rows, reps)
    civ = run_civicml(rows, reps)
    cmp = compare(civ["report"], ev)
    large_rows = 20_000 if args.quick else args.large
    large = (large_rows, run_large(large_rows, 1 if args.quick else reps))
    section = render(rows, civ, ev, cmp, large)
    print(section)
    if not args.quick:
        write_section(DOCS_MD, BEGIN, END, section)
        print(f"Wrote the drift section of {DOCS_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()
