"""Pipeline benchmark: civicml vs Prefect 3 vs ZenML on the same 5-step pipeline, one run.

Run from the repository root with the civicml virtualenv::

    .venv/bin/python benchmarks/pipelines.py     # alternatives from benchmarks/.venv-pipelines
    .venv/bin/python benchmarks/pipelines.py --alt-python /path/to/venv/bin/python  # elsewhere
    .venv/bin/python benchmarks/pipelines.py --quick               # smoke run, no docs

The pipeline (``benchmarks/_pipelines_work.py``): ``load`` a CSV → ``clean`` → ``featurize`` →
``train`` a scikit-learn logistic regression → ``score`` it on a held-out split. The same five
functions, on the same file, are wrapped as civicml ``@cm.step``s, Prefect ``@task``s (cache
policy ``INPUTS + TASK_SOURCE``, results persisted) and ZenML ``@step``s (cache on, the default
local stack), and also called directly ("bare": the floor). Each system runs in its own process
and measures, interleaved, ``--reps`` times after an untimed warm-up:

- **bare**: the five functions called in a row;
- **cold**: the pipeline with a new ``nonce`` parameter (passed to every step), so every step's
  cache key is new and every step runs, and its outputs are stored;
- **cached**: the same pipeline and nonce again: every step must be a cache hit (checked).

Medians are reported; a cached step's cost is the cached pipeline's wall time ÷ 5 (the fixed
costs of starting and finishing a run included); a cold pipeline's overhead is
(cold - bare) ÷ bare, with bare measured in the same process.

Prefect and ZenML live in another virtualenv (``--alt-python``, or ``CIVICML_BENCH_PYTHON``, or
``benchmarks/.venv-pipelines`` when it exists); when either is not importable there it is
skipped with a note. Prefect runs against its ephemeral local API server (SQLite under a
temporary ``PREFECT_HOME``, 127.0.0.1 only), ZenML against its local SQLite store (temporary
``ZENML_CONFIG_PATH``); telemetry is off for both. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import civicml_source, write_section

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
WORKDIR = BENCH / ".work"
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_JSON = ROOT / "docs" / "benchmarks" / "pipelines.json"
BEGIN, END = "<!-- pipelines:begin -->", "<!-- pipelines:end -->"
DEFAULT_ALT_VENV = BENCH / ".venv-pipelines"
ALT_INSTALL = (
    "python3 -m venv benchmarks/.venv-pipelines && benchmarks/.venv-pipelines/bin/pip install "
    "prefect 'zenml[local]' scikit-learn pandas pyarrow"
)
SYSTEMS = ("civicml", "prefect", "zenml")
NAMES = {"civicml": "civicml", "prefect": "Prefect", "zenml": "ZenML"}
GOAL_CACHED_STEP_MS = 5.0
GOAL_COLD_OVERHEAD = 0.10
WORKER_TIMEOUT_S = 1800
X = "\N{MULTIPLICATION SIGN}"

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_LOGGING_VERBOSITY": "WARN",
    "ZENML_ENABLE_REPO_INIT_WARNINGS": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}


# --------------------------------------------------------------------------------------
# Workers: one per system, in its own process
# --------------------------------------------------------------------------------------


def _civicml_runner(home: Path) -> tuple[Any, dict[str, str]]:
    import _pipelines_work as w

    import civicml as cm
    from civicml.pipelines.values import StoredValue, load_value

    steps = {name: cm.step(getattr(w, name)) for name in w.STEPS}

    @cm.pipeline(name="bench-5step")
    def five(path: str = "", nonce: str = "") -> None:
        raw = steps["load"](path, nonce)
        feats = steps["featurize"](steps["clean"](raw, nonce), nonce)
        steps["score"](feats, steps["train"](feats, nonce), nonce)

    ml = cm.connect(home=home, user="bench")
    ml.project("bench")
    artifacts = ml.pipelines._backend.ctx.artifacts

    def run(path: str, nonce: str) -> Any:
        return ml.pipelines.run(five, project="bench", params={"path": path, "nonce": nonce})

    def finish(execution: Any) -> tuple[dict[str, Any], list[str]]:
        states = [execution.step(name).status.value for name in w.STEPS]
        if execution.status.value != "succeeded":
            errors = {s.step: s.error for s in execution.steps if s.error}
            raise RuntimeError(f"civicml execution {execution.id} {execution.status}: {errors}")
        ref = StoredValue.from_dict(execution.step("score").outputs["output"])
        return load_value(artifacts, ref), states

    return run, finish, {"civicml": cm.__version__}


def _prefect_runner(home: Path) -> tuple[Any, dict[str, str]]:
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "prefect" / "storage")
    os.environ.pop("PREFECT_API_URL", None)
    import _pipelines_work as w
    import prefect
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    policy = INPUTS + TASK_SOURCE  # the default adds RUN_ID: no reuse across flow runs
    tasks = {n: task(getattr(w, n), cache_policy=policy, persist_result=True) for n in w.STEPS}

    @flow(name="bench-5step", persist_result=True)
    def five(path: str, nonce: str) -> tuple[dict[str, Any], list[str]]:
        states = []

        def call(name: str, *args: Any) -> Any:
            state = tasks[name](*args, return_state=True)
            states.append(state)
            return state.result()

        raw = call("load", path, nonce)
        feats = call("featurize", call("clean", raw, nonce), nonce)
        result = call("score", feats, call("train", feats, nonce), nonce)
        return result, ["cached" if s.name == "Cached" else s.name.lower() for s in states]

    def run(path: str, nonce: str) -> tuple[dict[str, Any], list[str]]:
        # Heartbeats off: with them on (the default), ending a flow run joins the heartbeat
        # thread, which sleeps in 1 s slices: up to ~1 s per flow run, whatever the flow does.
        # Off is the fairer figure for Prefect; `defaults` measures the default once.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            result, states = five(path, nonce)
        return result, states

    def defaults(path: str, nonce: str) -> tuple[dict[str, Any], list[str]]:
        result, states = five(path, nonce)
        return result, states

    run.defaults = defaults  # type: ignore[attr-defined]
    return run, lambda done: done, {"prefect": prefect.__version__}


def _zenml_runner(home: Path) -> tuple[Any, dict[str, str]]:
    os.environ["ZENML_CONFIG_PATH"] = str(home / "zenml")
    import _pipelines_work as w
    import _pipelines_zenml as z  # module-level @step wrappers: ZenML loads steps by source
    import zenml
    from zenml import pipeline
    from zenml.enums import ExecutionStatus

    steps = {name: getattr(z, name) for name in w.STEPS}

    @pipeline(name="bench_5step", enable_cache=True)
    def five(path: str, nonce: str) -> None:
        raw = steps["load"](path, nonce)
        feats = steps["featurize"](steps["clean"](raw, nonce), nonce)
        steps["score"](feats, steps["train"](feats, nonce), nonce)

    def run(path: str, nonce: str) -> Any:
        return five(path=path, nonce=nonce)

    def finish(response: Any) -> tuple[dict[str, Any], list[str]]:
        if response.status != ExecutionStatus.COMPLETED:
            raise RuntimeError(f"ZenML run {response.id} ended {response.status}")
        states = [
            "cached"
            if response.steps[n].status == ExecutionStatus.CACHED
            else response.steps[n].status.value
            for n in w.STEPS
        ]
        return response.steps["score"].output.load(), states

    return run, finish, {"zenml": zenml.__version__}


RUNNERS = {"civicml": _civicml_runner, "prefect": _prefect_runner, "zenml": _zenml_runner}


def worker(args: argparse.Namespace) -> None:
    """Measure one system; write the figures as JSON to ``args.out``."""
    sys.path.insert(0, str(BENCH))
    import _pipelines_work as w
    import numpy
    import pandas
    import sklearn

    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    # run(path, nonce) is what is timed; finish(what run returned) reads the result and each
    # step's state (cached or not) afterwards, off the clock.
    run, finish, versions = RUNNERS[args.worker](home)
    versions |= {
        "python": platform.python_version(),
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
    }
    path = str(Path(args.data).resolve())
    expected = w.bare(path, "warm")
    # Warm-up, untimed: imports, first connections (Prefect starts its ephemeral server here,
    # ZenML its local store), the pipeline registered once.
    started = time.perf_counter()
    finish(run(path, "warm"))
    finish(run(path, "warm"))
    warmup_s = time.perf_counter() - started
    bare_s, cold_s, cached_s = [], [], []
    cold_states, cached_states = [], []
    for rep in range(args.reps):
        nonce = f"{args.nonce}-{rep}"
        t0 = time.perf_counter()
        got_bare = w.bare(path, nonce)
        t1 = time.perf_counter()
        done_cold = run(path, nonce)
        t2 = time.perf_counter()
        got_cold, states_cold = finish(done_cold)
        t2b = time.perf_counter()
        done_cached = run(path, nonce)
        t3 = time.perf_counter()
        got_cached, states_cached = finish(done_cached)
        bare_s.append(t1 - t0)
        cold_s.append(t2 - t1)
        cached_s.append(t3 - t2b)
        cold_states.append(states_cold)
        cached_states.append(states_cached)
        for label, got in (("bare", got_bare), ("cold", got_cold), ("cached", got_cached)):
            if got != expected:
                raise RuntimeError(f"{args.worker} {label} run gave {got}, expected {expected}")
        print(
            f"  {args.worker} rep {rep + 1}/{args.reps}: bare {t1 - t0:.3f} s, cold "
            f"{t2 - t1:.3f} s, cached {t3 - t2b:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    extra: dict[str, Any] = {}
    if hasattr(run, "defaults"):  # Prefect with its default settings (heartbeats on)
        t0 = time.perf_counter()
        run.defaults(path, f"{args.nonce}-defaults")
        t1 = time.perf_counter()
        _, states = run.defaults(path, f"{args.nonce}-defaults")
        t2 = time.perf_counter()
        extra["defaults_cold_s"], extra["defaults_cached_s"] = t1 - t0, t2 - t1
        extra["defaults_cached_states"] = states
    cold_ok = all(all(x != "cached" for x in s) for s in cold_states)
    cached_ok = all(all(x == "cached" for x in s) for s in cached_states)
    Path(args.out).write_text(
        json.dumps(
            {
                "system": args.worker,
                "versions": versions,
                "bare_s": bare_s,
                "cold_s": cold_s,
                "cached_s": cached_s,
                "warmup_s": warmup_s,
                "cold_states": cold_states,
                "cached_states": cached_states,
                "every_cold_step_ran": cold_ok,
                "every_cached_step_hit": cached_ok,
                "score": expected,
                "extra": extra,
            },
            indent=2,
        )
    )


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def alt_python(given: str | None) -> Path | None:
    for candidate in (given, os.environ.get("CIVICML_BENCH_PYTHON")):
        if candidate:
            return Path(candidate)
    default = DEFAULT_ALT_VENV / "bin" / "python"
    return default if default.exists() else None


def probe(python: Path, module: str) -> str | None:
    """The module's version in that interpreter, or ``None`` when it cannot be imported."""
    code = f"import {module}; print({module}.__version__)"
    try:
        res = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=300, check=False
        )
    except OSError:
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def run_worker(python: Path, system: str, data: Path, work: Path, reps: int) -> dict[str, Any]:
    out = work / f"{system}.json"
    home = work / f"home-{system}"
    log = work / f"{system}.log"
    env = {**os.environ, **QUIET_ENV}
    env.pop("CIVICML_URL", None)
    cmd = [
        str(python),
        str(Path(__file__).resolve()),
        "--worker",
        system,
        "--data",
        str(data),
        "--home",
        str(home),
        "--out",
        str(out),
        "--reps",
        str(reps),
        "--nonce",
        f"{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}",
    ]
    print(f"{NAMES[system]}: {reps} repetition(s) ...", file=sys.stderr, flush=True)
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run(
            cmd,
            cwd=work,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    text = log.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if line.startswith(f"  {system} rep"):
            print(line, file=sys.stderr)
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise RuntimeError(f"{system} worker failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())


def summarise(result: dict[str, Any]) -> dict[str, float]:
    bare = statistics.median(result["bare_s"])
    cold = statistics.median(result["cold_s"])
    cached = statistics.median(result["cached_s"])
    overheads = [c - b for c, b in zip(result["cold_s"], result["bare_s"], strict=True)]
    return {
        "bare_s": bare,
        "cold_s": cold,
        "cached_s": cached,
        "cached_step_ms": cached / 5 * 1000,
        "cold_overhead_s": statistics.median(overheads),
        "cold_overhead_ratio": statistics.median(
            (c - b) / b for c, b in zip(result["cold_s"], result["bare_s"], strict=True)
        ),
        "cold_overhead_step_ms": statistics.median(overheads) / 5 * 1000,
    }


def render(report: dict[str, Any]) -> str:
    results, summary, skipped = report["results"], report["summary"], report["skipped"]
    civ = summary.get("civicml")
    load0, load1 = report["load_start"], report["load_end"]
    versions = []
    for system in SYSTEMS:
        if system in results:
            v = results[system]["versions"]
            where = "" if system == "civicml" else " (own virtualenv)"
            versions.append(f"{NAMES[system]} {v[system]}{where}")
    first = next(iter(results.values()))["versions"]
    lines = [
        "## Pipelines: civicml vs Prefect and ZenML",
        "",
        "_Generated by `.venv/bin/python benchmarks/pipelines.py --alt-python …` — do not edit "
        "by hand; re-run the script. Raw figures: "
        "[`benchmarks/pipelines.json`](benchmarks/pipelines.json)._",
        "",
        f"- **Date:** {report['date']}",
        f"- **Machine:** {report['cores']} cores, {platform.machine()}, Linux "
        f"{platform.release()}; load average (1/5/15 min) {load0[0]:.2f} / {load0[1]:.2f} / "
        f"{load0[2]:.2f} at start, {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at end",
        f"- **Versions:** {', '.join(versions)} (civicml source {report['source']}); Python "
        f"{first['python']}, pandas {first['pandas']}, scikit-learn {first['scikit-learn']} "
        "in both virtualenvs",
        f"- **Pipeline:** `load` ({report['rows']:,}-row CSV, {FEATURES_NOTE}) → `clean` → "
        "`featurize` → `train` (logistic regression) → `score` (held-out 20 %); "
        f"{report['reps']} repetition(s) per system after a warm-up, median reported.",
        "",
        "| System | Bare functions | Cold pipeline | Cold overhead | Overhead per step | "
        "Cached pipeline | Per cached step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system in SYSTEMS:
        if system not in summary:
            continue
        s = summary[system]
        lines.append(
            f"| {NAMES[system]} | {s['bare_s'] * 1000:.0f} ms | {s['cold_s'] * 1000:.0f} ms | "
            f"{s['cold_overhead_ratio'] * 100:+.0f} % | {s['cold_overhead_step_ms']:.0f} ms | "
            f"{s['cached_s'] * 1000:.0f} ms | {s['cached_step_ms']:.1f} ms |"
        )
    for system, why in skipped.items():
        lines.append(f"| {NAMES[system]} | skipped: {why} | | | | | |")
    lines.append("")
    extra = results.get("prefect", {}).get("extra") or {}
    if "defaults_cached_s" in extra:
        lines.append(
            "Prefect is measured with flow-run heartbeats off "
            "(`PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None`): with its defaults, ending each flow run "
            "waits for the heartbeat thread, which sleeps in 1 s slices — measured once in this "
            f"run, a cold pipeline took {extra['defaults_cold_s'] * 1000:.0f} ms and a cached "
            f"one {extra['defaults_cached_s'] * 1000:.0f} ms "
            f"({extra['defaults_cached_s'] / 5 * 1000:.0f} ms per cached step)."
        )
        lines.append("")
    if civ is not None:
        others = [s for s in ("prefect", "zenml") if s in summary]
        if others:
            lines.append(
                "civicml's cached step is "
                + ", ".join(
                    f"{summary[o]['cached_step_ms'] / civ['cached_step_ms']:.1f}{X} faster than "
                    f"{NAMES[o]}'s"
                    for o in others
                )
                + "; its cold pipeline is "
                + ", ".join(
                    f"{summary[o]['cold_s'] / civ['cold_s']:.2f}{X} as fast as {NAMES[o]}'s"
                    for o in others
                )
                + "."
            )
            lines.append("")
        lines += [
            "### Goals (issue 10)",
            "",
            "| Goal | Measured | Status |",
            "|---|---:|---|",
            f"| A cached step ≤ {GOAL_CACHED_STEP_MS:.0f} ms | {civ['cached_step_ms']:.1f} ms | "
            f"{'✅ met' if civ['cached_step_ms'] <= GOAL_CACHED_STEP_MS else '❌ not met'} |",
            f"| A cold pipeline's overhead over the bare calls ≤ {GOAL_COLD_OVERHEAD:.0%} | "
            f"{civ['cold_overhead_ratio']:.0%} ({civ['cold_overhead_step_ms']:.0f} ms per step) | "
            f"{'✅ met' if civ['cold_overhead_ratio'] <= GOAL_COLD_OVERHEAD else '❌ not met'} |",
            "",
        ]
    lines += [
        "### What is measured",
        "",
        "- The same five functions (`benchmarks/_pipelines_work.py`) on the same CSV in every "
        "system; values between steps are DataFrames and JSON dicts (the model as its "
        "coefficients), so no system pickles a model. Each run's score is checked against the "
        "bare functions' result.",
        "- **Bare:** the five functions called in a row in the same process — the floor.",
        "- **Cold:** a new `nonce` parameter, passed to every step, so every cache key is new and "
        "every step runs and stores its outputs (checked: no step is a cache hit). "
        "**Overhead** = (cold - bare) ÷ bare, per repetition, median; per step = ÷ 5.",
        "- **Cached:** the same pipeline and nonce again; every step must be a cache hit "
        "(checked). **Per cached step** = the cached pipeline's wall time ÷ 5, so it includes "
        "the fixed cost of starting and ending an execution.",
        "- **civicml:** `@cm.step` / `@cm.pipeline`, `ml.pipelines.run` on the embedded platform "
        "(SQLite, local artifact store, encrypted at rest); each executed step is a tracking "
        "run with lineage and its outputs stored content-addressed (Arrow IPC / canonical JSON, "
        "fsynced); a DataFrame is handed to the next step once hashed and stored "
        "meanwhile, its step recorded succeeded only once it is durable.",
        "- **Prefect:** `@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)` in a "
        "`@flow` (Prefect's default policy includes the flow run id, so nothing would be reused "
        "across runs); its ephemeral local API server (SQLite in a temporary `PREFECT_HOME`) is "
        "started during the warm-up; console logging at WARNING.",
        "- **ZenML:** `@step` / `@pipeline(enable_cache=True)` on the default local stack "
        "(local orchestrator, local artifact store, SQLite store in a temporary "
        "`ZENML_CONFIG_PATH`); logging verbosity WARN, analytics off.",
        "- Each system runs in its own process, one after the other, the three measurements "
        "interleaved per repetition; the cores are shared with whatever else runs, so compare "
        "figures from the same run only.",
        "",
    ]
    return "\n".join(lines) + "\n"


FEATURES_NOTE = "20 numeric columns with 2 % gaps, 1 categorical, 1 % duplicate rows"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the CSV (50,000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per system (5)")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 2 reps, no docs")
    parser.add_argument(
        "--alt-python",
        help="interpreter with Prefect and ZenML (default: $CIVICML_BENCH_PYTHON, else "
        "benchmarks/.venv-pipelines/bin/python when it exists)",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--write-docs", action="store_true", help="write docs even if partial")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # worker mode (internal)
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--nonce", default="n", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows, reps = (10_000, 2) if args.quick else (args.rows, args.reps)
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    sys.path.insert(0, str(BENCH))
    import _pipelines_work as w

    if probe(Path(sys.executable), "civicml") is None:
        sys.exit(
            f"civicml is not importable from {sys.executable}: run this script with the civicml "
            "virtualenv (.venv/bin/python benchmarks/pipelines.py) after `pip install -e .`."
        )
    alt = alt_python(args.alt_python)
    pythons: dict[str, Path] = {"civicml": Path(sys.executable)}
    skipped: dict[str, str] = {}
    for system in ("prefect", "zenml"):
        if system not in wanted:
            continue
        if alt is None:
            skipped[system] = "no --alt-python virtualenv"
        elif probe(alt, system) is None:
            skipped[system] = f"not importable from {alt}"
        else:
            pythons[system] = alt
    for system, why in skipped.items():
        print(
            f"Skipping {NAMES[system]} ({why}). Install it in its own virtualenv: {ALT_INSTALL}",
            file=sys.stderr,
        )
    WORKDIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pipelines-", dir=WORKDIR))
    load_start = os.getloadavg()
    ok = False
    try:
        data = work / "applications.csv"
        w.make_csv(data, rows)
        results = {
            system: run_worker(pythons[system], system, data, work, reps)
            for system in SYSTEMS
            if system in wanted and system in pythons
        }
        for system, result in results.items():
            if not (result["every_cold_step_ran"] and result["every_cached_step_hit"]):
                raise RuntimeError(
                    f"{system}: cold states {result['cold_states']}, cached states "
                    f"{result['cached_states']}"
                )
        report = {
            "date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "cores": os.cpu_count(),
            "rows": rows,
            "reps": reps,
            "source": civicml_source(ROOT),
            "load_start": load_start,
            "load_end": os.getloadavg(),
            "results": results,
            "summary": {s: summarise(r) for s, r in results.items()},
            "skipped": skipped,
        }
        section = render(report)
        print(section)
        full = not args.quick and not skipped and set(wanted) == set(SYSTEMS)
        if full or args.write_docs:
            DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
            DOCS_JSON.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            write_section(DOCS_MD, BEGIN, END, section)
            print(f"Wrote the pipelines section of {DOCS_MD}", file=sys.stderr)
        else:
            out = WORKDIR / f"pipelines-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
            out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            print(f"Partial or quick run: figures in {out}; docs left alone", file=sys.stderr)
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"Work directory kept: {work}", file=sys.stderr)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
