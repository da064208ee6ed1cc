"""Tracking benchmark: civicml vs MLflow 3.x vs raw SQLite, embedded and through a server.

Run from the repository root with the civicml virtualenv::

    .venv/bin/python benchmarks/tracking.py            # full run, rewrites docs/benchmarks.md
    .venv/bin/python benchmarks/tracking.py --quick    # smoke run (small sizes, no docs)
    .venv/bin/python benchmarks/tracking.py --search-curve  # search at 1k/10k/50k runs

Workloads (each repeated ``--reps`` times, medians reported):

1. single-call metric logging: ``--n`` (10,000) ``log_metric`` calls on one run, then made
   durable (civicml: ``run.flush()``; MLflow commits every call). civicml is measured both
   buffered (its default) and with ``synchronous=True`` (durable before each call returns).
2. batched metric logging: the same number of values, 1,000 per call
   (civicml ``run.log_metrics``, MLflow ``MlflowClient.log_batch``, floor ``executemany``).
3. run creation: ``--runs`` (200) runs, each with 10 params and 10 metrics, ended.
4. search: ``metrics.m0 > 0.5`` ordered by ``metrics.m1 DESC`` over those runs,
   ``--searches`` (20) times; median latency.

MLflow runs in its own virtualenv (``benchmarks/.venv-mlflow``, created on first use) in a
subprocess; civicml and the raw-SQLite floor run in subprocesses of this interpreter.
Servers (``mlflow server`` / ``civicml server``) listen on 127.0.0.1 only and all data
lives in a temporary directory under ``benchmarks/.work`` that is removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import civicml_source

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
WORKER = BENCH / "_worker.py"
WORKDIR = BENCH / ".work"
MLFLOW_VENV = BENCH / ".venv-mlflow"
MLFLOW_REQUIREMENT = "mlflow>=3,<4"
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_JSON = ROOT / "docs" / "benchmarks" / "tracking.json"
BEGIN = "<!-- tracking:begin -->"
END = "<!-- tracking:end -->"

SERVER_START_TIMEOUT_S = 180.0
WORKER_TIMEOUT_S = 1800.0
PIP_TIMEOUT_S = 1800.0

# Goals from the issue.
GOAL_SINGLE_VS_MLFLOW = 50.0  # civicml single-call metric logging >= 50x MLflow
GOAL_WITHIN_FLOOR = 3.0  # civicml within 3x of the raw-SQLite floor
X = "\N{MULTIPLICATION SIGN}"

QUIET_ENV = {
    # No telemetry, no network: everything stays on loopback.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # Measure MLflow single-call logging as it behaves by default (synchronous).
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    # The server's background job runner (GenAI jobs) has nothing to do with tracking;
    # on a 2-core box its extra processes would only add noise.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}


class BenchmarkError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------
# Environment: MLflow venv, civicml check, machine info
# --------------------------------------------------------------------------------------


def mlflow_python() -> Path:
    return MLFLOW_VENV / "bin" / "python"


def ensure_mlflow_venv() -> str:
    """Create ``benchmarks/.venv-mlflow`` with ``mlflow>=3,<4`` if needed; return version."""
    py = mlflow_python()
    probe = [str(py), "-c", "import mlflow; print(mlflow.__version__)"]
    if py.exists():
        res = subprocess.run(probe, capture_output=True, text=True, timeout=300, check=False)
        if res.returncode == 0:
            return res.stdout.strip()
        print(f"MLflow venv at {MLFLOW_VENV} is broken; reinstalling mlflow", file=sys.stderr)
    else:
        print(f"Creating MLflow virtualenv at {MLFLOW_VENV} ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(MLFLOW_VENV)], check=True, timeout=300)
    print(f"Installing '{MLFLOW_REQUIREMENT}' (first run only) ...", file=sys.stderr)
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", MLFLOW_REQUIREMENT],
        check=True,
        timeout=PIP_TIMEOUT_S,
    )
    res = subprocess.run(probe, capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        raise BenchmarkError(f"mlflow is not importable in {MLFLOW_VENV}:\n{res.stderr}")
    return res.stdout.strip()


def check_civicml() -> None:
    """Fail early, with a clear message, when civicml is not importable here."""
    code = "import civicml; civicml.connect; print(getattr(civicml, '__version__', '?'))"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchmarkError(
            f"civicml is not usable from {sys.executable}: {last}\n"
            "Run this script with the civicml virtualenv (`.venv/bin/python "
            "benchmarks/tracking.py`) after `pip install -e .`, or pass --skip-civicml."
        )


def civicml_server_cmd(host: str, port: int) -> list[str]:
    script = Path(sys.executable).parent / "civicml"
    if script.exists():
        return [str(script), "server", "--host", host, "--port", str(port)]
    return [sys.executable, "-m", "civicml.cli.main", "server", "--host", host, "--port", str(port)]


def _fs_type(path: Path) -> str:
    best, fstype = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


def machine_info(workdir: Path) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "data_dir_filesystem": _fs_type(workdir.resolve()),
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------
# Processes: servers and workers
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def server(
    name: str, *, cmd: list[str], env: dict[str, str], health: str, log: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group, wait for ``health``, stop it afterwards;
    yields its process (``cpu_seconds(proc.pid)`` reads the CPU it has used)."""
    print(f"Starting {name}: {' '.join(cmd)}", file=sys.stderr)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while not _healthy(health):
                if proc.poll() is not None:
                    raise BenchmarkError(
                        f"{name} exited with {proc.returncode} before becoming healthy:\n"
                        + _tail(log)
                    )
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"{name} not healthy at {health} after {SERVER_START_TIMEOUT_S:.0f}s:\n"
                        + _tail(log)
                    )
                time.sleep(0.25)
            yield proc
        finally:
            _stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``): a measure
    of a server's work that other tenants of a shared machine do not inflate the way they
    inflate wall-clock throughput."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_tree(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by process ``pid`` and by its children (a
    server's capture spool process, shadow and sandbox workers: work done for its requests)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.update(int(c) for c in task.read_text().split())
        except OSError:
            continue
    return used(pid), sum(used(c) for c in children)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    # Workers the server forked share its process group; make sure none is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_worker(
    python: Path | str,
    system: str,
    mode: str,
    *,
    target: str,
    args: argparse.Namespace,
    env: dict[str, str],
    work: Path,
) -> dict[str, Any]:
    out = work / f"{system}-{mode}.json"
    log = work / f"{system}-{mode}.log"
    cmd = [
        str(python), str(WORKER),
        "--system", system, "--mode", mode, "--target", target, "--out", str(out),
        "--n", str(args.n), "--runs", str(args.runs), "--searches", str(args.searches),
        "--reps", str(args.reps), "--single-budget", str(args.single_budget),
    ]  # fmt: skip
    print(f"Running {system} ({mode}) ...", file=sys.stderr)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            cmd, env=env, cwd=work, stdout=fh, stderr=subprocess.PIPE, text=True
        )

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                fh.write(line)
                if line.startswith(f"[{system}/"):
                    print("  " + line.rstrip(), file=sys.stderr, flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchmarkError(f"{system} ({mode}) worker timed out") from None
        reader.join(timeout=10)
    if not out.exists():
        raise BenchmarkError(
            f"{system} ({mode}) worker exited {rc} without results:\n" + _tail(log)
        )
    result: dict[str, Any] = json.loads(out.read_text())
    if "error" in result:
        raise BenchmarkError(f"{system} ({mode}): {result['error']}\n(log: {_tail(log, 15)})")
    return result


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    env.update(QUIET_ENV)
    return env


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    env = base_env()

    common = {"args": args, "env": env, "work": work}
    results["floor/embedded"] = run_worker(
        sys.executable, "floor", "embedded", target=str(work / "floor"), **common
    )

    embedded, remote = "embedded" in args.modes, "remote" in args.modes
    if not args.skip_mlflow:
        mpy = mlflow_python()
        if embedded:
            (work / "mlflow-embedded").mkdir()
            uri = f"sqlite:///{work / 'mlflow-embedded' / 'mlflow.db'}"
            results["mlflow/embedded"] = run_worker(mpy, "mlflow", "embedded", target=uri, **common)
        if remote:
            srv = work / "mlflow-server"
            srv.mkdir()
            port = free_port()
            cmd = [
                str(MLFLOW_VENV / "bin" / "mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{srv / 'mlflow.db'}",
                "--default-artifact-root", str(srv / "artifacts"),
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            ]  # fmt: skip
            with server(
                "mlflow server",
                cmd=cmd,
                env=env,
                health=f"http://127.0.0.1:{port}/health",
                log=work / "mlflow-server.log",
                cwd=srv,
            ):
                results["mlflow/remote"] = run_worker(
                    mpy, "mlflow", "remote", target=f"http://127.0.0.1:{port}", **common
                )

    if not args.skip_civicml:
        if embedded:
            home = work / "civicml-embedded"
            home.mkdir()
            results["civicml/embedded"] = run_worker(
                sys.executable, "civicml", "embedded", target=str(home), **common
            )
        if remote:
            srv_home = work / "civicml-server"
            srv_home.mkdir()
            port = free_port()
            senv = dict(env, CIVICML_HOME=str(srv_home))
            with server(
                "civicml server",
                cmd=civicml_server_cmd("127.0.0.1", port),
                env=senv,
                health=f"http://127.0.0.1:{port}/api/v1/health",
                log=work / "civicml-server.log",
                cwd=srv_home,
            ):
                results["civicml/remote"] = run_worker(
                    sys.executable,
                    "civicml",
                    "remote",
                    target=f"http://127.0.0.1:{port}",
                    **common,
                )
    return results


# --------------------------------------------------------------------------------------
# Security overhead (--security): civicml server, auth none vs token
# --------------------------------------------------------------------------------------

SEC_BEGIN = "<!-- security-tracking:begin -->"
SEC_END = "<!-- security-tracking:end -->"
SEC_JSON = ROOT / "docs" / "benchmarks" / "security-tracking.json"
SEC_WORKLOADS = (
    ("single", "Single-call log_metric, buffered (then flush)"),
    ("single_sync", "Single-call log_metric(synchronous=True)"),
    ("batch", "Batched metrics (1,000 per call)"),
    ("runs", "Run creation (10 params + 10 metrics, ended)"),
    ("search", "Search"),
)
SEC_ARMS = ("none", "token")


def run_security(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """civicml remote, ``auth = "none"`` vs ``"token"``, interleaved over ``--rounds``."""
    import civicml as cm

    home = work / "civicml-server"
    home.mkdir()
    with cm.connect(home=home) as ml:  # a personal token of the home's default user
        secret = str(ml.tokens.create("tracking-bench", expires_in_days=1).secret)
    env = base_env()
    per_arm: dict[str, list[dict[str, Any]]] = {arm: [] for arm in SEC_ARMS}
    for rnd in range(args.rounds):
        order = SEC_ARMS if rnd % 2 == 0 else SEC_ARMS[::-1]
        for arm in order:
            port = free_port()
            senv = dict(env, CIVICML_HOME=str(home), CIVICML_AUTH=arm)
            wenv = dict(env, CIVICML_TOKEN=secret) if arm == "token" else env
            print(f"round {rnd + 1}/{args.rounds}: civicml server auth={arm}", file=sys.stderr)
            with server(
                f"civicml server (auth={arm})",
                cmd=civicml_server_cmd("127.0.0.1", port),
                env=senv,
                health=f"http://127.0.0.1:{port}/api/v1/health",
                log=work / f"civicml-server-{arm}-{rnd}.log",
                cwd=home,
            ) as proc:
                if arm == "token":  # really on: a request without the token is refused
                    try:
                        urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/api/v1/projects", timeout=10
                        ).close()
                    except urllib.error.HTTPError as err:
                        if err.code != 401:
                            raise BenchmarkError(f"expected 401, got {err.code}") from None
                    else:
                        raise BenchmarkError("auth=token server answered without a token")
                (work / "civicml-remote.json").unlink(missing_ok=True)
                cpu_before = cpu_seconds(proc.pid)
                res = run_worker(
                    sys.executable,
                    "civicml",
                    "remote",
                    target=f"http://127.0.0.1:{port}",
                    args=args,
                    env=wenv,
                    work=work,
                )
                res["server_cpu_s"] = round(cpu_seconds(proc.pid) - cpu_before, 3)
            per_arm[arm].append(res)
    figures: dict[str, dict[str, Any]] = {}
    for arm, results in per_arm.items():
        merged = {"civicml/remote": {"reps": [r for res in results for r in res["reps"]]}}
        figures[arm] = {
            w: (
                _latency(merged, "civicml/remote")
                if w == "search"
                else _rate(merged, "civicml/remote", w)
            )
            for w, _ in SEC_WORKLOADS
        }
    cost = {
        w: round(1.0 - figures["token"][w]["ops_per_s"] / figures["none"][w]["ops_per_s"], 4)
        for w, _ in SEC_WORKLOADS
        if figures["none"][w] and figures["token"][w]
    }
    per_round: dict[str, list[float]] = {}
    for w, _ in SEC_WORKLOADS:
        pair = []
        for none_res, token_res in zip(per_arm["none"], per_arm["token"], strict=True):
            a = {"civicml/remote": none_res}
            b = {"civicml/remote": token_res}
            fa, fb = (
                (_latency(a, "civicml/remote"), _latency(b, "civicml/remote"))
                if w == "search"
                else (_rate(a, "civicml/remote", w), _rate(b, "civicml/remote", w))
            )
            if fa and fb:
                pair.append(round(1.0 - fb["ops_per_s"] / fa["ops_per_s"], 4))
        per_round[w] = pair
    versions: dict[str, str] = {}
    for res in per_arm["none"]:
        versions.update(res.get("versions", {}))
    server_cpu = {
        arm: round(statistics.median(r["server_cpu_s"] for r in results), 3)
        for arm, results in per_arm.items()
    }
    return {
        "figures": figures,
        "overhead": cost,
        "per_round": per_round,
        "versions": versions,
        "server_cpu_s": server_cpu,
        "server_cpu_overhead": round(server_cpu["token"] / server_cpu["none"] - 1, 4),
    }


def _fmt_spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{min(values) * 100:+.1f} % … {max(values) * 100:+.1f} %"


def render_security(report: dict[str, Any]) -> str:
    sec, p, m = report["security"], report["params"], report["machine"]
    lines = [
        "### Tracking",
        "",
        f"- **Date:** {report['date']}; civicml source {report['versions']['civicml_source']}",
        f"- **Machine:** {m['cores']} cores, {m['cpu_model']}, {m['os']}, Python {m['python']}; "
        f"load average (1/5/15 min) {_fmt_load(m.get('load_average_1_5_15_at_start'))} at "
        f"start, {_fmt_load(m.get('load_average_1_5_15_at_end'))} at end",
        f"- **Sizes:** client → `civicml server` on 127.0.0.1 (SQLite), {p['n']:,} metric "
        f"values, {p['runs']} runs, {p['searches']} searches per round; {p['rounds']} rounds "
        f"{X} 2 arms (order alternating), {p['reps']} repetition(s) per round; medians over "
        "all repetitions.",
        "",
        '| Workload | `auth = "none"` | `auth = "token"` | Overhead | Per-round range '
        "| Goal ≤ 5 % |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for w, label in SEC_WORKLOADS:
        a, b = sec["figures"]["none"][w], sec["figures"]["token"][w]
        x = sec["overhead"].get(w)
        pr = sec.get("per_round", {}).get(w, [])
        met = "—" if x is None else ("✅ met" if x <= 0.05 else "❌ not met")
        lines.append(
            f"| {label} | {_fmt_rate(a, w == 'search')} | {_fmt_rate(b, w == 'search')} | "
            f"{'—' if x is None else f'{x * 100:+.1f} %'} | {_fmt_spread(pr)} | {met} |"
        )
    if "server_cpu_s" in sec:
        cpu, x = sec["server_cpu_s"], sec["server_cpu_overhead"]
        met = "✅ met" if x <= 0.05 else "❌ not met"
        lines += [
            "",
            '| Server CPU for the whole workload (median of the rounds) | `auth = "none"` | '
            '`auth = "token"` | Overhead | Goal ≤ 5 % |',
            "|---|---:|---:|---:|---|",
            f"| every workload above, one round | {cpu['none']:.2f} s | {cpu['token']:.2f} s | "
            f"{x * 100:+.1f} % | {met} |",
            "",
            "Server CPU is the `civicml server` process's user + system time (`/proc`) while "
            "the worker ran: the work the server did, which other tenants of this machine do "
            "not inflate the way they inflate throughput.",
        ]
    lines += [
        "",
        "- Both arms run the same worker (`benchmarks/_worker.py --system civicml --mode "
        "remote`) against a fresh `civicml server` on one home; the token arm sends a "
        "personal API token created for the run (`ml.tokens.create`, passed as "
        "`CIVICML_TOKEN`), and the script first checks that this server answers 401 "
        "without it. Search shows the median latency; overhead is in throughput terms "
        "and compares the medians; the per-round range is the same comparison within each "
        "round (its two arms run back to back), a measure of this machine's noise.",
        "- Encryption at rest is on (the default) in both arms and is not compared here: "
        "metrics, params and runs live in the database, not the artifact store, so these "
        "paths never encrypt or decrypt anything.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def _rate(results: dict[str, Any], key: str, workload: str) -> dict[str, Any] | None:
    res = results.get(key)
    if not res or not all(workload in r for r in res["reps"]):
        return None
    reps = [r[workload] for r in res["reps"]]
    rates = [r["n"] / r["seconds"] for r in reps]
    return {
        "ops_per_s": statistics.median(rates),
        "per_op_ms": 1000.0 / statistics.median(rates),
        "n": [r["n"] for r in reps],
        "rates": rates,
    }


def _latency(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    res = results.get(key)
    if not res or not all("search" in r for r in res["reps"]):
        return None
    per_rep = [statistics.median(r["search"]["latencies"]) for r in res["reps"]]
    med = statistics.median(per_rep)
    return {
        "median_ms": med * 1000.0,
        "ops_per_s": 1.0 / med,
        "per_rep_median_ms": [x * 1000.0 for x in per_rep],
        "hits": res["reps"][0]["search"]["hits"],
    }


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for mode in ("embedded", "remote"):
        s[mode] = {
            "floor_single": _rate(results, "floor/embedded", "single")
            if mode == "embedded"
            else None,
            "floor_batch": _rate(results, "floor/embedded", "batch")
            if mode == "embedded"
            else None,
            "mlflow_single": _rate(results, f"mlflow/{mode}", "single"),
            "mlflow_batch": _rate(results, f"mlflow/{mode}", "batch"),
            "mlflow_runs": _rate(results, f"mlflow/{mode}", "runs"),
            "mlflow_search": _latency(results, f"mlflow/{mode}"),
            "civicml_single": _rate(results, f"civicml/{mode}", "single"),
            "civicml_single_sync": _rate(results, f"civicml/{mode}", "single_sync"),
            "civicml_batch": _rate(results, f"civicml/{mode}", "batch"),
            "civicml_runs": _rate(results, f"civicml/{mode}", "runs"),
            "civicml_search": _latency(results, f"civicml/{mode}"),
        }
    return s


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """a / b in throughput (ops/s) terms: > 1 means ``a`` is faster."""
    if not a or not b:
        return None
    return float(a["ops_per_s"] / b["ops_per_s"])


def build_rows(s: dict[str, Any], n: int, n_runs: int) -> list[dict[str, Any]]:
    """One row per workload x mode: MLflow, civicml, ratio, floor, ratio."""
    rows = []
    for mode in ("embedded", "remote"):
        m = s[mode]
        emb = mode == "embedded"
        spec = [
            ("Single-call log_metric, default (buffered, then flush)", "single, buffered",
             m["mlflow_single"], m["civicml_single"], m["floor_batch"] if emb else None,
             "(b) batched commit"),
            ("Single-call log_metric(synchronous=True)", "single, synchronous",
             m["mlflow_single"], m["civicml_single_sync"], m["floor_single"] if emb else None,
             "(a) commit per value"),
            ("Batched logging, 1,000 values/call", "batch of 1,000",
             m["mlflow_batch"], m["civicml_batch"], m["floor_batch"] if emb else None,
             "(b) batched commit"),
            ("Run creation (10 params + 10 metrics, ended)", "run creation",
             m["mlflow_runs"], m["civicml_runs"], None, ""),
            ("Search (filter + order by)", "search",
             m["mlflow_search"], m["civicml_search"], None, ""),
        ]  # fmt: skip
        for label, short, mlf, civ, floor, floor_label in spec:
            rows.append(
                {
                    "workload": label,
                    "short": short,
                    "mode": mode,
                    "mlflow": mlf,
                    "civicml": civ,
                    "civicml_vs_mlflow": _ratio(civ, mlf),
                    "floor": floor,
                    "floor_label": floor_label if floor else "",
                    "civicml_vs_floor": _ratio(civ, floor),
                    "is_search": label.startswith("Search"),
                    "n_full": n_runs if short == "run creation" else n,
                }
            )
    return rows


def build_goals(s: dict[str, Any]) -> list[dict[str, Any]]:
    e, r = s["embedded"], s["remote"]

    def goal(text: str, value: float | None, ok: bool | None, shown: str) -> dict[str, Any]:
        return {"goal": text, "value": value, "met": ok, "shown": shown}

    def at_least(x: float | None, bound: float) -> bool | None:
        return None if x is None else x >= bound

    out = []
    for mode, m in (("embedded", e), ("remote", r)):
        x = _ratio(m["civicml_single"], m["mlflow_single"])
        out.append(
            goal(
                f"Single-call metric logging ≥ {GOAL_SINGLE_VS_MLFLOW:.0f}{X} MLflow, {mode} "
                "(civicml default = buffered + flush vs MLflow default = synchronous)",
                x,
                at_least(x, GOAL_SINGLE_VS_MLFLOW),
                _fmt_ratio(x),
            )
        )
    x = _ratio(e["civicml_single_sync"], e["floor_single"])
    out.append(
        goal(
            f"Within {GOAL_WITHIN_FLOOR:.0f}{X} of the raw-SQLite floor: single-call "
            "synchronous=True vs floor (a) commit per value, embedded",
            x,
            at_least(x, 1 / GOAL_WITHIN_FLOOR),
            _fmt_ratio(x),
        )
    )
    x = _ratio(e["civicml_single"], e["floor_batch"])
    out.append(
        goal(
            f"Within {GOAL_WITHIN_FLOOR:.0f}{X} of the raw-SQLite floor: single-call buffered "
            "vs floor (b) batched commit, embedded",
            x,
            at_least(x, 1 / GOAL_WITHIN_FLOOR),
            _fmt_ratio(x),
        )
    )
    for mode, m in (("embedded", e), ("remote", r)):
        x = _ratio(m["civicml_runs"], m["mlflow_runs"])
        out.append(
            goal(
                f"Run creation ≥ 20{X} MLflow (issue 10), {mode}",
                x,
                at_least(x, 20.0),
                _fmt_ratio(x),
            )
        )
    for mode, m in (("embedded", e), ("remote", r)):
        x = _ratio(m["civicml_search"], m["mlflow_search"])
        out.append(
            goal(f"Search ≥ 10{X} MLflow (issue 10), {mode}", x, at_least(x, 10.0), _fmt_ratio(x))
        )
    return out


def _fmt_rate(fig: dict[str, Any] | None, search: bool = False, n_full: int = 0) -> str:
    if not fig:
        return "—"
    if search:
        return f"{fig['median_ms']:.1f} ms ({fig['ops_per_s']:,.0f}/s)"
    text = f"{fig['ops_per_s']:,.0f}/s ({_fmt_ms(fig['per_op_ms'])})"
    if n_full and min(fig["n"]) < n_full:
        text += f" [n={min(fig['n']):,}]"
    return text


def _fmt_load(load: list[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in load) if load else "—"


def _fmt_ms(ms: float) -> str:
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms * 1000:.1f} µs"


def _fmt_ratio(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 10:
        return f"{x:,.0f}{X}"
    return f"{x:.2f}{X}"


def _fmt_met(ok: bool | None) -> str:
    return {True: "✅ met", False: "❌ not met", None: "— not measured"}[ok]


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    header = ["Workload", "Mode", "MLflow", "civicml", "civicml÷MLflow", "Floor", "civicml÷floor"]
    body = [
        [
            r["short"], r["mode"],
            _fmt_rate(r["mlflow"], r["is_search"], r["n_full"]),
            _fmt_rate(r["civicml"], r["is_search"], r["n_full"]),
            _fmt_ratio(r["civicml_vs_mlflow"]),
            (f"{r['floor_label']}: {_fmt_rate(r['floor'], n_full=r['n_full'])}"
             if r["floor"] else "—"),
            _fmt_ratio(r["civicml_vs_floor"]),
        ]
        for r in rows
    ]  # fmt: skip
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
        for line in [header, *body]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
        print()
        for g in goals:
            print(f"{_fmt_met(g['met'])}  {g['goal']}: {g['shown']}")
        return
    table = Table(title="Tracking benchmark (medians)")
    for h in header:
        table.add_column(h)
    for line in body:
        table.add_row(*line)
    console = Console(width=max(160, shutil.get_terminal_size().columns))
    console.print(table)
    for g in goals:
        console.print(f"{_fmt_met(g['met'])}  {g['goal']}: {g['shown']}")


def render_markdown(
    report: dict[str, Any], rows: list[dict[str, Any]], goals: list[dict[str, Any]]
) -> str:
    mach, ver, p = report["machine"], report["versions"], report["params"]
    n = p["n"]
    lines = [
        "## Tracking",
        "",
        "_Generated by `.venv/bin/python benchmarks/tracking.py` — do not edit by hand; "
        "re-run the script. Raw figures: [`benchmarks/tracking.json`](benchmarks/tracking.json)._",
        "",
        f"- **Date:** {report['date']}",
        f"- **Machine:** {mach['cores']} cores, {mach['cpu_model']}, "
        f"{mach['memory_gib']} GiB RAM, {mach['os']}; data on {mach['data_dir_filesystem']}; "
        f"load average (1/5/15 min) {_fmt_load(mach.get('load_average_1_5_15_at_start'))} "
        f"at start, {_fmt_load(mach.get('load_average_1_5_15_at_end'))} at end",
        f"- **Python:** {mach['python']}",
        f"- **Versions:** civicml {ver.get('civicml', '—')} "
        f"(source {ver.get('civicml_source', '—')}), MLflow {ver.get('mlflow', '—')} "
        f"(SQLAlchemy {ver.get('sqlalchemy', '—')}, own virtualenv), SQLite {ver['sqlite']}",
        f"- **Sizes:** {n:,} metric values (single-call and batched, batches of "
        f"{p['batch_size']:,}); {p['runs']} runs {X} 10 params {X} 10 metrics; "
        f"{p['searches']} searches; {p['reps']} repetition(s), median reported.",
        "",
        "| Workload | Mode | MLflow | civicml | civicml ÷ MLflow | Raw SQLite floor "
        "| civicml ÷ floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        floor = (
            f"{r['floor_label']}: {_fmt_rate(r['floor'], n_full=r['n_full'])}"
            if r["floor"]
            else "—"
        )
        mlf = _fmt_rate(r["mlflow"], r["is_search"], r["n_full"])
        civ = _fmt_rate(r["civicml"], r["is_search"], r["n_full"])
        lines.append(
            f"| {r['workload']} | {r['mode']} | {mlf} | {civ} | "
            f"{_fmt_ratio(r['civicml_vs_mlflow'])} | {floor} | "
            f"{_fmt_ratio(r['civicml_vs_floor'])} |"
        )
    lines += [
        "",
        "Throughput figures are operations per second (metric values, runs or searches) with "
        f"the time per operation in brackets; ratios are throughput ratios, so > 1{X} means "
        "civicml is faster. Search shows the median latency.",
        "",
        "### Goals",
        "",
        "| Goal | Measured | Status |",
        "|---|---:|---|",
    ]
    lines += [f"| {g['goal']} | {g['shown']} | {_fmt_met(g['met'])} |" for g in goals]
    lines += [
        "",
        "### What is measured",
        "",
        "- **Single-call, default (buffered):** `run.log_metric(k, v, step=i)` N times, then "
        "`run.flush()`; the timing includes the flush, so every value is durable when the "
        "clock stops. civicml group-commits buffered values in the background. This is "
        "what a civicml user gets by default.",
        "- **Single-call, `synchronous=True`:** every call is durable before it returns — "
        "the like-for-like durability comparison with MLflow (whose `mlflow.log_metric` is "
        "synchronous by default; `MLFLOW_ENABLE_ASYNC_LOGGING=false`) and with floor (a).",
        f"- **Time budget:** a single-call loop stops after {p['single_budget_s']:.0f} s per "
        "repetition, so the slow per-call paths (MLflow: one SQL transaction per value, one "
        "HTTP request per value through its server) do not dominate the run time. The rate "
        f"is then over the values logged in that time, marked `[n=…]` (fewer than {n:,}): "
        "the first values of a run, which if anything flatters the slower system.",
        "- **Batched:** 1,000 values per call (1,000 keys at one step): civicml "
        "`run.log_metrics({...}, step=s)` + final `run.flush()`; MLflow "
        "`MlflowClient().log_batch(run_id, metrics=[Metric…])`; floor `executemany` + "
        "COMMIT.",
        f"- **Run creation:** {p['runs']} runs, each `start_run` → 10 params "
        "(`log_params`) → 10 metrics (`log_metrics`) → end; a finished run is durable when "
        "`end` returns, in both systems. civicml writes a short run (creation, parameters, "
        "metrics and end) in one transaction — one request through the server — once the "
        "client has started a run in the experiment (the first is written at once); MLflow "
        "commits each call.",
        "- **Search:** `metrics.m0 > 0.5` ordered by `metrics.m1 DESC`, max 1,000 results, "
        f"over the {p['runs']} runs just created (MLflow `MlflowClient().search_runs`, "
        "civicml `proj.runs.search`); every system must return the same, correctly ordered "
        "hits.",
        "- **Raw SQLite floor:** Python `sqlite3`, WAL, `synchronous=FULL`, one table "
        "`metrics(run_id, key, value, step, timestamp)`: (a) one INSERT + COMMIT per value, "
        "(b) `executemany` of 1,000 rows + COMMIT. No server, no validation, no API: the "
        "cost of durably writing the rows and nothing else.",
        "- **Embedded** = library against a local SQLite file (`cm.connect(home=…)`, "
        "MLflow `sqlite:///…`). **Remote** = client → `civicml server` / "
        "`mlflow server --workers 1` (SQLite backend) on 127.0.0.1, separate process.",
        "- Each system runs in its own Python process (MLflow from its own virtualenv), one "
        "after the other, after an untimed warm-up. Single-call rows compare against the "
        "same MLflow figure.",
        "",
    ]
    return "\n".join(lines)


def write_docs(markdown: str, report: dict[str, Any]) -> None:
    write_section(BEGIN, END, markdown, DOCS_JSON, report)


def write_section(
    begin: str, end: str, markdown: str, json_path: Path, report: dict[str, Any]
) -> None:
    """Write ``report`` to ``json_path`` and ``markdown`` between the markers in the docs."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    block = f"{begin}\n{markdown}\n{end}"
    if DOCS_MD.exists():
        text = DOCS_MD.read_text(encoding="utf-8")
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = (
            "# Benchmarks\n\n"
            "Figures measured by the scripts in `benchmarks/` (see `benchmarks/README.md`). "
            "Each section is rewritten by its script between its `<!-- name:begin -->` / "
            "`<!-- name:end -->` markers; everything else in this file is kept.\n\n" + block + "\n"
        )
    DOCS_MD.write_text(text, encoding="utf-8")
    print(f"Wrote {DOCS_MD.relative_to(ROOT)} and {json_path.relative_to(ROOT)}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# Search curve (--search-curve): a selective filter as the project grows
# --------------------------------------------------------------------------------------

CURVE_BEGIN = "<!-- tracking-search-curve:begin -->"
CURVE_END = "<!-- tracking-search-curve:end -->"
CURVE_JSON = ROOT / "docs" / "benchmarks" / "tracking-search-curve.json"
CURVE_FILTER = "metrics.auc > 0.99"
GOAL_CURVE_MS = 10.0  # a selective filter over 50,000 runs in <= 10 ms, embedded


def _fill_project(ctx: Any, n_runs: int, seed: int) -> None:
    """``n_runs`` runs in project ``p``: one made through the service, the rest copied from it
    in bulk SQL (3 metrics, 2 params each; ``auc`` uniform in [0, 1), so ~1 % match)."""
    import random
    import uuid

    from sqlalchemy import insert, select

    from civicml.tracking import MetricValue, TrackingService
    from civicml.tracking import _tables as t

    svc = TrackingService(ctx)
    first = svc.create_run("p", experiment="e", params={"algo": "lr", "seed": "0"})
    svc.log_metrics(first.id, [MetricValue(key=k, value=0.5) for k in ("auc", "loss", "f1")])
    with ctx.db.read() as conn:
        run = conn.execute(select(t.runs).where(t.runs.c.id == first.id)).mappings().one()
        metric = (
            conn.execute(
                select(t.latest_metrics).where(t.latest_metrics.c.run_id == first.id).limit(1)
            )
            .mappings()
            .one()
        )
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for i in range(1, n_runs):
        rid = uuid.uuid4().hex
        rows.append({**run, "id": rid, "name": f"run-{i}"})
        params += [
            {"run_id": rid, "key": "algo", "value": rng.choice(["lr", "gbm", "rf"])},
            {"run_id": rid, "key": "seed", "value": str(i)},
        ]
        metrics += [
            {**metric, "run_id": rid, "key": k, "value": rng.random()}
            for k in ("auc", "loss", "f1")
        ]
    with ctx.db.engine.begin() as conn:
        for table, values in ((t.runs, rows), (t.params, params), (t.latest_metrics, metrics)):
            for start in range(0, len(values), 10_000):
                conn.execute(insert(table), values[start : start + 10_000])


def run_search_curve(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Median latency of ``TrackingService.search`` with a selective filter, per project size
    (embedded, SQLite in ``work``)."""
    from civicml.core import FrozenClock, Principal, Settings
    from civicml.store import Context, MetadataStore
    from civicml.store.artifacts import artifact_store_for
    from civicml.tracking import TrackingService

    points = []
    for size in args.curve_sizes:
        settings = Settings.load(home=work / f"curve-{size}")
        ctx = Context(
            db=MetadataStore(settings.database_url),
            artifacts=artifact_store_for(settings),
            principal=Principal(user="bench", roles=frozenset({"admin"})),
            settings=settings,
            clock=FrozenClock(),
        )
        try:
            t0 = time.perf_counter()
            _fill_project(ctx, size, seed=size)
            fill_s = time.perf_counter() - t0
            svc = TrackingService(ctx)
            svc.search("p", filter=CURVE_FILTER, max_results=100)  # warm-up
            latencies = []
            for _ in range(args.searches):
                t0 = time.perf_counter()
                page = svc.search("p", filter=CURVE_FILTER, max_results=100)
                latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            ctx.db.close()
        point = {
            "runs": size,
            "hits": len(page.runs),
            "median_ms": round(statistics.median(latencies), 3),
            "latencies_ms": [round(x, 3) for x in latencies],
            "fill_s": round(fill_s, 1),
        }
        print(f"  search curve: {size:>7,} runs, {point['hits']} hits, "
              f"{point['median_ms']:.2f} ms", file=sys.stderr)  # fmt: skip
        points.append(point)
    return {"filter": CURVE_FILTER, "points": points}


def render_search_curve(report: dict[str, Any]) -> str:
    mach, curve = report["machine"], report["curve"]
    largest = max(curve["points"], key=lambda p: p["runs"])
    met = largest["runs"] >= 50_000 and largest["median_ms"] <= GOAL_CURVE_MS
    lines = [
        "## Tracking: search as the project grows",
        "",
        "_Generated by `.venv/bin/python benchmarks/tracking.py --search-curve` — do not edit "
        "by hand; re-run the script. Raw figures: "
        "[`benchmarks/tracking-search-curve.json`](benchmarks/tracking-search-curve.json)._",
        "",
        f"- **Date:** {report['date']}",
        f"- **Machine:** {mach['cores']} cores, {mach['cpu_model']}, "
        f"{mach['memory_gib']} GiB RAM, {mach['os']}; data on {mach['data_dir_filesystem']}",
        f"- **Versions:** civicml source {report['versions']['civicml_source']}, "
        f"SQLite {report['versions']['sqlite']}",
        f"- **Search:** `{curve['filter']}` (about 1 % of the runs match), max 100 results, "
        f"embedded (`TrackingService.search` on a local SQLite file); median of "
        f"{report['params']['searches']} searches after a warm-up. Each run has 3 metrics and "
        "2 params; the first run is made through the service, the others are copied from it "
        "in bulk SQL.",
        "",
        "| Runs in the project | Matching runs | Median latency |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {p['runs']:,} | {p['hits']} | {_fmt_ms(p['median_ms'])} |" for p in curve["points"]
    ]
    lines += [
        "",
        f"Goal: a selective filter over 50,000 runs in ≤ {GOAL_CURVE_MS:.0f} ms — "
        f"{_fmt_met(met if largest['runs'] >= 50_000 else None)} "
        f"({largest['runs']:,} runs: {_fmt_ms(largest['median_ms'])}).",
        "",
    ]
    return "\n".join(lines)


def main_search_curve(args: argparse.Namespace, work: Path, source: str, t_start: float) -> int:
    try:
        curve = run_search_curve(args, work)
        machine = machine_info(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "versions": {"sqlite": sqlite3.sqlite_version, "civicml_source": source},
        "params": {"searches": args.searches, "sizes": args.curve_sizes},
        "curve": curve,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    if args.write_docs is not False:
        write_section(CURVE_BEGIN, CURVE_END, render_search_curve(report), CURVE_JSON, report)
    return 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Tracking benchmark: civicml vs MLflow vs raw SQLite.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 500 values, 20 runs, 5 searches, 1 repetition; "
        "does not touch docs/ unless --write-docs",
    )
    p.add_argument("--n", type=int, help="metric values per logging workload (10,000)")
    p.add_argument("--runs", type=int, help="runs to create (200)")
    p.add_argument("--searches", type=int, help="searches to time (20)")
    p.add_argument("--reps", type=int, help="repetitions; medians are reported (3)")
    p.add_argument(
        "--single-budget",
        type=float,
        default=10.0,
        help="seconds per repetition after which a single-call logging loop stops "
        "(a figure from a loop that hit it is marked [n=...])",
    )
    p.add_argument(
        "--modes",
        default="embedded,remote",
        help="comma-separated: embedded (library on a local SQLite file), remote (server)",
    )
    p.add_argument("--skip-mlflow", action="store_true", help="leave MLflow out")
    p.add_argument(
        "--skip-civicml",
        action="store_true",
        help="leave civicml out (checks the MLflow and floor parts)",
    )
    p.add_argument(
        "--write-docs",
        dest="write_docs",
        action="store_true",
        default=None,
        help="write docs/benchmarks.md + docs/benchmarks/tracking.json "
        "(default: only for a full run with every system)",
    )
    p.add_argument("--no-write-docs", dest="write_docs", action="store_false")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir (for debugging)")
    p.add_argument(
        "--security",
        action="store_true",
        help="instead of the comparison: civicml through its server with auth none vs "
        "token, interleaved over --rounds; writes the tracking part of the "
        "'Authentication and encryption overhead' section (unless --quick)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per arm with --security")
    p.add_argument(
        "--search-curve",
        action="store_true",
        help="instead of the comparison: median latency of a selective search at each of "
        "--curve-sizes runs (embedded); writes its section of docs/benchmarks.md unless "
        "--no-write-docs",
    )
    p.add_argument(
        "--curve-sizes",
        default="1000,10000,50000",
        help="comma-separated project sizes (runs) for --search-curve",
    )
    args = p.parse_args(argv)
    defaults = (
        (500, 20, 5, 1)
        if args.quick
        else (2_000, 50, 10, 1)
        if args.security
        else (10_000, 200, 20, 3)
    )
    for name, default in zip(("n", "runs", "searches", "reps"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.curve_sizes = [int(x) for x in str(args.curve_sizes).split(",") if x.strip()]
    args.modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    if not args.modes or not args.modes <= {"embedded", "remote"}:
        p.error("--modes takes embedded, remote or embedded,remote")
    if args.write_docs is None:
        args.write_docs = not (
            args.quick or args.skip_mlflow or args.skip_civicml or len(args.modes) < 2
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    source_start = civicml_source(ROOT)
    try:
        if not args.skip_civicml:
            check_civicml()
        mlflow_version = (
            None if args.skip_mlflow or args.security or args.search_curve else ensure_mlflow_venv()
        )
    except (BenchmarkError, subprocess.SubprocessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    WORKDIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tracking-", dir=WORKDIR))
    if args.search_curve:
        return main_search_curve(args, work, source_start, t_start)
    if args.security:
        return main_security(args, work, load_start, source_start, t_start)
    try:
        results = run_benchmark(args, work)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"(work dir kept for inspection: {work})", file=sys.stderr)
        return 1
    except BaseException:
        print(f"(work dir kept for inspection: {work})", file=sys.stderr)
        raise
    else:
        machine = machine_info(work)
        machine["load_average_1_5_15_at_start"] = load_start
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    versions: dict[str, str] = {"sqlite": sqlite3.sqlite_version}
    for res in results.values():
        versions.update(res.get("versions", {}))
    if mlflow_version:
        versions["mlflow"] = versions.get("mlflow", mlflow_version)
    if not args.skip_civicml:
        versions["civicml_source"] = source_start
        source_end = civicml_source(ROOT)
        if source_end != source_start:
            versions["civicml_source"] = f"{source_start}; changed during the run to {source_end}"
            print(
                "warning: the civicml checkout changed while the benchmark ran "
                f"({source_start} -> {source_end}); its figures may mix versions",
                file=sys.stderr,
            )
    summary = summarise(results)
    rows = build_rows(summary, args.n, args.runs)
    goals = build_goals(summary)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "versions": versions,
        "params": {
            "n": args.n,
            "runs": args.runs,
            "searches": args.searches,
            "reps": args.reps,
            "batch_size": 1000,
            "single_budget_s": args.single_budget,
            "quick": args.quick,
        },
        "summary": summary,
        "rows": rows,
        "goals": goals,
        "raw": results,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    print_table(rows, goals)
    print(f"(total {report['elapsed_s']:.0f} s)", file=sys.stderr)
    if args.write_docs:
        write_docs(render_markdown(report, rows, goals), report)
    else:
        out = WORKDIR / ("tracking-quick.json" if args.quick else "tracking-partial.json")
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"docs/ not touched; figures in {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


def main_security(
    args: argparse.Namespace, work: Path, load_start: list[float], source: str, t_start: float
) -> int:
    try:
        security = run_security(args, work)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"(work dir kept for inspection: {work})", file=sys.stderr)
        return 1
    machine = machine_info(work)
    machine["load_average_1_5_15_at_start"] = load_start
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "versions": {**security.pop("versions"), "civicml_source": source},
        "params": {
            "n": args.n,
            "runs": args.runs,
            "searches": args.searches,
            "reps": args.reps,
            "rounds": args.rounds,
            "single_budget_s": args.single_budget,
            "quick": args.quick,
        },
        "security": security,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    for w, x in security["overhead"].items():
        print(f"  auth overhead {w}: {x * 100:+.1f} %", file=sys.stderr)
    print(f"(total {report['elapsed_s']:.0f} s)", file=sys.stderr)
    if not args.quick or args.write_docs:
        write_section(SEC_BEGIN, SEC_END, render_security(report), SEC_JSON, report)
    else:
        out = WORKDIR / "security-tracking-quick.json"
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"docs/ not touched; figures in {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
