"""Serving benchmark: a civicml endpoint vs ``mlflow models serve`` vs a bare Starlette app.

Run from the repository root with the civicml virtualenv::

    .venv/bin/python benchmarks/serving.py            # full run (~3 min), rewrites docs
    .venv/bin/python benchmarks/serving.py --quick    # smoke run (~1 min), leaves docs alone
    .venv/bin/python benchmarks/serving.py --workers 2   # civicml: 2 worker processes vs 1
    .venv/bin/python benchmarks/serving.py --batch-rows 1000000   # a batch job vs a predict loop
    .venv/bin/python benchmarks/serving.py --fastfloor   # vs Starlette + civicml's own fast path

One 20-feature logistic regression is trained with ``civicml.training.fit_tabular`` on seeded,
generated data and served three ways, one at a time, each in its own process on 127.0.0.1:

- **civicml**: registered through the SDK, approved (by another user), deployed with data
  capture on (100 %), served by ``civicml server``; ``POST /endpoints/{name}/invocations``
  (input validation against the signature on every request; the model's compiled fast path,
  ``civicml.serving.fastpath``; one-row requests to this linear model answered on the event
  loop by the invocations lane; micro-batching for everything that goes to worker threads).
- **MLflow**: the *same fitted pipeline* (pickled with joblib for it) saved with
  ``mlflow.sklearn.save_model`` in ``benchmarks/.venv-mlflow`` and served by
  ``mlflow models serve --env-manager local --workers 1``.
- **floor**: ``benchmarks/_serving_floor.py``, a Starlette app under uvicorn that parses the
  JSON, builds a DataFrame and calls ``predict_proba`` on the same pipeline — nothing else.
- **fastfloor** (``--targets …,fastfloor``, and the ``--fastfloor`` mode of
  ``benchmarks/_serving_overhead.py``): ``benchmarks/_serving_fastfloor.py``, Starlette + the
  model's *own* compiled fast path (``FASTFLOOR_MODEL_DIR``), no capture — the floor that shows
  what civicml costs around the arithmetic.

The load generator (``benchmarks/_serving_load.py``, raw asyncio sockets, kept-alive
HTTP/1.1) runs in a separate process and sends single-row requests at concurrency 1 and 16:
``--warmup`` unmeasured requests, then ``--requests`` measured ones per level. All three return
labels and class probabilities from one ``predict_proba``; the answers are checked against the
pipeline before measuring. It also times one ``predict_proba`` on 1 row vs 1,000 rows, and
civicml's compiled fast path (encode + predict) on 1 row.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import tracking as common  # noqa: E402  (benchmarks/tracking.py: venv, servers, machine info)

ROOT = common.ROOT
WORKDIR = common.WORKDIR
LOAD = BENCH / "_serving_load.py"
TO_MLFLOW = BENCH / "_serving_mlflow.py"
DOCS_MD = common.DOCS_MD
DOCS_JSON = ROOT / "docs" / "benchmarks" / "serving.json"
BEGIN = "<!-- serving:begin -->"
END = "<!-- serving:end -->"
X = common.X

FEATURES = 20
TRAIN_ROWS = 5_000
BODY_POOL = 256  # distinct single-row request bodies, cycled
PROJECT = "serving-bench"
ENDPOINT = "lr20"
LEVELS = (1, 16)
LOAD_TIMEOUT_S = 600.0

# Goals from issue 3.
GOAL_VS_MLFLOW = 10.0  # >= 10x MLflow's throughput (each concurrency level)
GOAL_FLOOR_C1 = 0.9  # >= 90 % of the floor at concurrency 1
GOAL_FLOOR_C16 = 1.0  # above the floor at concurrency 16


# --------------------------------------------------------------------------------------
# Data and model
# --------------------------------------------------------------------------------------


def make_data(rows: int, seed: int) -> Any:
    """Seeded data: 20 normal features, a binary label from a noisy linear score."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    weights = np.linspace(-1.0, 1.0, FEATURES)
    y = x @ weights + rng.normal(scale=1.0, size=rows) > 0
    frame = pd.DataFrame(x.round(6), columns=[f"f{i}" for i in range(FEATURES)])
    frame["label"] = y
    return frame


def train(
    work: Path, seed: int, algorithm: str = "logistic"
) -> tuple[Any, Path, list[dict[str, float]]]:
    """Fit the model with civicml, save it, and return single-row request records."""
    from civicml.training import fit_tabular

    frame = make_data(TRAIN_ROWS, seed)
    model = fit_tabular(frame, "label", algorithm=algorithm, seed=seed)
    model_dir = work / "model"
    model.save(model_dir)
    # the baselines load the same pipeline with joblib, outside civicml (which saves model.skops)
    import joblib  # type: ignore[import-untyped]

    joblib.dump(model.pipeline, work / "pipeline.joblib")
    frame.drop(columns="label").head(500).to_csv(work / "sample.csv", index=False)
    later = make_data(BODY_POOL, seed + 1).drop(columns="label")
    records = [{k: float(v) for k, v in row.items()} for row in later.to_dict("records")]
    return model, model_dir, records


def time_predict(model: Any, records: list[dict[str, float]], reps: int) -> dict[str, Any]:
    """Median seconds of one ``pipeline.predict_proba`` on 1 row and on 1,000 rows."""
    one = model.validate(records[:1])
    thousand = model.validate((records * (1000 // len(records) + 1))[:1000])
    out: dict[str, Any] = {}
    for label, frame in (("rows_1", one), ("rows_1000", thousand)):
        for _ in range(20):
            model.pipeline.predict_proba(frame)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.pipeline.predict_proba(frame)
            times.append(time.perf_counter() - t0)
        out[label] = {"median_ms": round(statistics.median(times) * 1000, 4), "reps": reps}
    out["ratio_1000_vs_1"] = round(out["rows_1000"]["median_ms"] / out["rows_1"]["median_ms"], 2)
    from civicml.serving.fastpath import compile_fast_path

    fast = compile_fast_path(model)
    if fast is None:
        raise common.BenchmarkError("the model did not compile to civicml's fast path")

    def fast_predict() -> Any:
        batch = fast.encode(records[:1])
        return fast.predict(batch) if batch is not None else None

    for _ in range(20):
        fast_predict()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fast_predict()
        times.append(time.perf_counter() - t0)
    out["fast_path_rows_1"] = {"median_ms": round(statistics.median(times) * 1000, 4)}
    return out


def deploy_civicml(home: Path, model: Any, model_dir: Path) -> str:
    """Register, approve (as another user) and deploy the model through the SDK."""
    import civicml as cm

    with cm.connect(home=home, user="data-scientist") as ml:
        mv = ml.project(PROJECT).models.register(
            ENDPOINT, model_dir, signature=model.signature, description="serving benchmark"
        )
    with cm.connect(home=home, user="model-risk-officer") as ml:
        mv = ml.project(PROJECT).models.approve(mv, note="benchmark")
    with cm.connect(home=home, user="ml-engineer") as ml:
        ep = ml.project(PROJECT).endpoints.deploy(ENDPOINT, mv, capture_percent=100.0)
    return str(ep.name)


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def start_target(
    name: str,
    work: Path,
    ctx: dict[str, Any],
    extra_env: dict[str, str] | None = None,
    tag: str = "",
) -> Iterator[tuple[int, str, list[dict[str, Any]]]]:
    """Start one server; yield (port, invocation path, request bodies)."""
    port = common.free_port()
    env = common.base_env()
    env.update(extra_env or {})
    log = work / f"{name}{tag}.log"
    records: list[dict[str, float]] = ctx["records"]
    if name == "civicml":
        env["CIVICML_HOME"] = str(ctx["home"])
        cmd = [*common.civicml_server_cmd("127.0.0.1", port), "--log-level", "warning"]
        health = f"http://127.0.0.1:{port}/api/v1/health"
        path = f"/endpoints/{ENDPOINT}/invocations?project={PROJECT}"
        bodies = [{"records": [r]} for r in records]
    elif name == "mlflow":
        # mlflow models serve runs `uvicorn` from PATH: the one in MLflow's virtualenv.
        env["PATH"] = f"{common.MLFLOW_VENV / 'bin'}:{env.get('PATH', '')}"
        cmd = [
            str(common.MLFLOW_VENV / "bin" / "mlflow"), "models", "serve",
            "-m", str(ctx["mlflow_model"]), "--env-manager", "local", "--workers", "1",
            "-h", "127.0.0.1", "-p", str(port),
        ]  # fmt: skip
        health = f"http://127.0.0.1:{port}/ping"
        path = "/invocations"
        bodies = [{"dataframe_records": [r]} for r in records]
    elif name == "fastfloor":  # the second floor: Starlette + civicml's own fast path
        env["FASTFLOOR_MODEL_DIR"] = str(ctx["model_dir"])
        cmd = [
            sys.executable, "-m", "uvicorn", "_serving_fastfloor:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        health = f"http://127.0.0.1:{port}/health"
        path = "/invocations"
        bodies = [{"records": [r]} for r in records]
    else:
        env["FLOOR_MODEL"] = str(ctx["model_dir"].parent / "pipeline.joblib")
        env["FLOOR_COLUMNS"] = ",".join(ctx["columns"])
        cmd = [
            sys.executable, "-m", "uvicorn", "_serving_floor:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        health = f"http://127.0.0.1:{port}/health"
        path = "/invocations"
        bodies = [{"records": [r]} for r in records]
    with common.server(name, cmd=cmd, env=env, health=health, log=log, cwd=BENCH) as proc:
        ctx["server_pid"] = proc.pid
        yield port, path, bodies


def check_answers(
    name: str,
    port: int,
    path: str,
    bodies: list[Any],
    ctx: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    """The first few answers must be the pipeline's own probabilities."""
    expected = ctx["model"].pipeline.predict_proba(ctx["model"].validate(ctx["records"][:5]))
    for i in range(5):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(bodies[i]).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback)
            answer = json.loads(resp.read())
        got = (
            answer["probabilities"][0]
            if isinstance(answer, dict) and "probabilities" in answer
            else None
        )
        if got is None:  # MLflow: {"predictions": [[p0, p1]]}
            got = answer["predictions"][0]
        if any(abs(a - b) > 1e-9 for a, b in zip(got, expected[i], strict=True)):
            raise common.BenchmarkError(f"{name} answered {got}, expected {expected[i].tolist()}")


def run_load(
    name: str,
    port: int,
    path: str,
    bodies: list[Any],
    concurrency: int,
    args: Any,
    work: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    bodies_file = work / f"bodies-{name}.json"
    bodies_file.write_text(json.dumps(bodies), encoding="utf-8")
    out = work / f"load-{name}-c{concurrency}.json"
    cmd = [
        sys.executable, str(LOAD), "--port", str(port), "--path", path,
        "--bodies", str(bodies_file), "--concurrency", str(concurrency),
        "--requests", str(args.requests), "--warmup", str(args.warmup), "--out", str(out),
    ]  # fmt: skip
    for key, value in (headers or {}).items():
        cmd += ["--header", f"{key}: {value}"]
    subprocess.run(cmd, check=True, timeout=LOAD_TIMEOUT_S, cwd=work)
    result: dict[str, Any] = json.loads(out.read_text())
    _print_load(name, concurrency, result)
    if result["errors"]:
        print(f"  first error: {result['first_error']}", file=sys.stderr)
    return result


def _print_load(name: str, concurrency: int, result: dict[str, Any], note: str = "") -> None:
    lat = result["latency_ms"]
    print(
        f"  {name:8} c={concurrency:<3} {result['req_per_s']:>9,.1f} req/s  "
        f"p50 {lat['p50']:8.2f} ms  p99 {lat['p99']:8.2f} ms  errors {result['errors']}{note}",
        file=sys.stderr,
        flush=True,
    )


WRK_SECONDS = 5  # measured seconds per level with wrk (after WRK_WARMUP_SECONDS of warm-up)
WRK_WARMUP_SECONDS = 2
_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_load_wrk(
    name: str, port: int, path: str, bodies: list[Any], concurrency: int, work: Path
) -> dict[str, Any]:
    """The same load as :func:`run_load` (kept-alive connections, the bodies cycled) driven by
    ``wrk`` (C, one thread, epoll) for a fixed time instead of a Python client: on a 2-core
    machine the Python client takes most of a core, which leaves a second server process
    little to gain. Returns :func:`run_load`'s result shape (``p90`` is wrk's 90th percentile,
    ``mean`` its average; an error is a non-2xx answer or a socket error)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise common.BenchmarkError("wrk is not installed (Debian: apt-get install wrk)")
    script = work / f"wrk-{name}.lua"
    quoted = ",\n".join(f"[==[{json.dumps(b, separators=(',', ':'))}]==]" for b in bodies)
    script.write_text(
        f"local bodies = {{\n{quoted}\n}}\nlocal i = 0\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "request = function()\n  i = i % #bodies + 1\n"
        '  return wrk.format("POST", nil, headers, bodies[i])\nend\n',
        encoding="utf-8",
    )
    url = f"http://127.0.0.1:{port}{path}"
    base = [wrk, "-t1", f"-c{concurrency}", "-s", str(script), "--latency"]
    subprocess.run([*base, f"-d{WRK_WARMUP_SECONDS}s", url], check=True, capture_output=True,
                   timeout=LOAD_TIMEOUT_S)  # fmt: skip
    out = subprocess.run([*base, f"-d{WRK_SECONDS}s", url], check=True, capture_output=True,
                         text=True, timeout=LOAD_TIMEOUT_S).stdout  # fmt: skip
    result = parse_wrk(out)
    result["concurrency"] = concurrency
    _print_load(name, concurrency, result, " (wrk)")
    return result


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests, req/s, errors and latency percentiles (ms) from ``wrk --latency``'s output."""

    def ms(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * _WRK_UNITS[unit]

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    avg = re.search(r"Latency\s+(\S+)\s+\S+\s+(\S+)", text)
    if done is None or rate is None or avg is None:
        raise common.BenchmarkError(f"unexpected wrk output: {text[:500]}")
    percentiles = {int(p): ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", text, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in socket.groups()) if socket else 0
    )
    wall = float(done.group(2)) * _WRK_UNITS[done.group(3)] / 1e3
    return {
        "requests": int(done.group(1)),
        "warmup_s": WRK_WARMUP_SECONDS,
        "errors": errors,
        "first_error": None,
        "wall_s": round(wall, 4),
        "req_per_s": float(rate.group(1)),
        "latency_ms": {
            "p50": round(percentiles[50], 3),
            "p90": round(percentiles[90], 3),
            "p99": round(percentiles[99], 3),
            "mean": round(ms(avg.group(1)), 3),
            "max": round(ms(avg.group(2)), 3),
        },
    }


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"ratios": {}, "goals": {}}
    for c in LEVELS:
        key = f"c{c}"
        cm = results["civicml"][key]["req_per_s"]
        ratios = {}
        if "mlflow" in results:
            ratios["civicml_vs_mlflow"] = round(cm / results["mlflow"][key]["req_per_s"], 2)
        if "floor" in results:
            ratios["civicml_vs_floor"] = round(cm / results["floor"][key]["req_per_s"], 3)
        if "fastfloor" in results:
            ratios["civicml_vs_fastfloor"] = round(cm / results["fastfloor"][key]["req_per_s"], 3)
        summary["ratios"][key] = ratios
    r = summary["ratios"]
    goals = summary["goals"]
    if "mlflow" in results:
        worst = min(r[f"c{c}"]["civicml_vs_mlflow"] for c in LEVELS)
        goals["throughput_vs_mlflow"] = {
            "goal": f">= {GOAL_VS_MLFLOW:g}{X} MLflow's throughput at c=1 and c=16",
            "value": worst,
            "met": worst >= GOAL_VS_MLFLOW,
        }
    if "floor" in results:
        goals["floor_c1"] = {
            "goal": f">= {GOAL_FLOOR_C1:.0%} of the floor at c=1",
            "value": r["c1"]["civicml_vs_floor"],
            "met": r["c1"]["civicml_vs_floor"] >= GOAL_FLOOR_C1,
        }
        goals["floor_c16"] = {
            "goal": "above the floor at c=16",
            "value": r["c16"]["civicml_vs_floor"],
            "met": r["c16"]["civicml_vs_floor"] > GOAL_FLOOR_C16,
        }
    return summary


def render(report: dict[str, Any]) -> str:
    res = report["results"]
    sm = report["summary"]
    cfg = report["config"]
    m = report["machine"]
    lines = [
        "## Serving",
        "",
        f"`benchmarks/serving.py`, run {report['date']} on {m['cores']} cores ({m['cpu_model']}), "
        f"Python {m['python']}, civicml {report['civicml_source']}, MLflow "
        f"{report.get('mlflow_version', '-')}. One 20-feature logistic regression "
        f"({TRAIN_ROWS:,} seeded rows, `fit_tabular(algorithm='logistic')`), single-row requests, "
        f"{cfg['requests']:,} measured after {cfg['warmup']} warm-up per level, one load-generator "
        "process (raw asyncio sockets, kept-alive HTTP/1.1) on the same machine, loopback only.",
        "",
        "| target | concurrency | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "civicml": "civicml endpoint (validation + capture on)",
        "mlflow": "`mlflow models serve --workers 1`",
        "floor": "floor: Starlette + `predict_proba`",
        "fastfloor": "fast-path floor: Starlette + civicml's `FastPath` (no capture)",
    }
    for name in ("civicml", "mlflow", "floor", "fastfloor"):
        if name not in res:
            continue
        for c in LEVELS:
            r = res[name][f"c{c}"]
            lat = r["latency_ms"]
            lines.append(
                f"| {labels[name]} | {c} | {r['req_per_s']:,.0f} | {lat['p50']:.2f} | "
                f"{lat['p99']:.2f} | {r['errors']} |"
            )
    lines += ["", "| concurrency | civicml / MLflow | civicml / floor |", "|---:|---:|---:|"]
    for c in LEVELS:
        ratio = sm["ratios"][f"c{c}"]
        vs_m = ratio.get("civicml_vs_mlflow")
        vs_f = ratio.get("civicml_vs_floor")
        lines.append(
            f"| {c} | {'-' if vs_m is None else f'{vs_m:.1f}{X}'} | "
            f"{'-' if vs_f is None else f'{vs_f:.0%}'} |"
        )
    p = report["predict"]
    lines += [
        "",
        f"One `predict_proba` of the pipeline: {p['rows_1']['median_ms']:.3f} ms on 1 row, "
        f"{p['rows_1000']['median_ms']:.3f} ms on 1,000 rows ({p['ratio_1000_vs_1']:.2f}{X}; "
        "medians) — why batching concurrent requests into one call pays. The same model through "
        "civicml's compiled fast path (`civicml.serving.fastpath`: checking and encoding the "
        "record, then NumPy arithmetic equal to the pipeline's to 1e-9): "
        f"{p['fast_path_rows_1']['median_ms']:.3f} ms on 1 row.",
        "",
        "### Goals",
        "",
    ]
    for goal in sm["goals"].values():
        status = "met" if goal["met"] else "**not met**"
        value = goal["value"]
        shown = (
            f"{value:.1f}{X}" if "MLflow" in goal["goal"] or X in goal["goal"] else f"{value:.0%}"
        )
        lines.append(f"- {goal['goal']}: {shown} — {status}")
    lines += [
        "",
        "### What is measured",
        "",
        "- civicml: `civicml server` (one uvicorn process, TCP_NODELAY on), an Approved version "
        "deployed through the SDK with capture at 100 %; every request is validated against the "
        "signature, captured, and predicted by the model's compiled fast path (the fitted "
        "pipeline's imputation, scaling, one-hot encoding and logistic function as one NumPy "
        "expression, checked against the pipeline when the model loads). A request of up to 64 "
        "plain records to a linear model is answered on the event loop by the invocations lane "
        "(a plain ASGI layer inside the request guard, no FastAPI routing); other models, larger "
        "requests and explanations go to worker threads and the micro-batcher "
        "(`civicml.serving.batching`: requests that arrive while a `predict` runs share the next "
        "one; a lone request predicts at once).",
        "- MLflow: the same fitted pipeline (pickled with joblib by the benchmark, loaded with "
        "joblib in MLflow's own virtualenv with the same scikit-learn) saved by "
        "`mlflow.sklearn.save_model` "
        "with an inferred signature and `pyfunc_predict_fn='predict_proba'`, served by "
        "`mlflow models serve --env-manager local --workers 1`; requests are "
        '`{"dataframe_records": [row]}`.',
        "- Floor: `benchmarks/_serving_floor.py` under `uvicorn` (one process): `json.loads`, "
        "`pd.DataFrame(records)`, `predict_proba`, `json.dumps`; no validation, no capture, "
        "predicts on the event loop.",
        "- Latency is per request, from writing the request to reading the whole response; "
        "req/s is measured requests over the wall time. All answers are checked against the "
        "pipeline's own probabilities before the load starts. Compare figures from one run "
        "only; the load generator shares the machine's cores with the server.",
        f"- Load average (1/5/15 min) at the end of the run: "
        f"{', '.join(str(x) for x in m['load_average_1_5_15_at_end'])} on {m['cores']} cores; "
        "a load above the core count means other work competed for the CPU and every figure "
        "is slower than on a quiet machine.",
    ]
    return "\n".join(lines)


def write_docs(markdown: str, report: dict[str, Any]) -> None:
    DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
    DOCS_JSON.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    block = f"{BEGIN}\n{markdown}\n{END}"
    text = DOCS_MD.read_text(encoding="utf-8") if DOCS_MD.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS_MD.write_text(text, encoding="utf-8")
    print(f"Wrote {DOCS_MD.relative_to(ROOT)} and {DOCS_JSON.relative_to(ROOT)}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# Security overhead (--security): civicml vs civicml, authentication and encryption
# --------------------------------------------------------------------------------------

SEC_BEGIN = "<!-- security-serving:begin -->"
SEC_END = "<!-- security-serving:end -->"
SEC_JSON = ROOT / "docs" / "benchmarks" / "security-serving.json"
GOAL_OVERHEAD = 0.05  # issue 9: authentication (and encryption) cost at most 5 % of throughput

#: (arm, description, server environment, sends a bearer token)
SEC_ARMS: tuple[tuple[str, str, dict[str, str], bool], ...] = (
    ("plain", "auth none, encryption off",
     {"CIVICML_AUTH": "none", "CIVICML_ENCRYPT_ARTIFACTS": "false"}, False),
    ("encrypted", "auth none, encryption on",
     {"CIVICML_AUTH": "none", "CIVICML_ENCRYPT_ARTIFACTS": "true"}, False),
    ("secure", "auth token, encryption on",
     {"CIVICML_AUTH": "token", "CIVICML_ENCRYPT_ARTIFACTS": "true"}, True),
)  # fmt: skip


def create_token(home: Path, user: str, name: str) -> str:
    """A personal API token for ``user`` in ``home`` (embedded TokenService); its secret."""
    import civicml as cm

    with cm.connect(home=home, user=user) as ml:
        created = ml.tokens.create(name, expires_in_days=1)
    return str(created.secret)


def overhead(base: float, other: float) -> float:
    """Throughput lost going from ``base`` to ``other`` req/s (0.03 = 3 % fewer)."""
    return round(1.0 - other / base, 4)


def run_security(args: Any, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """Each arm ``--rounds`` times, interleaved (the order rotates every round)."""
    secret = create_token(ctx["home"], "ml-engineer", "serving-bench")
    runs: dict[str, list[dict[str, Any]]] = {arm[0]: [] for arm in SEC_ARMS}
    for rnd in range(args.rounds):
        order = SEC_ARMS[rnd % len(SEC_ARMS) :] + SEC_ARMS[: rnd % len(SEC_ARMS)]
        for arm, _, env, token in order:
            headers = {"Authorization": f"Bearer {secret}"} if token else None
            print(f"round {rnd + 1}/{args.rounds}: civicml {arm}", file=sys.stderr)
            with start_target("civicml", work, ctx, env, tag=f"-{arm}") as (port, path, bodies):
                if token:  # the server must really refuse a request without the token
                    _expect_refusal(port, path, bodies[0])
                check_answers("civicml", port, path, bodies, ctx, headers)
                measured: dict[str, Any] = {}
                for c in LEVELS:
                    before = common.cpu_seconds(ctx["server_pid"])
                    result = run_load(arm, port, path, bodies, c, args, work, headers)
                    spent = common.cpu_seconds(ctx["server_pid"]) - before
                    # warm-up requests are served too: the CPU is spread over all of them
                    result["server_cpu_us"] = round(spent / (args.warmup + args.requests) * 1e6, 1)
                    measured[f"c{c}"] = result
                runs[arm].append(measured)
    medians: dict[str, Any] = {}
    for arm, rounds in runs.items():
        medians[arm] = {
            f"c{c}": {
                "req_per_s": round(statistics.median(r[f"c{c}"]["req_per_s"] for r in rounds), 1),
                "p50_ms": round(
                    statistics.median(r[f"c{c}"]["latency_ms"]["p50"] for r in rounds), 3
                ),
                "p99_ms": round(
                    statistics.median(r[f"c{c}"]["latency_ms"]["p99"] for r in rounds), 3
                ),
                "errors": sum(r[f"c{c}"]["errors"] for r in rounds),
                "server_cpu_us": round(
                    statistics.median(r[f"c{c}"]["server_cpu_us"] for r in rounds), 1
                ),
            }
            for c in LEVELS
        }
    costs = {
        f"c{c}": {
            "encryption": overhead(
                medians["plain"][f"c{c}"]["req_per_s"], medians["encrypted"][f"c{c}"]["req_per_s"]
            ),
            "authentication": overhead(
                medians["encrypted"][f"c{c}"]["req_per_s"], medians["secure"][f"c{c}"]["req_per_s"]
            ),
            "both": overhead(
                medians["plain"][f"c{c}"]["req_per_s"], medians["secure"][f"c{c}"]["req_per_s"]
            ),
        }
        for c in LEVELS
    }
    pairs = {"encryption": ("plain", "encrypted"), "authentication": ("encrypted", "secure"),
             "both": ("plain", "secure")}  # fmt: skip
    per_round = {
        f"c{c}": {
            key: [
                overhead(runs[a][i][f"c{c}"]["req_per_s"], runs[b][i][f"c{c}"]["req_per_s"])
                for i in range(args.rounds)
            ]
            for key, (a, b) in pairs.items()
        }
        for c in LEVELS
    }
    cpu_pairs = {"authentication": ("encrypted", "secure"), "encryption": ("plain", "encrypted")}
    cpu_cost = {
        f"c{c}": {
            key: round(
                medians[b][f"c{c}"]["server_cpu_us"] / medians[a][f"c{c}"]["server_cpu_us"] - 1, 4
            )
            for key, (a, b) in cpu_pairs.items()
        }
        for c in LEVELS
    }
    return {
        "rounds": runs,
        "medians": medians,
        "overhead": costs,
        "per_round": per_round,
        "server_cpu_overhead": cpu_cost,
    }


def _expect_refusal(port: int, path: str, body: Any) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30):  # noqa: S310 (loopback)
            pass
    except urllib.error.HTTPError as err:
        if err.code == 401:
            return
        raise common.BenchmarkError(f"expected 401 without a token, got {err.code}") from None
    raise common.BenchmarkError("the auth=token server answered a request without a token")


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def render_security(report: dict[str, Any]) -> str:
    sec, cfg, m = report["security"], report["config"], report["machine"]
    med, cost = sec["medians"], sec["overhead"]
    lines = [
        "## Authentication and encryption overhead",
        "",
        "_Generated by `.venv/bin/python benchmarks/serving.py --security` and "
        "`.venv/bin/python benchmarks/tracking.py --security` — do not edit by hand. Raw "
        "figures: [`benchmarks/security-serving.json`](benchmarks/security-serving.json), "
        "[`benchmarks/security-tracking.json`](benchmarks/security-tracking.json)._",
        "",
        "Goal (issue 9): authentication costs at most 5 % of throughput on the serving and "
        "tracking benchmarks, and encryption at rest at most 5 % on serving. civicml is "
        "compared with itself, the arms interleaved in one run (the order rotates every "
        "round), each arm a fresh `civicml server` on the same home; medians over the rounds. "
        "Overhead = 1 - (req/s with ÷ req/s without); a negative figure is noise in the "
        "other direction.",
        "",
        "### Serving",
        "",
        f"- **Date:** {report['date']}; civicml source {report['civicml_source']}",
        f"- **Machine:** {m['cores']} cores, {m['cpu_model']}, {m['os']}, Python {m['python']}; "
        f"load average (1/5/15 min) {common._fmt_load(report.get('load_at_start'))} at start, "
        f"{common._fmt_load(m.get('load_average_1_5_15_at_end'))} at end (a shared machine: "
        "other work ran at the same time, so differences of a few % are within noise)",
        f"- **Load:** {cfg['rounds']} rounds {X} 3 arms; per arm and level {cfg['warmup']} "
        f"warm-up + {cfg['requests']:,} measured single-row requests at concurrency "
        f"{' and '.join(str(c) for c in LEVELS)} (the serving benchmark's load generator, "
        "capture at 100 %).",
        "",
        "| Arm | c | req/s (median) | p50 | p99 | server CPU per request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, desc, _, _ in SEC_ARMS:
        for c in LEVELS:
            f = med[arm][f"c{c}"]
            lines.append(
                f"| {arm} ({desc}) | {c} | {f['req_per_s']:,.0f} | {f['p50_ms']:.2f} ms | "
                f"{f['p99_ms']:.2f} ms | {f['server_cpu_us']:,.0f} µs | {f['errors']} |"
            )
    lines += [
        "",
        "| Cost | c=1 | c=16 | Per-round range, c=1 | Per-round range, c=16 | Goal ≤ 5 % |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, label in (
        ("authentication", 'Authentication (`auth = "token"`): secure vs encrypted'),
        ("encryption", "Encryption at rest (`encrypt_artifacts`): encrypted vs plain"),
        ("both", "Both: secure vs plain"),
    ):
        worst = max(cost[f"c{c}"][key] for c in LEVELS)
        met = "✅ met" if worst <= GOAL_OVERHEAD else "❌ not met"
        spread = [
            f"{_pct(min(sec['per_round'][f'c{c}'][key]))} … "
            f"{_pct(max(sec['per_round'][f'c{c}'][key]))}"
            for c in LEVELS
        ]
        lines.append(
            f"| {label} | {_pct(cost['c1'][key])} | {_pct(cost['c16'][key])} | "
            f"{spread[0]} | {spread[1]} | {met} |"
        )
    cpu = sec["server_cpu_overhead"]
    lines += [
        "",
        "| Server CPU per request | c=1 | c=16 | Goal ≤ 5 % |",
        "|---|---:|---:|---|",
    ]
    for key, label in (
        ("authentication", 'Authentication (`auth = "token"`): secure vs encrypted'),
        ("encryption", "Encryption at rest (`encrypt_artifacts`): encrypted vs plain"),
    ):
        worst = max(cpu[f"c{c}"][key] for c in LEVELS)
        met = "✅ met" if worst <= GOAL_OVERHEAD else "❌ not met"
        lines.append(f"| {label} | {_pct(cpu['c1'][key])} | {_pct(cpu['c16'][key])} | {met} |")
    lines += [
        "",
        "Server CPU per request is the server process's user + system CPU time (`/proc`) over "
        "the requests it answered, warm-up included: the work the server does, which other "
        "tenants of this machine do not inflate the way they inflate throughput. "
        "`benchmarks/auth_cost.py` (below) times the authentication layer alone.",
        "",
        "The overhead columns compare the medians; the per-round range is the same "
        "comparison within each round (the arms of one round run back to back), which shows "
        "how much of a difference this machine's noise makes.",
        "",
        "- **Authentication:** every request carries `Authorization: Bearer cml_…`, a "
        "personal token of the deploying user created for the run through the embedded "
        "`TokenService` (`ml.tokens.create`); the server verifies it from its in-process "
        "cache (no database hit per request after the first). Before measuring, the script "
        'checks that the `auth = "token"` server answers 401 to a request without it.',
        "- **Encryption:** the model files are decrypted once, when the endpoint loads, so "
        "the per-request path touches encryption only through data capture: captured events "
        "are appended to a plaintext spool and each rotated spool file is written to the "
        "artifact store, encrypted when `encrypt_artifacts` is on (in a background thread, "
        "not on the request). The model was registered with encryption on (the default) in "
        "all arms; the *plain* arm only turns it off for what the server writes.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Several serving processes (--workers N): civicml with N workers vs one
# --------------------------------------------------------------------------------------

WRK_BEGIN = "<!-- serving-workers:begin -->"
WRK_END = "<!-- serving-workers:end -->"
WRK_JSON = ROOT / "docs" / "benchmarks" / "serving-workers.json"
BATCH_BEGIN = "<!-- serving-batch:begin -->"
BATCH_END = "<!-- serving-batch:end -->"
BATCH_JSON = ROOT / "docs" / "benchmarks" / "serving-batch.json"
GOAL_WORKERS = 1.6  # issue 11: --workers 2 at least 1.6x one worker's throughput at c=16


def _wait_workers(port: int, count: int, timeout: float = 180.0) -> None:
    """Until ``count`` workers answer in /metrics (health answers once the first is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
            if sum(line.startswith("civicml_worker_info{") for line in text.splitlines()) == count:
                return
        time.sleep(0.2)
    raise common.BenchmarkError(f"{count} workers did not all start in {timeout:.0f} s")


def run_workers(args: Any, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """One worker and ``args.workers`` workers, each a fresh server on the same home,
    interleaved over ``--rounds`` (the order alternates); medians and per-round ratios."""
    arms = {1: "1 worker", args.workers: f"{args.workers} workers"}
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in arms}
    for rnd in range(args.rounds):
        for n in list(arms) if rnd % 2 == 0 else list(arms)[::-1]:
            print(f"round {rnd + 1}/{args.rounds}: civicml, {arms[n]}", file=sys.stderr)
            env = {"CIVICML_SERVER_WORKERS": str(n)}
            with start_target("civicml", work, ctx, env, tag=f"-w{n}") as (port, path, bodies):
                _wait_workers(port, n)
                check_answers("civicml", port, path, bodies, ctx)
                runs[n].append(
                    {
                        f"c{c}": run_load_wrk(f"w{n}", port, path, bodies, c, work)
                        if args.load == "wrk"
                        else run_load(f"w{n}", port, path, bodies, c, args, work)
                        for c in LEVELS
                    }
                )

    def median(n: int, c: int, key: str) -> float:
        values = [r[f"c{c}"][key] if key == "req_per_s" else r[f"c{c}"]["latency_ms"][key]
                  for r in runs[n]]  # fmt: skip
        return round(statistics.median(values), 3)

    medians = {
        n: {
            f"c{c}": {
                "req_per_s": median(n, c, "req_per_s"),
                "p50_ms": median(n, c, "p50"),
                "p99_ms": median(n, c, "p99"),
                "errors": sum(r[f"c{c}"]["errors"] for r in runs[n]),
            }
            for c in LEVELS
        }
        for n in arms
    }
    ratio = {
        f"c{c}": round(
            medians[args.workers][f"c{c}"]["req_per_s"] / medians[1][f"c{c}"]["req_per_s"], 3
        )
        for c in LEVELS
    }
    per_round = [
        round(runs[args.workers][i]["c16"]["req_per_s"] / runs[1][i]["c16"]["req_per_s"], 3)
        for i in range(args.rounds)
    ]
    return {
        "workers": args.workers,
        "load_generator": args.load,
        "medians": {str(n): m for n, m in medians.items()},
        "ratio": ratio,
        "per_round_c16": per_round,
        "goal": {"goal": f">= {GOAL_WORKERS:g}{X} one worker at c=16", "value": ratio["c16"],
                 "met": ratio["c16"] >= GOAL_WORKERS},
    }  # fmt: skip


def _load_note(wk: dict[str, Any]) -> str:
    """How the --workers load was generated, for the docs."""
    if wk.get("load_generator") == "wrk":
        return (
            f"Load: `wrk` (one thread, the request bodies cycled by a Lua script), "
            f"{WRK_WARMUP_SECONDS} s of warm-up and {WRK_SECONDS} s measured per level, on the "
            "same cores as the workers: a C client takes a small share of a core, where the "
            "Python client (`_serving_load.py`, `--load python`) took most of one and left a "
            f"second worker little to gain on two cores (with it, on 2026-12-06: 0.93{X})."
        )
    return "The load generator (the Python client) runs on the same cores as the workers."


def render_workers(report: dict[str, Any]) -> str:
    wk, cfg, m = report["workers"], report["config"], report["machine"]
    n = wk["workers"]
    lines = [
        "## Several serving processes",
        "",
        "_Generated by `.venv/bin/python benchmarks/serving.py --workers 2` — do not edit by "
        "hand. Raw figures: [`benchmarks/serving-workers.json`](benchmarks/serving-workers.json)._",
        "",
        f"`civicml server --workers {n}` vs one worker: the serving benchmark's model, endpoint "
        "(capture at 100 %) and request bodies, each arm a fresh server on the same home, "
        f"{cfg['rounds']} rounds interleaved, medians. {report['date']}, civicml "
        f"{report['civicml_source']}, {m['cores']} cores ({m['cpu_model']}), load average "
        f"{common._fmt_load(report.get('load_at_start'))} at start, "
        f"{common._fmt_load(m.get('load_average_1_5_15_at_end'))} at end. {_load_note(wk)}",
        "",
        "| workers | concurrency | req/s | p50 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ("1", str(n)):
        for c in LEVELS:
            f = wk["medians"][arm][f"c{c}"]
            lines.append(
                f"| {arm} | {c} | {f['req_per_s']:,.0f} | {f['p50_ms']:.2f} | "
                f"{f['p99_ms']:.2f} | {f['errors']} |"
            )
    goal = wk["goal"]
    rounds = ", ".join(f"{r:.2f}{X}" for r in wk["per_round_c16"])
    lines += [
        "",
        f"- {n} workers / 1 at c=16: {wk['ratio']['c16']:.2f}{X} (per round: {rounds}); "
        f"at c=1: {wk['ratio']['c1']:.2f}{X}.",
        f"- Goal {goal['goal']}: {'met' if goal['met'] else '**not met**'}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Serving benchmark: civicml vs mlflow models serve vs a bare Starlette app.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small run; docs are left alone")
    p.add_argument("--requests", type=int, default=None, help="measured requests per level")
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests per level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--targets", default="civicml,mlflow,floor", help="comma-separated subset to run"
    )
    p.add_argument("--write-docs", action="store_true", help="write docs even on partial runs")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--security",
        action="store_true",
        help="instead of the three targets: civicml vs civicml with auth none/token and "
        "encrypt_artifacts off/on, interleaved over --rounds; writes the 'Authentication "
        "and encryption overhead' section (unless --quick)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per arm with --security")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="instead of the three targets: civicml with this many worker processes vs one, "
        "interleaved over --rounds; writes the 'Several serving processes' section (unless "
        "--quick)",
    )
    p.add_argument(
        "--load",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator of --workers: wrk (C; Debian's wrk package) for a fixed "
        f"{WRK_SECONDS} s per level, or the Python client (benchmarks/_serving_load.py) for "
        "--requests per level; the default is wrk where it is installed",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=None,
        help="instead of the three targets: a batch job over this many rows vs a bare predict "
        "loop over the same chunks (benchmarks/_serving_batch.py), interleaved over --rounds; "
        "writes the 'Batch predictions' section (unless --quick)",
    )
    p.add_argument("--batch-chunk", type=int, default=50_000, help="rows per chunk (batch)")
    p.add_argument(
        "--fastfloor",
        action="store_true",
        help="instead of the three targets: civicml (one variant, and two weighted variants) vs "
        "Starlette + civicml's own fast path (benchmarks/_serving_fastfloor.py), per "
        "--algorithm, interleaved over --rounds; writes the 'Serving overhead against the "
        "fast-path floor' section (unless --quick)",
    )
    p.add_argument(
        "--algorithm",
        default="logistic,lightgbm",
        help="comma-separated fit_tabular algorithms for --fastfloor",
    )
    args = p.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 1000 if args.security else 2000)
    args.warmup = args.warmup or (50 if args.quick else 200)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.algorithms = [a.strip() for a in args.algorithm.split(",") if a.strip()]
    if args.workers is not None and args.workers < 2:
        p.error("--workers needs 2 or more (it is compared with one worker)")
    return args


OV_BEGIN = "<!-- serving-overhead:begin -->"
OV_END = "<!-- serving-overhead:end -->"
OV_JSON = ROOT / "docs" / "benchmarks" / "serving-overhead.json"


def publish(
    args: argparse.Namespace,
    markers: tuple[str, str],
    section: str,
    json_path: Path,
    report: dict[str, Any],
    stem: str,
    *,
    show: bool = False,
) -> None:
    """A full run rewrites its docs section and JSON; a quick one writes
    ``benchmarks/.work/<stem>-<time>.json`` and leaves the docs alone (``show``: print it)."""
    if not args.quick or args.write_docs:
        common.write_section(*markers, section, json_path, report)
        return
    out = WORKDIR / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if show:
        print(section, file=sys.stderr)
    print(f"Quick run: wrote {out} (docs untouched)", file=sys.stderr)


def _main_fastfloor(
    args: argparse.Namespace,
    work: Path,
    report: dict[str, Any],
    load_start: list[float],
    started: float,
) -> None:
    """``--fastfloor``: civicml against Starlette + its own fast path, per algorithm."""
    from _serving_overhead import render_overhead, run_overhead

    def start_civicml(ctx: dict[str, Any]) -> Iterator[int]:
        @contextlib.contextmanager
        def started_server() -> Iterator[int]:
            with start_target("civicml", work, ctx, tag="-overhead") as (port, _, _):
                yield port

        return started_server()

    report["config"].update(rounds=args.rounds, algorithms=args.algorithms)
    report["load_at_start"] = load_start
    report["overhead"] = run_overhead(
        args, work, common, BENCH, train, start_civicml, run_load, LEVELS
    )
    for goal in report["overhead"]["goals"]:
        print(f"  {goal['algorithm']}: goal {goal['goal']}: {goal['value']} met={goal['met']}",
              file=sys.stderr)  # fmt: skip
    report["machine"] = common.machine_info(work)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    section = render_overhead(report, common._fmt_load)
    publish(args, (OV_BEGIN, OV_END), section, OV_JSON, report, "serving-overhead", show=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    WORKDIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serving-", dir=WORKDIR))
    failed = True
    try:
        common.check_civicml()
        report: dict[str, Any] = {
            "benchmark": "serving",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "civicml_source": common.civicml_source(ROOT),
            "config": {
                "requests": args.requests,
                "warmup": args.warmup,
                "levels": list(LEVELS),
                "features": FEATURES,
                "train_rows": TRAIN_ROWS,
                "seed": args.seed,
                "quick": args.quick,
            },
        }
        print("Training the model with civicml ...", file=sys.stderr)
        model, model_dir, records = train(work, args.seed)
        ctx: dict[str, Any] = {
            "model": model,
            "model_dir": model_dir,
            "records": records,
            "columns": model.feature_names,
        }
        report["predict"] = time_predict(model, records, reps=50 if args.quick else 300)
        p = report["predict"]
        print(
            f"  predict_proba: 1 row {p['rows_1']['median_ms']:.3f} ms, 1,000 rows "
            f"{p['rows_1000']['median_ms']:.3f} ms",
            file=sys.stderr,
        )
        if args.batch_rows:
            from _serving_batch import render_batch, run_batch

            report["load_at_start"] = load_start
            report["batch"] = run_batch(
                args.batch_rows, args.batch_chunk, args.rounds, work, model, model_dir,
                make_data, args.seed,
            )  # fmt: skip
            b = report["batch"]
            print(f"  median s: {b['median_s']}", file=sys.stderr)
            print(f"  goal {b['goal']['goal']}: {b['goal']['value']} met={b['goal']['met']}",
                  file=sys.stderr)  # fmt: skip
            report["machine"] = common.machine_info(work)
            report["elapsed_s"] = round(time.monotonic() - started, 1)
            section = render_batch(report, common._fmt_load)
            publish(args, (BATCH_BEGIN, BATCH_END), section, BATCH_JSON, report, "serving-batch",
                    show=True)  # fmt: skip
            failed = False
            return 0
        if args.fastfloor:
            _main_fastfloor(args, work, report, load_start, started)
            failed = False
            return 0
        if "civicml" in args.targets or args.security or args.workers:
            ctx["home"] = work / "civicml-home"
            deploy_civicml(ctx["home"], model, model_dir)
        if args.security:
            report["config"]["rounds"] = args.rounds
            report["load_at_start"] = load_start
            report["security"] = run_security(args, work, ctx)
            for c in LEVELS:
                print(
                    f"  overhead c={c}: {report['security']['overhead'][f'c{c}']}", file=sys.stderr
                )
            report["machine"] = common.machine_info(work)
            report["elapsed_s"] = round(time.monotonic() - started, 1)
            publish(args, (SEC_BEGIN, SEC_END), render_security(report), SEC_JSON, report,
                    "security-serving")  # fmt: skip
            print(f"Done in {report['elapsed_s']:.0f} s", file=sys.stderr)
            failed = False
            return 0
        if args.workers:
            report["config"]["rounds"] = args.rounds
            report["load_at_start"] = load_start
            report["workers"] = run_workers(args, work, ctx)
            goal = report["workers"]["goal"]
            print(f"  goal {goal['goal']}: {goal['value']} met={goal['met']}", file=sys.stderr)
            report["machine"] = common.machine_info(work)
            report["elapsed_s"] = round(time.monotonic() - started, 1)
            publish(args, (WRK_BEGIN, WRK_END), render_workers(report), WRK_JSON, report,
                    "serving-workers")  # fmt: skip
            failed = False
            return 0
        if "mlflow" in args.targets:
            report["mlflow_version"] = common.ensure_mlflow_venv()
            import sklearn

            ctx["mlflow_model"] = work / "mlflow-model"
            subprocess.run(
                [
                    str(common.mlflow_python()),
                    str(TO_MLFLOW),
                    str(model_dir.parent / "pipeline.joblib"),
                    str(work / "sample.csv"),
                    str(ctx["mlflow_model"]),
                    sklearn.__version__,
                ],
                check=True,
                timeout=600,
                env=common.base_env(),
            )
        results: dict[str, dict[str, Any]] = {}
        for name in ("floor", "fastfloor", "civicml", "mlflow"):
            if name not in args.targets:
                continue
            with start_target(name, work, ctx) as (port, path, bodies):
                check_answers(name, port, path, bodies, ctx)
                results[name] = {
                    f"c{c}": run_load(name, port, path, bodies, c, args, work) for c in LEVELS
                }
        report["results"] = results
        if "civicml" in results:
            report["summary"] = summarize(results)
            for goal in report["summary"]["goals"].values():
                print(f"  goal {goal['goal']}: {goal['value']} met={goal['met']}", file=sys.stderr)
        report["machine"] = common.machine_info(work)
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        full = not args.quick and set(args.targets) >= {"civicml", "mlflow", "floor"}
        if (full or args.write_docs) and "summary" in report:
            write_docs(render(report), report)
        else:
            out = WORKDIR / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
            out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            print(f"Partial/quick run: wrote {out} (docs untouched)", file=sys.stderr)
        print(f"Done in {report['elapsed_s']:.0f} s", file=sys.stderr)
        failed = False
        return 0
    except (common.BenchmarkError, subprocess.SubprocessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep or failed:
            print(f"Work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
