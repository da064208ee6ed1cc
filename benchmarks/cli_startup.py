"""CLI start-up benchmark: how long ``civicml --help`` takes, side by side with ``mlflow --help``.

Run from the repository root with the civicml virtualenv::

    .venv/bin/python benchmarks/cli_startup.py             # full run, rewrites docs/benchmarks.md
    .venv/bin/python benchmarks/cli_startup.py --quick     # 5 repetitions, leaves docs/ alone
    .venv/bin/python benchmarks/cli_startup.py --before f535320   # also time an older commit

Each command is started as a fresh process (``subprocess.run``, output captured) ``--reps``
times after ``--warmup`` unmeasured runs (which also write the ``.pyc`` caches), the systems
interleaved so that a busy moment hits all of them; the median wall time is reported, with
the minimum. The commands are what a user types: the ``civicml`` console script of this
virtualenv and the ``mlflow`` one of ``benchmarks/.venv-mlflow`` (MLflow's own virtualenv,
created on first use by ``tracking.py``'s helper; ``--skip-mlflow`` leaves it out).

``--before REF`` also times the same console script on the source tree of an older commit
(``git archive REF src``, put first on ``PYTHONPATH``), to show what changed.

Goal (issue 8): ``civicml --help``, ``civicml version`` and ``civicml <group> --help`` start
in under 0.5 s. Nothing here asserts; tests check *what* start-up imports
(tests/cli/test_startup.py), this script measures how long it takes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from tracking import MLFLOW_VENV, QUIET_ENV, ensure_mlflow_venv  # noqa: E402

WORKDIR = BENCH / ".work"
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_JSON = ROOT / "docs" / "benchmarks" / "cli_startup.json"
BEGIN = "<!-- cli-startup:begin -->"
END = "<!-- cli-startup:end -->"
GOAL_S = 0.5
X = "\N{MULTIPLICATION SIGN}"

# (what is measured, civicml arguments, the MLflow command a user would type instead)
PAIRS: list[tuple[str, list[str], list[str]]] = [
    ("top-level help", ["--help"], ["--help"]),
    ("version", ["version"], ["--version"]),
    ("a command group's help", ["models", "--help"], ["models", "--help"]),
]
GROUPS = [
    "projects",
    "experiments",
    "runs",
    "datasets",
    "models",
    "cards",
    "endpoints",
    "monitoring",
    "evaluate",
    "lineage",
    "audit",
    "server",
    "demo",
]


class BenchmarkError(RuntimeError):
    pass


def civicml_script() -> Path:
    script = Path(sys.executable).with_name("civicml")
    if not script.is_file():
        raise BenchmarkError(
            f"No civicml console script next to {sys.executable}; run this with the civicml "
            "virtualenv (.venv/bin/python benchmarks/cli_startup.py) after pip install -e ."
        )
    return script


def base_env() -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV, "COLUMNS": "100", "NO_COLOR": "1"}
    for name in ("PYTHONPATH", "CIVICML_URL", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME"):
        env.pop(name, None)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``cmd``, in seconds.

    The CPU time hardly depends on what else the machine runs; the wall time does.
    """
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - cpu
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip()[-400:]
        raise BenchmarkError(f"{' '.join(cmd)} exited {done.returncode}:\n{tail}")
    return elapsed, cpu


Samples = list[tuple[float, float]]


def measure(
    commands: dict[str, tuple[list[str], dict[str, str]]], reps: int, warmup: int
) -> dict[str, Samples]:
    """Run every command ``warmup`` times unmeasured, then ``reps`` times, interleaved."""
    for _ in range(warmup):
        for cmd, env in commands.values():
            time_once(cmd, env)
    times: dict[str, Samples] = {key: [] for key in commands}
    for _ in range(reps):
        for key, (cmd, env) in commands.items():
            times[key].append(time_once(cmd, env))
    return times


def summary(samples: Samples) -> dict[str, Any]:
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    return {
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "max_s": max(wall),
        "cpu_median_s": statistics.median(cpu),
        "n": len(samples),
        "wall_s": [round(w, 4) for w in wall],
        "cpu_s": [round(c, 4) for c in cpu],
    }


def checkout(ref: str, into: Path) -> Path:
    """The ``src`` tree of commit ``ref`` under ``into`` (for ``--before``)."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def versions(mlflow_version: str | None) -> dict[str, Any]:
    import importlib.metadata as md

    import civicml

    return {
        "python": platform.python_version(),
        "civicml": civicml.__version__,
        "civicml_commit": git("rev-parse", "--short", "HEAD"),
        "civicml_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "src")),
        "typer": md.version("typer"),
        "rich": md.version("rich"),
        "mlflow": mlflow_version,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    env = base_env()
    civicml = str(civicml_script())
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    for label, civ_args, mlf_args in PAIRS:
        commands[f"civicml|{label}"] = ([civicml, *civ_args], env)
        if not args.skip_mlflow:
            mlflow = str(MLFLOW_VENV / "bin" / "mlflow")
            commands[f"mlflow|{label}"] = ([mlflow, *mlf_args], env)
    mlflow_version = None if args.skip_mlflow else ensure_mlflow_venv()

    with tempfile.TemporaryDirectory(dir=_workdir()) as tmp:
        before_src = None
        if args.before:
            before_src = checkout(args.before, Path(tmp))
            before_env = {**env, "PYTHONPATH": str(before_src)}
            for label, civ_args, _ in PAIRS:
                commands[f"before|{label}"] = ([civicml, *civ_args], before_env)
        print(f"Timing {len(commands)} commands, {args.reps} runs each ...", file=sys.stderr)
        times = measure(commands, args.reps, args.warmup)
        groups: dict[str, Samples] = {}
        if not args.skip_groups:
            group_cmds = {g: ([civicml, g, "--help"], env) for g in GROUPS}
            print(f"Timing `civicml <group> --help` for {len(GROUPS)} groups ...", file=sys.stderr)
            groups = measure(group_cmds, args.group_reps, 1)

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "arch": platform.machine(),
            "kernel": platform.release(),
            "load_start": [round(x, 2) for x in load_start],
            "load_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(mlflow_version),
        "reps": args.reps,
        "group_reps": args.group_reps,
        "before": args.before,
        "before_commit": git("rev-parse", "--short", args.before) if args.before else None,
        "commands": {
            key: {"argv": [Path(cmd[0]).name, *cmd[1:]], **summary(times[key])}
            for key, (cmd, _) in commands.items()
        },
        "groups": {g: summary(s) for g, s in groups.items()},
    }


def _workdir() -> Path:
    WORKDIR.mkdir(parents=True, exist_ok=True)
    return WORKDIR


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _cell(s: dict[str, Any], bold: bool = False) -> str:
    wall = f"**{_ms(s['median_s'])}**" if bold else _ms(s["median_s"])
    return f"{wall} ({_ms(s['min_s'])}; CPU {_ms(s['cpu_median_s'])})"


def render(report: dict[str, Any]) -> str:
    c = report["commands"]
    v = report["versions"]
    m = report["machine"]
    has_mlflow = any(k.startswith("mlflow|") for k in c)
    has_before = any(k.startswith("before|") for k in c)
    head = ["What", "civicml"]
    if has_before:
        head.insert(1, f"civicml before (`{report['before_commit']}`)")
    if has_mlflow:
        head += ["MLflow", "MLflow ÷ civicml"]
    lines = [
        "## CLI start-up",
        "",
        "_Generated by `.venv/bin/python benchmarks/cli_startup.py` — do not edit by hand; "
        "re-run the script._",
        "",
        f"- **Date:** {report['date']}",
        f"- **Machine:** {m['cores']} cores, {m['arch']}, Linux {m['kernel']}; load average "
        f"{' / '.join(f'{x:.2f}' for x in m['load_start'])} at start, "
        f"{' / '.join(f'{x:.2f}' for x in m['load_end'])} at end",
        f"- **Versions:** Python {v['python']}; civicml {v['civicml']} (commit "
        f"{v['civicml_commit']}{', with local changes' if v['civicml_dirty'] else ''}), "
        f"Typer {v['typer']}, Rich {v['rich']}"
        + (f"; MLflow {v['mlflow']} (own virtualenv)" if v["mlflow"] else ""),
        f"- **Method:** each command started {report['reps']} times as a new process "
        "(output captured, `COLUMNS=100`) after unmeasured warm-up runs, the systems "
        "interleaved. Each cell: median wall time (minimum; median CPU time, user + system, "
        "which depends little on the machine's load). Ratios are of the median wall times.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for label, civ_args, mlf_args in PAIRS:
        civ = c[f"civicml|{label}"]
        row = [f"{label}: `civicml {' '.join(civ_args)}`"]
        if has_before:
            row.append(_cell(c[f"before|{label}"]))
        row.append(_cell(civ, bold=True))
        if has_mlflow:
            mlf = c[f"mlflow|{label}"]
            row[0] += f" / `mlflow {' '.join(mlf_args)}`"
            row.append(_cell(mlf))
            row.append(f"{mlf['median_s'] / civ['median_s']:.1f}{X}")
        lines.append("| " + " | ".join(row) + " |")
    measured = [c[f"civicml|{label}"] for label, _, _ in PAIRS] + list(report["groups"].values())
    worst_wall = max(s["median_s"] for s in measured)
    worst_cpu = max(s["cpu_median_s"] for s in measured)
    lines += [
        "",
        f"Goal (issue 8): `civicml --help`, `civicml version` and `civicml <group> --help` "
        f"under {GOAL_S:.1f} s — **{'met' if worst_wall < GOAL_S else 'not met'}** in wall "
        f"time (slowest median {_ms(worst_wall)}), "
        f"**{'met' if worst_cpu < GOAL_S else 'not met'}** in CPU time (slowest median "
        f"{_ms(worst_cpu)}).",
    ]
    if report["groups"]:
        slowest = max(report["groups"].items(), key=lambda kv: kv[1]["median_s"])
        lines += [
            "",
            f"`civicml <group> --help` for every group ({report['group_reps']} runs each): "
            f"slowest `{slowest[0]}` at {_ms(slowest[1]['median_s'])}.",
            "",
            "| Group | Wall (median) | Wall (min) | CPU (median) |",
            "|---|---:|---:|---:|",
            *(
                f"| `{g}` | {_ms(s['median_s'])} | {_ms(s['min_s'])} | {_ms(s['cpu_median_s'])} |"
                for g, s in report["groups"].items()
            ),
        ]
    lines += [
        "",
        "The root command lists the groups from static names and one-line help and imports "
        "a group's module only when that group is invoked (`LazyGroup` in "
        "`src/civicml/cli/main.py`); the group modules import SDK and store types where they "
        "are used. tests/cli/test_startup.py checks that `--help` and `version` import no "
        "group and none of scikit-learn, pandas, NumPy, SciPy, PyArrow, SQLAlchemy, FastAPI; "
        "a stage's own libraries load when one of its commands runs. Timings on a shared "
        "2-core machine vary with its load; compare figures from one run only.",
        "",
    ]
    return "\n".join(lines)


def print_report(report: dict[str, Any]) -> None:
    for key, s in report["commands"].items():
        print(f"{key:45s} {_cell(s)}")
    for g, s in report["groups"].items():
        print(f"{'group|' + g:45s} {_cell(s)}")


def write_docs(report: dict[str, Any]) -> None:
    DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
    DOCS_JSON.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    text = DOCS_MD.read_text(encoding="utf-8") if DOCS_MD.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{render(report)}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS_MD.write_text(text, encoding="utf-8")
    print(f"Wrote {DOCS_MD.relative_to(ROOT)} and {DOCS_JSON.relative_to(ROOT)}", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CLI start-up: civicml --help / version / <group> --help vs mlflow.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--reps", type=int, default=21, help="measured runs per command")
    p.add_argument("--group-reps", type=int, default=7, help="measured runs per group's help")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured runs per command first")
    p.add_argument("--quick", action="store_true", help="5 runs, 1 per group; no docs")
    p.add_argument("--before", metavar="REF", help="also time civicml at this git commit")
    p.add_argument("--skip-mlflow", action="store_true", help="civicml only")
    p.add_argument("--skip-groups", action="store_true", help="no per-group table")
    p.add_argument("--write-docs", action="store_true", help="rewrite docs even if partial")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.group_reps, args.warmup = 5, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except (BenchmarkError, subprocess.CalledProcessError) as err:
        print(f"cli_startup: {err}", file=sys.stderr)
        return 1
    print_report(report)
    full = not (args.quick or args.skip_mlflow or args.skip_groups)
    if full or args.write_docs:
        write_docs(report)
    else:
        out = _workdir() / "cli_startup.json"
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"Partial run: wrote {out.relative_to(ROOT)} (docs/ untouched)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if shutil.which("git") is None:  # pragma: no cover
        sys.exit("cli_startup: git is needed (commit ids, --before)")
    sys.exit(main())
