"""Ray scaling benchmark: ``cm.tune`` trials per minute on a Ray cluster of 1 CPU vs 2 CPUs.

Run from the repository root with the civicml virtualenv (Ray from ``pip install -e '.[ray]'``)::

    .venv/bin/python benchmarks/ray_scaling.py            # 24 trials x 3 rounds, rewrites docs
    .venv/bin/python benchmarks/ray_scaling.py --quick    # 8 trials x 1 round, no docs

Each round starts a real local Ray cluster (``ray start --head --num-cpus=N`` on 127.0.0.1, in
a temporary directory, stopped afterwards) for N = 1 and N = 2, in rotating order, and runs the
same tuning in a fresh process with ``CIVICML_COMPUTE=ray``: ``cm.tune`` of LightGBM
(``n_jobs=1``: one thread per trial), random sampler seed 0, ``max_parallel=2`` in both arms — so
the cluster is the only difference. A warm-up tuning of 2 trials first starts the Ray workers
(their imports are not trials); then the timed tuning of ``--trials`` trials, each a child run
with its params, metrics, model files and lineage on the embedded platform (SQLite, local
artifacts: a local cluster shares this machine's files). Trials per minute = trials ÷ wall time
of the timed ``cm.tune`` call; medians over the rounds. Goal (issue 10): 2 workers ≥ 1.7 times the
trials per minute of 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section

ROOT = Path(__file__).resolve().parent.parent
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_JSON = ROOT / "docs" / "benchmarks" / "ray_scaling.json"
BEGIN, END = "<!-- ray-scaling:begin -->", "<!-- ray-scaling:end -->"
GOAL_SPEEDUP = 1.7
CPUS = (1, 2)
SEED = 0
X = "\N{MULTIPLICATION SIGN}"
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
#: LightGBM per trial: one thread, enough trees that a trial is real work (about a second).
PARAMS = {"n_estimators": 300, "n_jobs": 1}


def stop_cluster(temp: str, *, grace_s: float = 15.0) -> list[int]:
    """Stop the Ray cluster whose processes name ``temp`` (its --temp-dir): those processes and
    their descendants, by pid — never ``ray stop``, which stops every cluster of the user."""

    def table() -> dict[int, tuple[int, str]]:
        found: dict[int, tuple[int, str]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", encoding="utf-8") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/cmdline", "rb") as cmd:
                    line = cmd.read().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            found[int(name)] = (ppid, line)
        return found

    procs = table()
    ours = {pid for pid, (_, line) in procs.items() if temp in line}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in ours} - ours
        grew = bool(more)
        ours |= more
    ours.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in ours):
            time.sleep(0.2)
    return sorted(ours)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent))
    if found is None:
        sys.exit("Ray is not installed: .venv/bin/pip install -e '.[ray]'")
    return found


def run_arm(cpus: int, trials: int, rows: int) -> float:
    """Start a cluster of ``cpus`` CPUs, run the tuning in a fresh process, stop the cluster;
    the timed tuning's wall time in seconds."""
    ray_cli = _ray_cli()
    temp = tempfile.mkdtemp(prefix="cmbray", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIVICML_", "RAY_"))}
    env.update(RAY_ENV)
    try:
        subprocess.run(
            [
                ray_cli,
                "start",
                "--head",
                f"--num-cpus={cpus}",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
            ],
            env=env,
            cwd=temp,
            check=True,
            capture_output=True,
            timeout=180,
        )
        worker_env = {
            **env,
            "RAY_ADDRESS": f"127.0.0.1:{port}",
            "CIVICML_COMPUTE": "ray",
            "CIVICML_HOME": str(Path(temp) / "home"),
        }
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(trials), str(rows)],
            env=worker_env,
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            sys.exit(f"The {cpus}-CPU arm failed:\n{done.stderr[-4000:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["wall_s"])
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def worker(trials: int, rows: int) -> None:
    """One arm, in its own process: warm the workers up, then time ``cm.tune``."""
    import numpy as np
    import pandas as pd

    import civicml as cm

    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(rows, 20))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
    frame["eligible"] = ((x[:, :5].sum(axis=1) + rng.normal(size=rows)) > 0).astype(int)
    space = {
        "num_leaves": cm.tune.int(4, 64),
        "learning_rate": cm.tune.float(0.01, 0.3, log=True),
        "min_child_samples": cm.tune.int(5, 50),
    }
    with cm.connect(user="bench") as ml:
        proj = ml.project("ray-scaling")
        raw = proj.datasets.ingest("rows", frame)
        common = {"target": "eligible", "project": proj, "params": PARAMS, "space": space}
        cm.tune(raw, **common, max_trials=2, max_parallel=2, strategy="random", seed=SEED + 1)
        started = time.perf_counter()
        result = cm.tune(raw, **common, max_trials=trials, max_parallel=2, strategy="random")
        wall = time.perf_counter() - started
    assert len(result.trials) == trials
    print(json.dumps({"wall_s": wall, "best": result.best_value}))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for package in ("civicml", "ray", "optuna", "lightgbm"):
        found[package] = md.version(package)
    return found


def render(report: dict[str, Any]) -> str:
    med, v = report["trials_per_min"], report["versions"]
    speedup = report["speedup"]
    lines = [
        "## Ray: tuning throughput, 1 vs 2 worker CPUs",
        "",
        f"`benchmarks/ray_scaling.py`, {report['date']}, {report['machine']}; civicml "
        f"{v['civicml']}, Ray {v['ray']}, Optuna {v['optuna']}, LightGBM {v['lightgbm']}, "
        f"Python {v['python']}.",
        f"- **Work:** `cm.tune` with `CIVICML_COMPUTE=ray`, {report['trials']} LightGBM trials "
        f"({PARAMS['n_estimators']} trees, `n_jobs=1`), random sampler, `max_parallel=2`, "
        f"{report['rows']:,} rows {X} 20 features; a real local Ray cluster (`ray start --head "
        f"--num-cpus=N`) per arm and round, workers warmed up first; {report['rounds']} "
        "round(s), arms in rotating order, median reported. Load average (1 min) of the "
        f"machine before and after: {report['load'][0]:.2f} / {report['load'][1]:.2f} — other "
        "work on it takes the second CPU first, so the 2-CPU figure suffers most.",
        "",
        "| Cluster | Wall time | Trials per minute | vs 1 CPU |",
        "|---|---:|---:|---:|",
    ]
    for cpus in CPUS:
        key = str(cpus)
        lines.append(
            f"| {cpus} worker CPU{'s' if cpus > 1 else ''} | {report['wall_s'][key]:.1f} s | "
            f"{med[key]:.1f} | {med[key] / med['1']:.2f}{X} |"
        )
    met = speedup >= GOAL_SPEEDUP
    lines += [
        "",
        "| Goal (issue 10) | Measured | Status |",
        "|---|---:|---|",
        f"| 2 workers ≥ {GOAL_SPEEDUP}{X} the trials per minute of 1 | {speedup:.2f}{X} | "
        f"{'✅ met' if met else '❌ not met'} |",
        "",
        "Every trial is a Ray task creating its own child run (params, validation metrics, model "
        "files, lineage) in the shared SQLite database; Optuna's ask/tell stays in the calling "
        "process. On this 2-core machine the second CPU is shared with the coordinator (sampling, "
        "the parent run) and the database writes of both workers, which is what keeps the ratio "
        "under 2.",
        "",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=4_000)
    parser.add_argument("--quick", action="store_true", help="8 trials, 1 round, no docs")
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    trials, rounds = (8, 1) if args.quick else (args.trials, args.rounds)
    walls: dict[int, list[float]] = {cpus: [] for cpus in CPUS}
    load_before = os.getloadavg()[0]
    for round_ in range(rounds):
        order = CPUS if round_ % 2 == 0 else tuple(reversed(CPUS))
        for cpus in order:
            wall = run_arm(cpus, trials, args.rows)
            walls[cpus].append(wall)
            print(f"round {round_ + 1}: {cpus} CPU(s) {wall:.1f} s", file=sys.stderr)
    wall_med = {str(c): statistics.median(w) for c, w in walls.items()}
    per_min = {c: trials / w * 60 for c, w in wall_med.items()}
    report = {
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "versions": versions(),
        "trials": trials,
        "rounds": rounds,
        "rows": args.rows,
        "walls": {str(c): w for c, w in walls.items()},
        "wall_s": wall_med,
        "trials_per_min": per_min,
        "speedup": per_min["2"] / per_min["1"],
        "load": [load_before, os.getloadavg()[0]],
    }
    print(render(report))
    if not args.quick:
        DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
        DOCS_JSON.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_section(DOCS_MD, BEGIN, END, render(report))


if __name__ == "__main__":
    main()
