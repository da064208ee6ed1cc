"""Tuning benchmark: ``cm.tune`` vs plain Optuna on the same 50 LightGBM trials.

Run from the repository root with the civicml virtualenv (Optuna and LightGBM are civicml
dependencies, so there is no other virtualenv)::

    .venv/bin/python benchmarks/tuning.py            # 50 trials x 3 rounds, rewrites docs
    .venv/bin/python benchmarks/tuning.py --quick    # 15 trials x 1 round, no docs

Arms, interleaved in ``--rounds`` rounds (order rotating), medians reported:

- **optuna**: what a user writes without civicml — an in-memory ``optuna`` study with
  ``TPESampler(seed=0)``; each trial a seeded, stratified ``train_test_split`` (20 % held out),
  ``lightgbm.LGBMClassifier`` (``n_jobs=1``: one thread) fitted and scored (ROC AUC);
- **fit_tabular**: the same study, each trial ``civicml.training.fit_tabular`` from scratch
  (civicml's one-off training path: signature, split, preprocessing, metrics) but no tracking;
- **civicml**: ``cm.tune(dataset, project=..., strategy="tpe", seed=0, max_trials=50)`` on the
  embedded platform (a fresh home per round): every trial a run with params, metrics, the model
  files and lineage, a parent run with the leaderboard.

All arms get the same data, search space, sampler and seed, and LightGBM the same parameters, so
they run the same trials: the script checks that every arm sampled the same parameters and got
the same values. Goal (issue 10): civicml's overhead over plain Optuna ≤ 10 %.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
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
DOCS_JSON = ROOT / "docs" / "benchmarks" / "tuning.json"
BEGIN, END = "<!-- tuning:begin -->", "<!-- tuning:end -->"
GOAL_OVERHEAD = 0.10
ARMS = ("optuna", "fit_tabular", "civicml")
TARGET = "eligible"
SEED = 0
X = "\N{MULTIPLICATION SIGN}"
#: LightGBM as civicml's defaults set it (training/tabular.py), with fewer trees: small work.
LGBM_FIXED = {
    "n_estimators": 100,
    "n_jobs": 1,
    "random_state": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


def make_frame(rows: int, features: int = 20) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(rows, features))
    weights = rng.normal(size=features)
    logit = x @ weights / math.sqrt(features) + 0.3 * x[:, 0] * x[:, 1] + rng.normal(size=rows)
    frame = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(features)])
    frame[TARGET] = (logit > 0).astype(int)
    return frame


def space_spec() -> dict[str, tuple[str, Any, Any, bool]]:
    """name -> (kind, low, high, log): the one space every arm searches."""
    return {
        "num_leaves": ("int", 4, 64, False),
        "learning_rate": ("float", 0.01, 0.3, True),
        "min_child_samples": ("int", 5, 50, False),
        "colsample_bytree": ("float", 0.5, 1.0, False),
    }


def _suggest(trial: Any) -> dict[str, Any]:
    out = {}
    for name, (kind, low, high, log) in space_spec().items():
        if kind == "int":
            out[name] = trial.suggest_int(name, low, high, log=log)
        else:
            out[name] = trial.suggest_float(name, low, high, log=log)
    return out


def _study(objective: Any, trials: int) -> tuple[float, list[tuple[dict[str, Any], float]]]:
    import optuna

    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=optuna.samplers.TPESampler(seed=SEED),
        direction="maximize",
    )
    started = time.perf_counter()
    study.optimize(lambda t: objective(_suggest(t)), n_trials=trials)
    elapsed = time.perf_counter() - started
    return elapsed, [(dict(t.params), float(t.value)) for t in study.trials]


def arm_optuna(frame: Any, trials: int, _work: Path) -> tuple[float, list[Any]]:
    from lightgbm import LGBMClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    def objective(params: dict[str, Any]) -> float:
        x, y = frame.drop(columns=[TARGET]), frame[TARGET]
        x_train, x_valid, y_train, y_valid = train_test_split(
            x,
            y,
            test_size=math.ceil(len(frame) * 0.2),
            random_state=SEED,
            shuffle=True,
            stratify=y,
        )
        model = LGBMClassifier(**LGBM_FIXED, **params).fit(x_train, y_train)
        return float(roc_auc_score(y_valid, model.predict_proba(x_valid)[:, 1]))

    return _study(objective, trials)


def arm_fit_tabular(frame: Any, trials: int, _work: Path) -> tuple[float, list[Any]]:
    from civicml.training import fit_tabular

    def objective(params: dict[str, Any]) -> float:
        model = fit_tabular(
            frame, TARGET, algorithm="lightgbm", params={**LGBM_FIXED, **params}, seed=SEED
        )
        return float(model.metrics["roc_auc"])

    return _study(objective, trials)


def arm_civicml(frame: Any, trials: int, work: Path) -> tuple[float, list[Any]]:
    import civicml as cm

    home = Path(tempfile.mkdtemp(prefix="civicml-", dir=work))
    try:
        with cm.connect(home=home, user="bench") as ml:
            proj = ml.project("tuning-bench")
            raw = proj.datasets.ingest("applications", frame)
            space = {}
            for name, (kind, low, high, log) in space_spec().items():
                make = cm.tune.int if kind == "int" else cm.tune.float
                space[name] = make(low, high, log=log)
            started = time.perf_counter()
            result = cm.tune(
                raw,
                target=TARGET,
                project=proj,
                experiment="bench",
                algorithm="lightgbm",
                params=dict(LGBM_FIXED),
                space=space,
                metric="val_roc_auc",
                strategy="tpe",
                max_trials=trials,
                seed=SEED,
            )
            elapsed = time.perf_counter() - started
        return elapsed, [(dict(t.params), float(t.value)) for t in result.trials]  # type: ignore[arg-type]
    finally:
        shutil.rmtree(home, ignore_errors=True)


RUN = {"optuna": arm_optuna, "fit_tabular": arm_fit_tabular, "civicml": arm_civicml}


def same_trials(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for (pa, va), (pb, vb) in zip(a, b, strict=True):
        if pa.keys() != pb.keys() or any(not math.isclose(pa[k], pb[k]) for k in pa):
            return False
        if not math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def render(report: dict[str, Any]) -> str:
    med = report["median_s"]
    trials = report["trials"]
    base = med["optuna"]
    v = report["versions"]
    load0, load1 = report["load_start"], report["load_end"]
    names = {
        "optuna": "Plain Optuna + LightGBM (the floor)",
        "fit_tabular": "Optuna + civicml `fit_tabular` (no tracking)",
        "civicml": "civicml `cm.tune` (every trial a run)",
    }
    lines = [
        "## Tuning: `cm.tune` vs plain Optuna",
        "",
        "_Generated by `.venv/bin/python benchmarks/tuning.py` — do not edit by hand; re-run the "
        "script. Raw figures: [`benchmarks/tuning.json`](benchmarks/tuning.json)._",
        "",
        f"- **Date:** {report['date']}",
        f"- **Machine:** {report['cores']} cores, {platform.machine()}, Linux "
        f"{platform.release()}; load average (1/5/15 min) {load0[0]:.2f} / {load0[1]:.2f} / "
        f"{load0[2]:.2f} at start, {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at end",
        f"- **Versions:** civicml {v['civicml']} (source {report['source']}), Optuna "
        f"{v['optuna']}, LightGBM {v['lightgbm']}, scikit-learn {v['scikit-learn']}, Python "
        f"{v['python']}",
        f"- **Work:** {trials} trials of LightGBM (100 trees, `n_jobs=1`), TPE sampler seed "
        f"{SEED}, space `num_leaves` 4-64, `learning_rate` 0.01-0.3 (log), `min_child_samples` "
        f"5-50, `colsample_bytree` 0.5-1; {report['rows']:,} rows {X} 20 numeric features, 20 % "
        f"held out (stratified, seeded); {report['rounds']} round(s), arms interleaved, median "
        "reported.",
        "",
        "| Arm | Wall time | Per trial | vs plain Optuna |",
        "|---|---:|---:|---:|",
    ]
    for arm in ARMS:
        if arm not in med:
            continue
        over = report["overhead"].get(arm)
        lines.append(
            f"| {names[arm]} | {med[arm]:.2f} s | {med[arm] / trials * 1000:.0f} ms | "
            + (
                "—"
                if over is None
                else f"{over * 100:+.1f} % ({(med[arm] - base) / trials * 1000:+.0f} ms/trial)"
            )
            + " |"
        )
    lines.append("")
    checks = report["same_trials"]
    lines.append(
        "Same trials in every arm (parameters sampled and values obtained): "
        + ", ".join(f"{arm} {'yes' if ok else 'NO'}" for arm, ok in checks.items())
        + f"; best ROC AUC {report['best_value']:.4f}."
    )
    lines.append("")
    over = report["overhead"].get("civicml")
    if over is not None:
        lines += [
            "### Goal (issue 10)",
            "",
            "| Goal | Measured | Status |",
            "|---|---:|---|",
            f"| `cm.tune` overhead over plain Optuna ≤ {GOAL_OVERHEAD:.0%} ({trials} LightGBM "
            f"trials) | {over:+.1%} | {'✅ met' if over <= GOAL_OVERHEAD else '❌ not met'} |",
            "",
        ]
    lines += [
        "### What is measured",
        "",
        "- **Wall time** of the whole search (`study.optimize` / the `cm.tune` call): sampling, "
        "training, scoring and, for civicml, every run, metric, model file and the leaderboard. "
        "civicml's home, project and dataset are created before the clock starts (a fresh home "
        "per round).",
        "- **Overhead** = arm ÷ plain Optuna - 1, per round, median. The `fit_tabular` arm is "
        "civicml's one-off training path without tracking, from scratch every trial (signature, "
        "split, preprocessing pipeline, all the validation metrics). `cm.tune` prepares the "
        "split and preprocessing once per tuning job and fits only the estimator in each trial, "
        "and records each trial (run, params, metrics, lineage, usage, model files) on a "
        "background thread while the next trial trains.",
        "- One process, one thread per trial (`max_parallel=1`); the machine's cores are shared "
        "with whatever else runs, so compare figures from the same run only.",
        "",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="15 trials, 1 round, no docs")
    parser.add_argument("--write-docs", action="store_true", help="write docs even if partial")
    args = parser.parse_args()
    trials, rounds = (15, 1) if args.quick else (args.trials, args.rounds)
    arms = [a for a in ARMS if a in {x.strip() for x in args.arms.split(",")}]
    try:
        import lightgbm
        import optuna
        import sklearn

        import civicml
    except ImportError as err:
        sys.exit(
            f"{err}: run this script with the civicml virtualenv "
            "(.venv/bin/python benchmarks/tuning.py) after `pip install -e .`."
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frame = make_frame(args.rows)
    WORKDIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tuning-", dir=WORKDIR))
    load_start = os.getloadavg()
    times: dict[str, list[float]] = {a: [] for a in arms}
    seen: dict[str, list[Any]] = {}
    try:
        # Warm-up, untimed: imports, LightGBM's first fit, civicml's first home.
        for arm in arms:
            RUN[arm](frame, 3, work)
        for r in range(rounds):
            order = arms[r % len(arms) :] + arms[: r % len(arms)]
            for arm in order:
                elapsed, got = RUN[arm](frame, trials, work)
                times[arm].append(elapsed)
                seen.setdefault(arm, got)
                print(f"  round {r + 1}/{rounds} {arm}: {elapsed:.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {a: statistics.median(t) for a, t in times.items()}
    reference = seen.get("optuna") or next(iter(seen.values()))
    overhead: dict[str, float] = {}
    if "optuna" in times:
        for arm in arms:
            if arm != "optuna":
                overhead[arm] = statistics.median(
                    t / b - 1 for t, b in zip(times[arm], times["optuna"], strict=True)
                )
    report = {
        "date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "source": civicml_source(ROOT),
        "versions": {
            "civicml": civicml.__version__,
            "optuna": optuna.__version__,
            "lightgbm": lightgbm.__version__,
            "scikit-learn": sklearn.__version__,
            "python": platform.python_version(),
        },
        "trials": trials,
        "rounds": rounds,
        "rows": args.rows,
        "times_s": times,
        "median_s": median,
        "overhead": overhead,
        "same_trials": {a: same_trials(reference, got) for a, got in seen.items()},
        "best_value": max(v for _, v in reference),
    }
    section = render(report)
    print(section)
    if (not args.quick and arms == list(ARMS)) or args.write_docs:
        DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
        DOCS_JSON.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_section(DOCS_MD, BEGIN, END, section)
        print(f"Wrote the tuning section of {DOCS_MD}", file=sys.stderr)
    else:
        out = WORKDIR / f"tuning-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"Quick or partial run: figures in {out}; docs left alone", file=sys.stderr)


if __name__ == "__main__":
    main()
