"""Where a cold civicml pipeline spends the time the bare functions do not: its critical path.

A diagnostic beside ``benchmarks/pipelines.py`` (which gives the headline figure, cold overhead
over the bare calls): the same 5-step pipeline (``benchmarks/_pipelines_work.py``), civicml
only, cold (a new ``nonce`` every execution: every step runs and stores its outputs), with each
step's function timed inside the execution. Per execution it splits the wall time into

- **start**: ``ml.pipelines.run`` called → the first step's function starts (the execution's
  records, the first cache look-up, the first run record);
- **a → b**: step ``a``'s function returned → step ``b``'s started (encoding and hashing
  ``a``'s output, ``b``'s cache look-up, decoding its inputs, creating its run);
- **end**: the last function returned → ``run`` returned (storing the last outputs durably,
  the step and execution records, reading the execution back);
- **functions**: the step functions' own time inside the execution, against the same
  functions called bare in the same process just before (what they lose to civicml's threads
  storing earlier outputs meanwhile is the difference);

and reports the median of each over ``--reps`` executions, with the process CPU time of the
bare calls and of the execution. Nothing is written to docs/: it prints, and with ``--json``
writes the figures to a file.

    .venv/bin/python benchmarks/pipeline_timeline.py                  # 15 executions
    .venv/bin/python benchmarks/pipeline_timeline.py --blas-threads 1 # BLAS on one thread

``--blas-threads`` sets ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` before
NumPy loads: on two cores the ``train`` step's BLAS threads and civicml's storing compete for
the second core.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _timed(fn: Callable[..., Any], log: list[tuple[str, float, float]]) -> Callable[..., Any]:
    """``fn``, appending (name, start, end) to ``log`` at every call."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            log.append((fn.__name__, started, time.perf_counter()))

    return inner


def _bare_timer(fn: Callable[..., Any], into: dict[str, float]) -> Callable[..., Any]:
    """``fn``, recording its time under its name in ``into``."""

    def inner(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            into[fn.__name__] = time.perf_counter() - started

    return inner


def measure(rows: int, reps: int) -> dict[str, Any]:
    """Run the pipeline cold ``reps`` times (after two warm-up executions); per execution the
    phases of its wall time, in seconds, and the CPU time of it and of the bare calls."""
    sys.path.insert(0, str(BENCH))
    import _pipelines_work as work

    import civicml as cm

    log: list[tuple[str, float, float]] = []
    steps = {name: cm.step(_timed(getattr(work, name), log)) for name in work.STEPS}

    @cm.pipeline(name="timeline-5step")
    def five(path: str = "", nonce: str = "") -> None:
        raw = steps["load"](path, nonce)
        feats = steps["featurize"](steps["clean"](raw, nonce), nonce)
        steps["score"](feats, steps["train"](feats, nonce), nonce)

    executions: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="civicml-timeline-") as tmp:
        data = Path(tmp) / "data.csv"
        work.make_csv(data, rows)
        path = str(data)
        ml = cm.connect(home=Path(tmp) / "home", user="bench")
        ml.project("bench")
        for i in range(2):
            ml.pipelines.run(five, project="bench", params={"path": path, "nonce": f"warm-{i}"})
        for rep in range(reps):
            bare: dict[str, float] = {}
            cpu0 = time.process_time()
            calls_bare = {name: _bare_timer(getattr(work, name), bare) for name in work.STEPS}
            feats = calls_bare["featurize"](
                calls_bare["clean"](calls_bare["load"](path, ""), ""), ""
            )
            calls_bare["score"](feats, calls_bare["train"](feats, ""), "")
            cpu1 = time.process_time()
            log.clear()
            started = time.perf_counter()
            execution = ml.pipelines.run(
                five, project="bench", params={"path": path, "nonce": f"cold-{rep}"}
            )
            ended = time.perf_counter()
            cpu2 = time.process_time()
            if execution.status.value != "succeeded" or len(log) != len(work.STEPS):
                raise RuntimeError(f"execution {execution.id} ended {execution.status.value}")
            calls = sorted(log, key=lambda call: call[1])
            phases = {"start": calls[0][1] - started}
            for (a, _, a_end), (b, b_start, _) in itertools.pairwise(calls):
                phases[f"{a} -> {b}"] = b_start - a_end
            phases["end"] = ended - calls[-1][2]
            phases["functions in the execution"] = sum(end - begin for _, begin, end in calls)
            phases["functions bare"] = sum(bare.values())
            phases["execution wall"] = ended - started
            phases["execution CPU"] = cpu2 - cpu1
            phases["bare CPU"] = cpu1 - cpu0
            executions.append(phases)
    return {"rows": rows, "reps": reps, "executions": executions}


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The median of every phase over the executions (seconds)."""
    executions = result["executions"]
    return {k: statistics.median(e[k] for e in executions) for k in executions[0]}


def render(medians: dict[str, float]) -> str:
    lines = [f"{'phase':32} {'median ms':>10}"]
    for name, seconds in medians.items():
        lines.append(f"{name:32} {seconds * 1000:10.1f}")
    path = sum(v for k, v in medians.items() if k in {"start", "end"} or " -> " in k)
    extra = medians["functions in the execution"] - medians["functions bare"]
    bare = medians["functions bare"]
    lines.append(
        f"civicml's own critical path (start + gaps + end): {path * 1000:.1f} ms; the "
        f"functions' own time inside the execution differs from bare by {extra * 1000:+.1f} ms "
        f"({(path + extra) / bare:+.0%} of the bare calls in all)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the CSV (50,000)")
    parser.add_argument("--reps", type=int, default=15, help="cold executions (15)")
    parser.add_argument("--blas-threads", type=int, default=None, help="BLAS threads")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.rows < 100 or args.reps < 1:
        parser.error("--rows takes at least 100 and --reps at least 1")
    if args.blas_threads is not None:
        if "numpy" in sys.modules:  # pragma: no cover - run as a script, it is not
            parser.error("--blas-threads must be set before NumPy loads")
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.blas_threads)
    result = measure(args.rows, args.reps)
    medians = summarise(result)
    print(render(medians))
    if args.json is not None:
        args.json.write_text(json.dumps({**result, "medians": medians}, indent=2) + "\n")


if __name__ == "__main__":
    main()
