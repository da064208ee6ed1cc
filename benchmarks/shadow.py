"""What a shadow variant costs the live answers (issue 11: at most +10 % on the live p99).

    .venv/bin/python benchmarks/shadow.py            # 3 rounds, writes docs/benchmarks.md
    .venv/bin/python benchmarks/shadow.py --quick    # a short run; docs are left alone

One ``civicml server`` serves two endpoints of the serving benchmark's logistic model (capture at
100 % on both):

- **live only**: one variant;
- **live + shadow**: the same live variant, and a second registered version as its shadow with
  ``--percent`` of the requests copied to it (100 % by default: every request).

The serving benchmark's load generator (``benchmarks/_serving_load.py``, its own process) sends
single-row requests at concurrency 1 and 16 to each endpoint, the two arms interleaved over
``--rounds`` (the order alternating each round); medians over the rounds. Before measuring, the
answers of both endpoints are checked against the pipeline's own probabilities; after, the
shadow's own counters must show it answered the copies (a shadow that silently dropped its work
would look free).

Each of ``--modes`` (``serving_shadow_mode``: ``process``, the shadow model in a worker process,
and ``thread``, in the server's shadow thread) gets a server of its own, one after the other.
Besides latency, the CPU time per request (user + system, from ``/proc``, warm-up included) of
the server process and of its worker processes is read around each load run: what the shadow
costs in CPU, wherever it runs. The issue's goal is judged on the first mode.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import serving  # noqa: E402  (the serving benchmark: model, server start-up, load generator)
import tracking as common  # noqa: E402  (venv, servers, machine info, docs sections)

BEGIN = "<!-- serving-shadow:begin -->"
END = "<!-- serving-shadow:end -->"
JSON_OUT = common.ROOT / "docs" / "benchmarks" / "serving-shadow.json"
PROJECT = serving.PROJECT
ARMS = ("live", "shadow")
LABELS = {"live": "live only (one variant)", "shadow": "live + shadow"}
SHADOW = "candidate"
GOAL_P99 = 1.10  # issue 11: a shadow adds at most 10 % to the live variant's p99
MODES = ("process", "thread")


def measured_load(
    arm: str, port: int, path: str, bodies: list[Any], c: int, args: Any, work: Path, pid: int
) -> dict[str, Any]:
    """One load run, with the server's (and its workers') CPU time per request."""
    before = common.cpu_seconds_tree(pid)
    result = serving.run_load(f"shadow-{arm}", port, path, bodies, c, args, work)
    after = common.cpu_seconds_tree(pid)
    sent = args.requests + args.warmup
    result["server_cpu_us_per_request"] = round((after[0] - before[0]) / sent * 1e6, 1)
    result["workers_cpu_us_per_request"] = round((after[1] - before[1]) / sent * 1e6, 1)
    return result


def deploy(home: Path, model: Any, model_dir: Path, percent: float) -> dict[str, str]:
    """Two approved versions; a one-variant endpoint and one with the second as its shadow."""
    import civicml as cm

    with cm.connect(home=home, user="data-scientist") as ml:
        models = ml.project(PROJECT).models
        mvs = [
            models.register("shadow-bench", model_dir, signature=model.signature) for _ in range(2)
        ]
    with cm.connect(home=home, user="model-risk-officer") as ml:
        mvs = [ml.project(PROJECT).models.approve(mv, note="benchmark") for mv in mvs]
    with cm.connect(home=home, user="ml-engineer") as ml:
        eps = ml.project(PROJECT).endpoints
        eps.deploy("live-only", mvs[0], capture_percent=100.0)
        eps.deploy("shadowed", mvs[0], capture_percent=100.0).set_shadow(
            mvs[1], percent=percent, name=SHADOW
        )
    return {
        "live": f"/endpoints/live-only/invocations?project={PROJECT}",
        "shadow": f"/endpoints/shadowed/invocations?project={PROJECT}",
    }


def shadow_answered(port: int) -> int:
    """How many copies the shadow variant answered: the server's own Prometheus counter."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("civicml_endpoint_invocations_total{")
            and 'endpoint="shadowed"' in line
            and f'variant="{SHADOW}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def wait_for_shadow(
    mode: str, port: int, pid: int, path: str, body: Any, timeout_s: float = 180.0
) -> None:
    """Wait until the shadow answered the checks' copies and, in process mode, its worker is
    ready: it loads on the first copy (seconds, importing the libraries), the copies being
    answered in the server's thread meanwhile; the steady state is what is measured. A worker
    is ready once the server removed the directory it loaded from (its first argument)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        if time.monotonic() > deadline:
            raise common.BenchmarkError(f"the shadow was not ready within {timeout_s:g} s")
        workers = worker_dirs(pid)
        ready = mode != "process" or (workers and not any(Path(d).exists() for d in workers))
        if ready and shadow_answered(port) > 0:
            return
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (loopback)
            resp.read()
        time.sleep(0.5)


def worker_dirs(pid: int) -> list[str]:
    """The model directories of the server's shadow workers (from their command lines)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            names = [a.decode(errors="replace") for a in argv]
            for i, arg in enumerate(names[:-1]):
                if arg.endswith("_shadow_worker.py"):
                    found.append(names[i + 1])
    return found


def summarize(runs: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for arm, rs in runs.items():
        medians[arm] = {
            f"c{c}": {
                "req_per_s": round(statistics.median(r[f"c{c}"]["req_per_s"] for r in rs), 1),
                "p50_ms": round(statistics.median(r[f"c{c}"]["latency_ms"]["p50"] for r in rs), 3),
                "p99_ms": round(statistics.median(r[f"c{c}"]["latency_ms"]["p99"] for r in rs), 3),
                "errors": sum(r[f"c{c}"]["errors"] for r in rs),
                "server_cpu_us": round(
                    statistics.median(r[f"c{c}"]["server_cpu_us_per_request"] for r in rs), 1
                ),
                "workers_cpu_us": round(
                    statistics.median(r[f"c{c}"]["workers_cpu_us_per_request"] for r in rs), 1
                ),
            }
            for c in serving.LEVELS
        }
    ratios: dict[str, Any] = {}
    goals = []
    for c in serving.LEVELS:
        key = f"c{c}"
        per_round = [
            round(
                runs["shadow"][i][key]["latency_ms"]["p99"]
                / runs["live"][i][key]["latency_ms"]["p99"],
                3,
            )
            for i in range(rounds)
        ]
        p99 = round(medians["shadow"][key]["p99_ms"] / medians["live"][key]["p99_ms"], 3)
        thr = round(medians["shadow"][key]["req_per_s"] / medians["live"][key]["req_per_s"], 3)
        ratios[key] = {"p99": p99, "p99_per_round": per_round, "throughput": thr}
        goals.append(
            {
                "goal": f"live p99 with a shadow <= {GOAL_P99:.2f}x without, c={c}",
                "value": p99,
                "met": p99 <= GOAL_P99,
            }
        )
    return {"medians": medians, "ratios": ratios, "goals": goals}


def render(report: dict[str, Any]) -> str:
    cfg = report["config"]
    modes = cfg["modes"]
    lines = [
        "## Shadow variant: what it costs the live answers",
        "",
        "_Generated by `.venv/bin/python benchmarks/shadow.py` — do not edit by hand. Raw "
        "figures: [`benchmarks/serving-shadow.json`](benchmarks/serving-shadow.json)._",
        "",
        f"One `civicml server` (one process) serves the serving benchmark's logistic model on two "
        f"endpoints, capture at 100 % on both: one variant alone, and the same variant with a "
        f"second version as its shadow, {cfg['percent']:g} % of the requests copied to it after "
        f"they are answered. One server per `serving_shadow_mode` ({', '.join(modes)}), one "
        f"after the other. {cfg['rounds']} rounds, the arms interleaved; per arm and level "
        f"{cfg['warmup']:,} warm-up + {cfg['requests']:,} measured single-row requests; medians. "
        "CPU per request: user + system time of the server process and of its worker "
        "processes (the shadow's, in process mode) over the run, warm-up included, per request "
        f"sent. {report['date']}, civicml {report['civicml_source']}, "
        f"{report['machine']['cores']} cores, load average "
        f"{common._fmt_load(report['load_at_start'])} at start, "
        f"{common._fmt_load(report['machine'].get('load_average_1_5_15_at_end'))} at end. "
        "The shadow answered "
        + ", ".join(f"{report['shadow_answered'][m]:,} copies ({m})" for m in modes)
        + ".",
        "",
        "| mode | arm | c | req/s | p50 ms | p99 ms | server CPU µs/req | worker CPU µs/req "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in modes:
        res = report["result"][mode]
        for arm in ARMS:
            for c in serving.LEVELS:
                m = res["medians"][arm][f"c{c}"]
                lines.append(
                    f"| {mode} | {LABELS[arm]} | {c} | {m['req_per_s']:,.0f} | "
                    f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['server_cpu_us']:.0f} | "
                    f"{m['workers_cpu_us']:.0f} | {m['errors']} |"
                )
    lines += ["", "| mode | c | live p99 with shadow / without (per round) | throughput ratio |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for mode in modes:
        for c in serving.LEVELS:
            r = report["result"][mode]["ratios"][f"c{c}"]
            rounds = ", ".join(f"{x:.2f}" for x in r["p99_per_round"])
            lines.append(f"| {mode} | {c} | {r['p99']:.2f}x ({rounds}) | {r['throughput']:.2f}x |")
    lines += ["", f"### Goal (issue 11), `serving_shadow_mode = {modes[0]!r}`", ""]
    for g in report["result"][modes[0]]["goals"]:
        lines.append(f"- {g['goal']}: {g['value']:.2f}x — **{'met' if g['met'] else 'not met'}**")
    lines += [
        "",
        "The live answer never waits for the shadow: copies go on a bounded queue (beyond it "
        "they are dropped and counted). What the shadow can cost the live answers is CPU and, "
        "in thread mode, turns of the server's event loop, which answers the copies to this "
        "fast-path model one per turn between its other callbacks (a copy costs no thread "
        "wake-up and no hand-over of the interpreter lock); in process mode the server only "
        "sends a batch of copies' records to the worker in one message, counts its answers and "
        "appends the capture lines the worker formatted. On two cores shared with the load "
        "generator, a shadow at 100 % doubles the prediction work. Since cf2ef11 the capture "
        "writer hands the interpreter lock over every few events it formats, which halved the "
        "live p99 at concurrency 1 (1.3-1.5 ms before, 0.7-0.8 ms after, in interleaved runs) "
        "and makes the process mode's bursts of copies stand out against it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run; docs are left alone")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--percent", type=float, default=100.0, help="share of requests shadowed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--modes",
        default=None,
        help="serving_shadow_mode values, comma-separated; the goal is judged on the first "
        "(default: what 'auto' picks on this machine, then the other)",
    )
    args = p.parse_args(argv)
    if args.modes is None:
        from civicml.serving.shadow import shadow_mode

        first = shadow_mode("auto")
        args.modes = ",".join([first, *(m for m in MODES if m != first)])
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or not set(args.modes) <= set(MODES):
        p.error(f"--modes takes {', '.join(MODES)}")
    args.requests = args.requests or (300 if args.quick else 2000)
    args.warmup = args.warmup or (50 if args.quick else 200)
    if args.quick:
        args.rounds = min(args.rounds, 1)
    load_start = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    common.WORKDIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shadow-", dir=common.WORKDIR))
    common.check_civicml()
    print("Training the model with civicml ...", file=sys.stderr)
    model, model_dir, records = serving.train(work, args.seed)
    home = work / "home"
    paths = deploy(home, model, model_dir, args.percent)
    ctx: dict[str, Any] = {"home": home, "records": records, "model": model}
    bodies = [{"records": [r]} for r in records]
    results: dict[str, Any] = {}
    answered: dict[str, int] = {}
    for mode in args.modes:
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        env = {"CIVICML_SERVING_SHADOW_MODE": mode}
        with serving.start_target("civicml", work, ctx, env, tag=f"-shadow-{mode}") as (
            port, _, _,
        ):  # fmt: skip
            pid = ctx["server_pid"]
            for arm in ARMS:
                serving.check_answers(arm, port, paths[arm], bodies, ctx)
            wait_for_shadow(mode, port, pid, paths["shadow"], bodies[0])
            for rnd in range(args.rounds):
                order = ARMS if rnd % 2 == 0 else ARMS[::-1]
                for arm in order:
                    print(f"{mode} round {rnd + 1}/{args.rounds}: {arm}", file=sys.stderr)
                    runs[arm].append(
                        {
                            f"c{c}": measured_load(
                                arm, port, paths[arm], bodies, c, args, work, pid
                            )
                            for c in serving.LEVELS
                        }
                    )
            time.sleep(1.0)  # let the shadow's queue drain before its counter is read
            answered[mode] = shadow_answered(port)
        if answered[mode] <= 0:
            raise common.BenchmarkError(f"the shadow answered no copies ({mode}): nothing measured")
        results[mode] = summarize(runs, args.rounds)
    report: dict[str, Any] = {
        "benchmark": "serving-shadow",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "civicml_source": common.civicml_source(common.ROOT),
        "config": {
            "rounds": args.rounds,
            "requests": args.requests,
            "warmup": args.warmup,
            "percent": args.percent,
            "levels": list(serving.LEVELS),
            "modes": list(args.modes),
        },
        "load_at_start": load_start,
        "shadow_answered": answered,
        "result": results,
        "machine": common.machine_info(work),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    section = render(report)
    for goal in results[args.modes[0]]["goals"]:
        print(f"  {goal['goal']}: {goal['value']} met={goal['met']}", file=sys.stderr)
    if args.quick:
        print(section, file=sys.stderr)
        print("Quick run: docs untouched", file=sys.stderr)
    else:
        common.write_section(BEGIN, END, section, JSON_OUT, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
