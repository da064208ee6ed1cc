"""The overhead part of ``benchmarks/serving.py`` (``--fastfloor``): civicml against Starlette +
civicml's *own* compiled fast path (``benchmarks/_serving_fastfloor.py``, no capture).

The first floor (``_serving_floor.py``) calls scikit-learn's ``predict_proba``, which civicml's
compiled fast path beats 10-20x, so a ratio against it hides civicml's own cost. Here the floor
does the same arithmetic civicml does, so civicml's share of its throughput is what validation,
capture, variants, metrics and the server around them cost (issue 11: ≥ 90 %).

For each ``--algorithm`` (``logistic``: a linear model, answered on the event loop;
``lightgbm``: a tree model, answered in worker threads through the micro-batcher) one model is
trained on the serving benchmark's data and saved; then three servers run side by side, each in
its own process on 127.0.0.1:

- **fast-path floor**: ``uvicorn _serving_fastfloor:app`` with ``FASTFLOOR_MODEL_DIR`` set to
  the saved model;
- **civicml, one variant**: an endpoint serving that model, capture at 100 %;
- **civicml, two variants**: an endpoint with two live variants (two registered versions of the
  same model) weighted 50/50, capture at 100 % — every request draws a variant.

(one ``civicml server`` answers both endpoints). The arms are measured interleaved over
``--rounds`` (the order rotates every round), each at concurrency 1 and 16 with the serving
benchmark's load generator; medians over the rounds. Beside throughput, each server's CPU time
per request (user + system, read from ``/proc`` around each load run, warm-up included) is
recorded: other tenants of a shared machine inflate it much less than they do wall-clock
throughput, so the CPU share (floor CPU ÷ civicml CPU) is the steadier view of what civicml's
own work costs.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROJECT = "overhead-bench"
GOAL_SHARE = 0.90  # issue 11: civicml >= 90 % of the fast-path floor; two variants >= 90 % of one
ARMS = ("floor", "single", "variants")
ARM_LABELS = {
    "floor": "fast-path floor: Starlette + `FastPath` (no capture)",
    "single": "civicml, one variant (validation + capture on)",
    "variants": "civicml, two variants 50/50 (validation + capture on)",
}


def deploy(home: Path, algorithm: str, model: Any, model_dir: Path) -> dict[str, str]:
    """Register the model twice, approve both, deploy a one-variant and a two-variant endpoint;
    returns {arm: invocation path}."""
    import civicml as cm

    name = f"ov-{algorithm}"
    with cm.connect(home=home, user="data-scientist") as ml:
        models = ml.project(PROJECT).models
        mvs = [
            models.register(name, model_dir, signature=model.signature, description="overhead")
            for _ in range(2)
        ]
    with cm.connect(home=home, user="model-risk-officer") as ml:
        mvs = [ml.project(PROJECT).models.approve(mv, note="benchmark") for mv in mvs]
    with cm.connect(home=home, user="ml-engineer") as ml:
        eps = ml.project(PROJECT).endpoints
        eps.deploy(f"{name}-one", mvs[0], capture_percent=100.0)
        two = eps.deploy(f"{name}-two", mvs[0], capture_percent=100.0, variant="a")
        two.set_variant("b", mvs[1], weight=0.0)  # then 50/50
        two.set_traffic({"a": 1.0, "b": 1.0})
    return {
        "single": f"/endpoints/{name}-one/invocations?project={PROJECT}",
        "variants": f"/endpoints/{name}-two/invocations?project={PROJECT}",
    }


def _check(port: int, path: str, records: list[dict[str, float]], model: Any) -> None:
    """The first answers must be the pipeline's own probabilities (to 1e-6)."""
    expected = model.pipeline.predict_proba(model.validate(records[:5]))
    for i in range(5):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps({"records": [records[i]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback)
            got = json.loads(resp.read())["probabilities"][0]
        if any(abs(a - b) > 1e-6 for a, b in zip(got, expected[i], strict=True)):
            raise RuntimeError(f"{path} answered {got}, expected {expected[i].tolist()}")


@contextlib.contextmanager
def _fastfloor(
    common: Any, bench: Path, work: Path, algorithm: str, model_dir: Path
) -> Iterator[tuple[int, int]]:
    port = common.free_port()
    env = common.base_env()
    env["FASTFLOOR_MODEL_DIR"] = str(model_dir)
    cmd = [
        sys.executable, "-m", "uvicorn", "_serving_fastfloor:app", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    health = f"http://127.0.0.1:{port}/health"
    log = work / f"fastfloor-{algorithm}.log"
    with common.server(f"fastfloor-{algorithm}", cmd=cmd, env=env, health=health, log=log,
                       cwd=bench) as proc:  # fmt: skip
        yield port, proc.pid


def run_overhead(
    args: Any,
    work: Path,
    common: Any,
    bench: Path,
    train: Callable[[Path, int, str], tuple[Any, Path, list[dict[str, float]]]],
    start_civicml: Callable[[dict[str, Any]], Any],
    run_load: Callable[..., dict[str, Any]],
    levels: tuple[int, ...],
) -> dict[str, Any]:
    """Every algorithm's three arms, interleaved over ``args.rounds``; medians and shares."""
    home = work / "overhead-home"
    setups: dict[str, dict[str, Any]] = {}
    for algorithm in args.algorithms:
        print(f"Training and deploying {algorithm} ...", file=sys.stderr)
        sub = work / algorithm
        sub.mkdir()
        model, model_dir, records = train(sub, args.seed, algorithm)
        paths = deploy(home, algorithm, model, model_dir)
        setups[algorithm] = {"model": model, "model_dir": model_dir, "records": records,
                             "paths": paths}  # fmt: skip
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        a: {arm: [] for arm in ARMS} for a in args.algorithms
    }
    with contextlib.ExitStack() as stack:
        first = next(iter(setups.values()))
        cm_ctx: dict[str, Any] = {"home": home, "records": first["records"]}
        cm_port = stack.enter_context(start_civicml(cm_ctx))
        cm_pid: int = cm_ctx["server_pid"]
        floors = {
            a: stack.enter_context(_fastfloor(common, bench, work, a, s["model_dir"]))
            for a, s in setups.items()
        }
        targets: dict[str, dict[str, tuple[int, str, int]]] = {}
        for a, s in setups.items():
            targets[a] = {
                "floor": (floors[a][0], "/invocations", floors[a][1]),
                "single": (cm_port, s["paths"]["single"], cm_pid),
                "variants": (cm_port, s["paths"]["variants"], cm_pid),
            }
            for port, path, _ in targets[a].values():
                _check(port, path, s["records"], s["model"])
        for rnd in range(args.rounds):
            order = ARMS[rnd % len(ARMS) :] + ARMS[: rnd % len(ARMS)]
            for a, s in setups.items():
                bodies = [{"records": [r]} for r in s["records"]]
                for arm in order:
                    print(f"round {rnd + 1}/{args.rounds}: {a} {arm}", file=sys.stderr)
                    port, path, pid = targets[a][arm]
                    runs[a][arm].append(
                        {
                            f"c{c}": _measured(
                                common,
                                pid,
                                run_load,
                                f"{a}-{arm}",
                                port,
                                path,
                                bodies,
                                c,
                                args,
                                work,
                            )
                            for c in levels
                        }
                    )
    return summarize(runs, levels, args.rounds)


def _measured(
    common: Any,
    pid: int,
    run_load: Callable[..., dict[str, Any]],
    name: str,
    port: int,
    path: str,
    bodies: list[Any],
    concurrency: int,
    args: Any,
    work: Path,
) -> dict[str, Any]:
    """One load run, with the server's CPU microseconds per request (warm-up included)."""
    before = sum(common.cpu_seconds_tree(pid))
    result = run_load(name, port, path, bodies, concurrency, args, work)
    spent = sum(common.cpu_seconds_tree(pid)) - before
    result["server_cpu_us"] = round(spent / (args.requests + args.warmup) * 1e6, 1)
    return result


def summarize(
    runs: dict[str, dict[str, list[dict[str, Any]]]], levels: tuple[int, ...], rounds: int
) -> dict[str, Any]:
    """Medians per arm, civicml's shares of the floor, and the goals."""
    medians: dict[str, Any] = {}
    shares: dict[str, Any] = {}
    goals: list[dict[str, Any]] = []
    for a, arms in runs.items():
        medians[a] = {
            arm: {
                f"c{c}": {
                    "req_per_s": round(statistics.median(r[f"c{c}"]["req_per_s"] for r in rs), 1),
                    "p50_ms": round(
                        statistics.median(r[f"c{c}"]["latency_ms"]["p50"] for r in rs), 3
                    ),
                    "p99_ms": round(
                        statistics.median(r[f"c{c}"]["latency_ms"]["p99"] for r in rs), 3
                    ),
                    "errors": sum(r[f"c{c}"]["errors"] for r in rs),
                    "server_cpu_us": round(
                        statistics.median(r[f"c{c}"]["server_cpu_us"] for r in rs), 1
                    ),
                }
                for c in levels
            }
            for arm, rs in arms.items()
        }
        med = medians[a]
        shares[a] = {}
        for c in levels:
            key = f"c{c}"
            floor, one, two = (med[arm][key]["req_per_s"] for arm in ARMS)
            per_round = [
                round(arms["single"][i][key]["req_per_s"] / arms["floor"][i][key]["req_per_s"], 3)
                for i in range(rounds)
            ]
            cpu_floor, cpu_one = (med[arm][key]["server_cpu_us"] for arm in ("floor", "single"))
            shares[a][key] = {
                "cpu_floor_vs_single": round(cpu_floor / cpu_one, 3) if cpu_one else None,
                "single_vs_floor": round(one / floor, 3),
                "variants_vs_floor": round(two / floor, 3),
                "variants_vs_single": round(two / one, 3),
                "single_vs_floor_per_round": per_round,
            }
        for key, what in (("single_vs_floor", "civicml (one variant) / fast-path floor"),
                          ("variants_vs_single", "two variants / one variant")):  # fmt: skip
            worst = min(shares[a][f"c{c}"][key] for c in levels)
            goals.append({"algorithm": a, "goal": f"{what} >= {GOAL_SHARE:.0%} at c=1 and c=16",
                          "value": worst, "met": worst >= GOAL_SHARE})  # fmt: skip
    return {"medians": medians, "shares": shares, "goals": goals}


def render_overhead(report: dict[str, Any], fmt_load: Callable[[Any], str]) -> str:
    """The 'Serving overhead against the fast-path floor' section of docs/benchmarks.md."""
    ov, cfg, m = report["overhead"], report["config"], report["machine"]
    levels = cfg["levels"]
    lines = [
        "## Serving overhead against the fast-path floor",
        "",
        "_Generated by `.venv/bin/python benchmarks/serving.py --fastfloor` — do not edit by "
        "hand. Raw figures: [`benchmarks/serving-overhead.json`]"
        "(benchmarks/serving-overhead.json)._",
        "",
        "Goal (issue 11): validation + capture + variants cost at most 10 % of the throughput "
        "of Starlette + civicml's *own* compiled fast path (`benchmarks/_serving_fastfloor.py`: "
        "`json.loads`, `FastPath.encode`, `FastPath.predict`, `json.dumps`; no capture, no "
        "variants, no metrics, predicting on the event loop), for a linear and a tree model; "
        "and a weighted two-variant endpoint answers at least 90 % of a one-variant endpoint's "
        "throughput. civicml serves both endpoints from one `civicml server` (one process, "
        "capture at 100 %); the floor runs in its own uvicorn process.",
        "",
        f"- **Date:** {report['date']}; civicml source {report['civicml_source']}",
        f"- **Machine:** {m['cores']} cores, {m['cpu_model']}, Python {m['python']}; load average "
        f"(1/5/15 min) {fmt_load(report.get('load_at_start'))} at start, "
        f"{fmt_load(m.get('load_average_1_5_15_at_end'))} at end (a shared machine: other work "
        "ran at the same time; the arms are interleaved so it weighs on all of them alike)",
        f"- **Load:** {cfg['rounds']} rounds, the arm order rotating each round; per arm and "
        f"level {cfg['warmup']} warm-up + {cfg['requests']:,} measured single-row requests at "
        f"concurrency {' and '.join(str(c) for c in levels)}; medians over the rounds. Models: "
        "20 features, 5,000 seeded rows, `fit_tabular(algorithm=...)`.",
        "",
        "| model | arm | c | req/s | p50 ms | p99 ms | errors | server CPU per request |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a, arms in ov["medians"].items():
        for arm in ARMS:
            for c in levels:
                f = arms[arm][f"c{c}"]
                lines.append(
                    f"| {a} | {ARM_LABELS[arm]} | {c} | {f['req_per_s']:,.0f} | "
                    f"{f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['errors']} | "
                    f"{f['server_cpu_us']:.0f} µs |"
                )
    lines += [
        "",
        "| model | c | civicml / floor (per round) | two variants / floor | two variants / one "
        "| CPU: floor / civicml |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for a, by_level in ov["shares"].items():
        for c in levels:
            s = by_level[f"c{c}"]
            rounds = ", ".join(f"{x:.0%}" for x in s["single_vs_floor_per_round"])
            lines.append(
                f"| {a} | {c} | {s['single_vs_floor']:.0%} ({rounds}) | "
                f"{s['variants_vs_floor']:.0%} | {s['variants_vs_single']:.0%} | "
                f"{s['cpu_floor_vs_single']:.0%} |"
            )
    lines += [
        "",
        "*CPU: floor / civicml* is the floor's server CPU time per request over civicml's (one "
        "variant): the share of civicml's work that is the floor's, which the machine's other "
        "tenants sway much less than throughput. Where the two disagree, the load generator "
        "and other work on the same cores are the difference. A server's CPU includes its "
        "child processes' (civicml's capture spool process, which formats and writes the "
        "captured requests).",
        "",
        "### Goals",
        "",
    ]
    for g in ov["goals"]:
        status = "met" if g["met"] else "**not met**"
        lines.append(f"- {g['algorithm']}: {g['goal']}: {g['value']:.0%} — {status}")
    lines.append("")
    return "\n".join(lines)
