"""Benchmark worker: runs the tracking workloads for ONE system in its own interpreter.

Started by ``benchmarks/tracking.py``; not meant to be run by hand (but it can be)::

    <python> benchmarks/_worker.py --system floor|mlflow|civicml --mode embedded|remote \
        --out result.json [--target PATH_OR_URL] [--n 10000] [--runs 200] ...

Only the standard library is imported at module level, so the same file runs under the
civicml virtualenv (``--system civicml`` / ``floor``) and under the MLflow virtualenv
(``--system mlflow``); the two libraries never share an interpreter.

Every workload is timed with ``time.perf_counter`` around exactly the measured operations
(set-up such as creating the experiment/run is outside the timed region) and the raw
per-repetition figures are written as JSON to ``--out``; medians and ratios are computed
by the orchestrator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEARCH_FILTER = "metrics.m0 > 0.5"
SEARCH_ORDER = "metrics.m1 DESC"
SEARCH_MAX_RESULTS = 1000
BATCH_SIZE = 1000
PARAMS_PER_RUN = 10
METRICS_PER_RUN = 10
WARMUP_CALLS = 50


class WorkloadError(RuntimeError):
    """A workload did not behave as the benchmark expects (wrong API, wrong results)."""


# --------------------------------------------------------------------------------------
# Deterministic data shared by all systems
# --------------------------------------------------------------------------------------


def single_values(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def batch_rows(n: int, seed: int) -> list[list[tuple[str, float, int]]]:
    """``n`` values as batches of ``BATCH_SIZE`` distinct keys (m0..m999), one step each.

    The same shape is used for every system: MLflow ``log_batch`` with 1,000 ``Metric``
    entries, civicml ``run.log_metrics({1,000 keys}, step=s)``, floor ``executemany`` of
    1,000 rows.
    """
    rng = random.Random(seed)
    batches: list[list[tuple[str, float, int]]] = []
    for step, start in enumerate(range(0, n, BATCH_SIZE)):
        size = min(BATCH_SIZE, n - start)
        batches.append([(f"m{j}", rng.random(), step) for j in range(size)])
    return batches


def run_data(n_runs: int, seed: int) -> list[tuple[dict[str, str], dict[str, float]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n_runs):
        params = {f"p{j}": f"value-{i}-{j}" for j in range(PARAMS_PER_RUN)}
        metrics = {f"m{j}": rng.random() for j in range(METRICS_PER_RUN)}
        out.append((params, metrics))
    return out


def expected_hits(data: list[tuple[dict[str, str], dict[str, float]]]) -> tuple[int, float]:
    hits = [m for _, m in data if m["m0"] > 0.5]
    top = max((m["m1"] for m in hits), default=float("nan"))
    return len(hits), top


def timed_single(
    log: Callable[[float, int], Any], values: list[float], budget_s: float
) -> tuple[int, float]:
    """Call ``log(value, step)`` for each value; stop early once ``budget_s`` is spent.

    Returns (calls made, seconds). The budget only matters for slow systems (MLflow's
    one-commit-per-call path); everyone else finishes all values well inside it.
    """
    perf = time.perf_counter
    t0 = perf()
    deadline = t0 + budget_s
    done = 0
    for step, value in enumerate(values):
        log(value, step)
        done += 1
        if (done & 63) == 0 and perf() > deadline:
            break
    return done, perf() - t0


# --------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------


class Floor:
    """Raw Python ``sqlite3``: WAL + synchronous=FULL, one plain metrics table."""

    name = "floor"

    def __init__(self, target: str, mode: str) -> None:
        del mode
        self.dir = Path(target)
        self.dir.mkdir(parents=True, exist_ok=True)

    def versions(self) -> dict[str, str]:
        return {"sqlite": sqlite3.sqlite_version}

    def _connect(self, rep: int, label: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.dir / f"floor-{label}-{rep}.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS metrics ("
            " run_id TEXT NOT NULL, key TEXT NOT NULL, value REAL NOT NULL,"
            " step INTEGER NOT NULL, timestamp INTEGER NOT NULL)"
        )
        conn.commit()
        return conn

    def single(self, rep: int, values: list[float], budget_s: float) -> dict[str, Any]:
        """(a) one INSERT + COMMIT per value: every value durable before the next call."""
        conn = self._connect(rep, "single")
        sql = "INSERT INTO metrics (run_id, key, value, step, timestamp) VALUES (?, ?, ?, ?, ?)"

        def log(value: float, step: int) -> None:
            conn.execute(sql, ("run-1", "loss", value, step, int(time.time() * 1000)))
            conn.commit()

        done, secs = timed_single(log, values, budget_s)
        count = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        conn.close()
        if count != done:
            raise WorkloadError(f"floor single: {count} rows stored, {done} logged")
        return {"n": done, "seconds": secs}

    def batch(self, rep: int, batches: list[list[tuple[str, float, int]]]) -> dict[str, Any]:
        """(b) executemany of 1,000 rows + COMMIT per batch."""
        conn = self._connect(rep, "batch")
        sql = "INSERT INTO metrics (run_id, key, value, step, timestamp) VALUES (?, ?, ?, ?, ?)"
        t0 = time.perf_counter()
        for rows in batches:
            ts = int(time.time() * 1000)
            conn.executemany(sql, [("run-1", k, v, s, ts) for k, v, s in rows])
            conn.commit()
        secs = time.perf_counter() - t0
        n = sum(len(b) for b in batches)
        count = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        conn.close()
        if count != n:
            raise WorkloadError(f"floor batch: {count} rows stored, {n} logged")
        return {"n": n, "seconds": secs}

    def close(self) -> None:
        pass


class Mlflow:
    """MLflow fluent/client API against ``MLFLOW_TRACKING_URI`` (sqlite:/// or http://)."""

    name = "mlflow"

    def __init__(self, target: str, mode: str) -> None:
        os.environ["MLFLOW_TRACKING_URI"] = target
        # Measure single-call logging the way it behaves by default (synchronous).
        os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        import mlflow
        from mlflow import MlflowClient

        self.mlflow = mlflow
        self.mode = mode
        mlflow.set_tracking_uri(target)
        self.client = MlflowClient(tracking_uri=target)
        # Warm-up: schema creation / connection pool / HTTP session outside the timings.
        exp = self.client.create_experiment(f"warmup-{os.getpid()}")
        with mlflow.start_run(experiment_id=exp):
            for i in range(WARMUP_CALLS):
                mlflow.log_metric("warm", 0.0, step=i)

    def versions(self) -> dict[str, str]:
        import sqlalchemy

        return {
            "mlflow": self.mlflow.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "sqlite": sqlite3.sqlite_version,
        }

    def _experiment(self, rep: int, label: str) -> str:
        return str(self.client.create_experiment(f"{label}-{rep}-{os.getpid()}"))

    def single(self, rep: int, values: list[float], budget_s: float) -> dict[str, Any]:
        mlflow = self.mlflow
        with mlflow.start_run(experiment_id=self._experiment(rep, "single")) as run:

            def log(value: float, step: int) -> None:
                mlflow.log_metric("loss", value, step=step)

            done, secs = timed_single(log, values, budget_s)
            stored = len(self.client.get_metric_history(run.info.run_id, "loss"))
        if stored != done:
            raise WorkloadError(f"mlflow single: {stored} values stored, {done} logged")
        return {"n": done, "seconds": secs}

    def batch(self, rep: int, batches: list[list[tuple[str, float, int]]]) -> dict[str, Any]:
        from mlflow.entities import Metric

        client = self.client
        run = client.create_run(self._experiment(rep, "batch"))
        run_id = run.info.run_id
        t0 = time.perf_counter()
        for rows in batches:
            ts = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, s in rows])
        secs = time.perf_counter() - t0
        client.set_terminated(run_id)
        n = sum(len(b) for b in batches)
        got = client.get_metric_history(run_id, "m0")
        if len(got) != len(batches):
            raise WorkloadError(f"mlflow batch: {len(got)} m0 values stored, {len(batches)}")
        return {"n": n, "seconds": secs}

    def runs(self, rep: int, data: list[tuple[dict[str, str], dict[str, float]]]) -> dict[str, Any]:
        mlflow = self.mlflow
        exp = self._experiment(rep, "runs")
        self._search_exp = exp
        t0 = time.perf_counter()
        for params, metrics in data:
            with mlflow.start_run(experiment_id=exp):
                mlflow.log_params(params)
                mlflow.log_metrics(metrics, step=0)
        secs = time.perf_counter() - t0
        return {"n": len(data), "seconds": secs}

    def search(
        self, rep: int, data: list[tuple[dict[str, str], dict[str, float]]], n_searches: int
    ) -> dict[str, Any]:
        del rep
        client = self.client
        exp = self._search_exp
        want, top = expected_hits(data)
        lat: list[float] = []
        res: Any = []
        for _ in range(n_searches):
            t0 = time.perf_counter()
            res = client.search_runs(
                [exp],
                filter_string=SEARCH_FILTER,
                order_by=[SEARCH_ORDER],
                max_results=SEARCH_MAX_RESULTS,
            )
            lat.append(time.perf_counter() - t0)
        if len(res) != want:
            raise WorkloadError(f"mlflow search: {len(res)} hits, expected {want}")
        if want and abs(res[0].data.metrics["m1"] - top) > 1e-12:
            raise WorkloadError("mlflow search: results not ordered by metrics.m1 DESC")
        return {"latencies": lat, "hits": len(res), "order_checked": True}

    def close(self) -> None:
        pass


class Civicml:
    """civicml SDK: embedded (``connect(home=...)``) or remote (``connect(url)``)."""

    name = "civicml"

    def __init__(self, target: str, mode: str) -> None:
        try:
            import civicml as cm
        except ImportError as exc:
            raise WorkloadError(f"`import civicml` failed: {exc!r}") from exc
        self.cm = cm
        self.mode = mode
        connect = _api(cm, "connect", "civicml.connect")
        if mode == "embedded":
            self.ml = _call("cm.connect(home=...)", lambda: connect(home=target))
        else:
            self.ml = _call(f"cm.connect({target!r})", lambda: connect(target))
        # Warm-up (also the API pre-flight): every call the benchmark uses, once.
        proj = _call("ml.project('warmup')", lambda: self.ml.project(f"warmup-{os.getpid()}"))
        run = _call(
            "proj.start_run(experiment='warmup')", lambda: proj.start_run(experiment="warmup")
        )
        _call("run.id", lambda: run.id)
        for i in range(WARMUP_CALLS):
            _call("run.log_metric(k, v, step=i)", lambda i=i: run.log_metric("warm", 0.0, step=i))
        _call(
            "run.log_metric(k, v, step=i, synchronous=True)",
            lambda: run.log_metric("warm", 0.0, step=WARMUP_CALLS, synchronous=True),
        )
        _call("run.log_metrics({...}, step=0)", lambda: run.log_metrics({"a": 1.0}, step=0))
        _call("run.log_param(k, v)", lambda: run.log_param("lr", 0.1))
        _call("run.log_params({...})", lambda: run.log_params({"b": "x"}))
        _call("run.flush()", run.flush)
        _call("run.end()", run.end)
        with _call(
            "proj.start_run(...) as context manager", lambda: proj.start_run(experiment="warmup")
        ) as ctx_run:
            ctx_run.log_metric("warm", 1.0, step=0)
        found = _call(
            "proj.runs.search(filter=..., order_by=[...], max_results=...)",
            lambda: proj.runs.search(
                filter="metrics.a > 0.5", order_by=["metrics.a DESC"], max_results=10
            ),
        )
        if len(list(found)) != 1:
            raise WorkloadError(
                "civicml warm-up: proj.runs.search(filter='metrics.a > 0.5') returned "
                f"{len(list(found))} runs, expected 1"
            )

    def versions(self) -> dict[str, str]:
        return {
            "civicml": str(getattr(self.cm, "__version__", _dist_version("civicml"))),
            "sqlite": sqlite3.sqlite_version,
        }

    def _project(self, rep: int, label: str) -> Any:
        return self.ml.project(f"{label}-{rep}-{os.getpid()}")

    def _single(
        self, rep: int, values: list[float], budget_s: float, synchronous: bool
    ) -> dict[str, Any]:
        label = "single-sync" if synchronous else "single"
        run = self._project(rep, label).start_run(experiment=label)
        if synchronous:

            def log(value: float, step: int) -> None:
                run.log_metric("loss", value, step=step, synchronous=True)

        else:

            def log(value: float, step: int) -> None:
                run.log_metric("loss", value, step=step)

        perf = time.perf_counter
        t0 = perf()
        done, _ = timed_single(log, values, budget_s)
        run.flush()  # durable: the timed region ends when everything logged is on disk
        secs = perf() - t0
        run.end()
        return {"n": done, "seconds": secs}

    def single(self, rep: int, values: list[float], budget_s: float) -> dict[str, Any]:
        return self._single(rep, values, budget_s, synchronous=False)

    def single_sync(self, rep: int, values: list[float], budget_s: float) -> dict[str, Any]:
        return self._single(rep, values, budget_s, synchronous=True)

    def batch(self, rep: int, batches: list[list[tuple[str, float, int]]]) -> dict[str, Any]:
        run = self._project(rep, "batch").start_run(experiment="batch")
        dicts = [({k: v for k, v, _ in rows}, rows[0][2]) for rows in batches]
        t0 = time.perf_counter()
        for metrics, step in dicts:
            run.log_metrics(metrics, step=step)
        run.flush()
        secs = time.perf_counter() - t0
        run.end()
        return {"n": sum(len(b) for b in batches), "seconds": secs}

    def runs(self, rep: int, data: list[tuple[dict[str, str], dict[str, float]]]) -> dict[str, Any]:
        proj = self._project(rep, "runs")
        self._search_proj = proj
        t0 = time.perf_counter()
        for params, metrics in data:
            with proj.start_run(experiment="runs") as run:
                run.log_params(params)
                run.log_metrics(metrics, step=0)
            # Leaving the block calls run.end(), which flushes first: like MLflow's end_run,
            # a finished run's data is durable.
        secs = time.perf_counter() - t0
        return {"n": len(data), "seconds": secs}

    def search(
        self, rep: int, data: list[tuple[dict[str, str], dict[str, float]]], n_searches: int
    ) -> dict[str, Any]:
        del rep
        proj = self._search_proj
        want, top = expected_hits(data)
        lat: list[float] = []
        res: list[Any] = []
        for _ in range(n_searches):
            t0 = time.perf_counter()
            res = proj.runs.search(
                filter=SEARCH_FILTER, order_by=[SEARCH_ORDER], max_results=SEARCH_MAX_RESULTS
            )
            lat.append(time.perf_counter() - t0)
        res = list(res)
        if len(res) != want:
            raise WorkloadError(f"civicml search: {len(res)} hits, expected {want}")
        first_m1 = _run_metric(res[0], "m1") if res else None
        if first_m1 is not None and abs(first_m1 - top) > 1e-9:
            raise WorkloadError("civicml search: results not ordered by metrics.m1 DESC")
        return {"latencies": lat, "hits": len(res), "order_checked": first_m1 is not None}

    def close(self) -> None:
        self.ml.close()


def _run_metric(run: Any, key: str) -> float | None:
    """Best effort: read a metric off a search result (the result type is not pinned)."""
    for holder in (
        getattr(run, "metrics", None),
        getattr(getattr(run, "data", None), "metrics", None),
    ):
        if holder is None:
            continue
        try:
            value = holder[key]
        except (KeyError, TypeError, IndexError):
            continue
        if isinstance(value, int | float):
            return float(value)
        for attr in ("value", "last", "latest"):
            inner = getattr(value, attr, None)
            if isinstance(inner, int | float):
                return float(inner)
    return None


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _api(obj: Any, attr: str, label: str) -> Any:
    try:
        return getattr(obj, attr)
    except AttributeError as exc:
        raise WorkloadError(f"civicml API missing: {label} ({exc})") from exc


def _call(label: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        raise WorkloadError(
            f"civicml API call failed: {label}: {type(exc).__name__}: {exc}"
        ) from exc


ADAPTERS: dict[str, type[Floor] | type[Mlflow] | type[Civicml]] = {
    "floor": Floor,
    "mlflow": Mlflow,
    "civicml": Civicml,
}


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    adapter = ADAPTERS[args.system](args.target, args.mode)
    out: dict[str, Any] = {
        "system": args.system,
        "mode": args.mode,
        "versions": adapter.versions(),
        "python": platform.python_version(),
        "params": {
            "n": args.n,
            "runs": args.runs,
            "searches": args.searches,
            "reps": args.reps,
            "single_budget_s": args.single_budget,
            "batch_size": BATCH_SIZE,
        },
        "reps": [],
    }
    try:
        for rep in range(args.reps):
            seed = 1000 + rep
            values = single_values(args.n, seed)
            batches = batch_rows(args.n, seed)
            data = run_data(args.runs, seed)
            figures: dict[str, Any] = {}
            figures["single"] = adapter.single(rep, values, args.single_budget)
            if isinstance(adapter, Civicml):
                figures["single_sync"] = adapter.single_sync(rep, values, args.single_budget)
            figures["batch"] = adapter.batch(rep, batches)
            if not isinstance(adapter, Floor):
                figures["runs"] = adapter.runs(rep, data)
                figures["search"] = adapter.search(rep, data, args.searches)
            out["reps"].append(figures)
            print(
                f"[{args.system}/{args.mode}] rep {rep + 1}/{args.reps}: "
                + ", ".join(_short(k, v) for k, v in figures.items()),
                file=sys.stderr,
                flush=True,
            )
    finally:
        adapter.close()
    return out


def _short(name: str, fig: dict[str, Any]) -> str:
    if "latencies" in fig:
        return f"{name} {statistics.median(fig['latencies']) * 1000:.1f} ms"
    return f"{name} {fig['n'] / fig['seconds']:,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", choices=sorted(ADAPTERS), required=True)
    p.add_argument("--mode", choices=["embedded", "remote"], default="embedded")
    p.add_argument("--target", required=True, help="directory, sqlite:/// URI or http URL")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--searches", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--single-budget", type=float, default=600.0)
    args = p.parse_args(argv)
    try:
        result = run_all(args)
    except WorkloadError as exc:
        result = {"system": args.system, "mode": args.mode, "error": str(exc)}
        args.out.write_text(json.dumps(result, indent=1))
        print(f"[{args.system}/{args.mode}] ERROR: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        result = {
            "system": args.system,
            "mode": args.mode,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        args.out.write_text(json.dumps(result, indent=1))
        traceback.print_exc()
        return 3
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
