"""``civicml train``: built-in training from the command line — ``auto`` (AutoML) for now.

``civicml train auto DATASET --target y --time-budget 60`` runs ``cm.train.auto`` in this
process (embedded, or logging to a server with ``--url``) with a progress bar, prints the
leaderboard and why the winner won, and registers it with ``--register NAME``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, print_json, table

train_app = typer.Typer(
    help="Built-in training: AutoML over every algorithm, with a leaderboard.",
    no_args_is_help=True,
)


@train_app.command("auto")
def auto(
    dataset: Annotated[str, typer.Argument(help="Dataset to learn from.")],
    target: Annotated[str, typer.Option("--target", "-t", help="The column to predict.")],
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Seconds for the whole search and final fit.")
    ] = 60.0,
    version: Annotated[str, typer.Option("--version", help="Version of DATASET, or 'latest'.")] = (
        "latest"
    ),
    algorithm: Annotated[
        list[str] | None,
        typer.Option("--algorithm", "-a", help="Try only these (repeat); default: all."),
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Validation metric (default val_roc_auc / val_rmse).")
    ] = None,
    folds: Annotated[int, typer.Option(help="k of k-fold cross-validation.")] = 5,
    register: Annotated[
        str | None, typer.Option(help="Register the chosen model under this name.")
    ] = None,
    experiment: Annotated[str, typer.Option(help="Experiment of the runs.")] = "automl",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Try every built-in algorithm on DATASET with tuning and cross-validation; keep the best."""
    import civicml as cm

    with client() as ml:
        proj = ml.project(project)
        dv = proj.datasets.version(dataset, version)
        with _Progress(time_budget, quiet=json_) as progress:
            result = cm.train.auto(
                dv,
                target=target,
                time_budget=time_budget,
                project=proj,
                experiment=experiment,
                algorithms=algorithm or None,
                metric=metric,
                folds=folds,
                register=register,
                progress=progress.update,
            )
    version_number = None if result.model_version is None else result.model_version.version
    if json_:
        print_json(
            {
                "automl_id": result.automl_id,
                "model_run_id": result.run_id,
                "winner": result.winner,
                "explanation": result.explanation,
                "elapsed_s": result.elapsed_s,
                "leaderboard": result.leaderboard,
                "model_version": version_number,
            }
        )
        return
    table(
        f"AutoML {result.automl_id}",
        ["rank", "candidate", "algorithm", "cv mean", "std", "fit s", "state"],
        [
            [
                row["rank"],
                row["candidate"],
                row["algorithm"],
                None if row["cv_mean"] is None else f"{row['cv_mean']:.4f}",
                None if row["cv_std"] is None else f"{row['cv_std']:.4f}",
                row["fit_time_s"],
                row["state"],
            ]
            for row in result.leaderboard[:20]
        ],
    )
    console.print(result.explanation, markup=False)
    console.print(
        f"Model run {result.run_id}; report: automl/report.html on run {result.automl_id} "
        f"({result.elapsed_s:.1f} s).",
        markup=False,
    )
    if version_number is not None:
        console.print(f"Registered {register} v{version_number}.", markup=False)


class _Progress:
    """A rich progress bar over the time budget, naming the algorithm and the best so far."""

    def __init__(self, budget: float, *, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._budget = budget
        self._started = time.monotonic()
        self._best: float | None = None
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
            transient=True,
        )
        self._task = self._bar.add_task("AutoML", total=budget)

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "candidate" and event.get("cv_mean") is not None:
            self._best = event["cv_mean"] if self._best is None else self._best
            self._best = max(self._best, event["cv_mean"])
        best = "" if self._best is None else f", best so far {self._best:.4f}"
        what = {
            "algorithm": f"tuning {event.get('algorithm')}",
            "candidate": f"{event.get('algorithm')} candidate {event.get('candidate')}",
            "final": f"fitting the chosen {event.get('algorithm')}",
        }.get(str(kind), "AutoML")
        elapsed = min(time.monotonic() - self._started, self._budget)
        self._bar.update(self._task, completed=elapsed, description=what + best)
