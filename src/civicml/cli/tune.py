"""``civicml tune``: hyperparameter tuning of a built-in algorithm with Optuna (``cm.tune``).

The trials train here, in this process (embedded, or logging to a server with ``--url``, as
``cm.tune`` does through the SDK); every trial is a run, the parent run holds the leaderboard.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, print_json, table

tune_app = typer.Typer(
    help="Hyperparameter tuning of a built-in algorithm (Optuna): every trial a run.",
    no_args_is_help=True,
)

_SPACE_HELP = (
    "NAME=int:LOW:HIGH, NAME=float:LOW:HIGH[:log] or NAME=choice:A,B,C (values as JSON where "
    "they parse); repeat for each parameter."
)


def parse_space(specs: list[str]) -> dict[str, Any]:
    """``cm.tune`` parameters from ``NAME=int:8:64``, ``NAME=float:0.01:0.3:log``,
    ``NAME=choice:a,b`` specs.

    Raises:
        InvalidInputError: A spec is not one of those forms.
    """
    import civicml as cm
    from civicml.core.errors import InvalidInputError

    def bad(spec: str, why: str) -> InvalidInputError:
        return InvalidInputError(
            f"The search-space entry {spec!r} {why}.",
            hint="Write NAME=int:8:64, NAME=float:0.01:0.3:log or NAME=choice:0.1,1,10.",
        )

    space: dict[str, Any] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        kind, _, args = rest.partition(":")
        if not sep or not name.strip() or not args:
            raise bad(spec, "is not NAME=KIND:...")
        parts = args.split(":")
        try:
            if kind == "int" and len(parts) == 2:
                space[name.strip()] = cm.tune.int(int(parts[0]), int(parts[1]))
            elif kind == "float" and len(parts) in (2, 3) and parts[2:] in ([], ["log"]):
                space[name.strip()] = cm.tune.float(
                    float(parts[0]), float(parts[1]), log=parts[2:] == ["log"]
                )
            elif kind == "choice":
                space[name.strip()] = cm.tune.categorical([_value(v) for v in args.split(",")])
            else:
                raise bad(spec, f"has an unknown kind or arity ({kind!r})")
        except ValueError as err:
            raise bad(spec, f"has a bound that is not a number ({err})") from None
    if not space:
        raise InvalidInputError(
            "Nothing to tune: no --space given.", hint=f"Add --space entries: {_SPACE_HELP}"
        )
    return space


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@tune_app.command("run")
def run(
    dataset: Annotated[str, typer.Argument(help="Dataset to train on.")],
    target: Annotated[str, typer.Option("--target", "-t", help="The column to predict.")],
    space: Annotated[list[str], typer.Option("--space", "-s", help=_SPACE_HELP)],
    version: Annotated[str, typer.Option("--version", help="Version of DATASET, or 'latest'.")] = (
        "latest"
    ),
    algorithm: Annotated[
        str, typer.Option(help="lightgbm, logistic, linear or random_forest.")
    ] = "lightgbm",
    strategy: Annotated[str, typer.Option(help="random, grid, tpe or hyperband.")] = "tpe",
    metric: Annotated[
        str | None, typer.Option(help="Validation metric (default val_roc_auc / val_rmse).")
    ] = None,
    max_trials: Annotated[int, typer.Option(help="Most trials.")] = 20,
    max_parallel: Annotated[int, typer.Option(help="Trials at once, in threads.")] = 1,
    time_budget_s: Annotated[
        float | None, typer.Option(help="No new trial starts after this many seconds.")
    ] = None,
    early_stopping: Annotated[
        str | None, typer.Option(help="'median': stop trials below the median (LightGBM).")
    ] = None,
    warm_start: Annotated[
        str | None, typer.Option(help="Tuning id whose best trials are tried first.")
    ] = None,
    register: Annotated[
        str | None, typer.Option(help="Register the best trial's model under this name.")
    ] = None,
    experiment: Annotated[str, typer.Option(help="Experiment of the runs.")] = "tuning",
    project: ProjectOpt = "default",
    json_: JsonOpt = False,
) -> None:
    """Tune ALGORITHM on DATASET: every trial a run, the best on top of the leaderboard."""
    import civicml as cm

    parsed = parse_space(space)
    with client() as ml:
        proj = ml.project(project)
        dv = proj.datasets.version(dataset, version)
        result = cm.tune(
            dv,
            target=target,
            space=parsed,
            project=proj,
            experiment=experiment,
            algorithm=algorithm,
            metric=metric,
            strategy=strategy,  # type: ignore[arg-type]  # checked by cm.tune
            max_trials=max_trials,
            max_parallel=max_parallel,
            time_budget_s=time_budget_s,
            early_stopping=early_stopping,  # type: ignore[arg-type]
            warm_start=warm_start,
            register=register,
        )
    if json_:
        print_json(
            {
                "tuning_id": result.tuning_id,
                "metric": result.metric,
                "direction": result.direction,
                "best_params": result.best_params,
                "best_value": result.best_value,
                "best_run_id": result.best_run_id,
                "stopped": result.stopped,
                "leaderboard": result.leaderboard,
                "model_version": None
                if result.model_version is None
                else result.model_version.version,
            }
        )
        return
    names = sorted(parsed)
    table(
        f"Tuning {result.tuning_id} ({result.metric}, {result.direction})",
        ["rank", "trial", "state", "value", *names],
        [
            [
                row.get("rank"),
                row["trial"],
                row["state"],
                row.get("value"),
                *(row.get(n) for n in names),
            ]
            for row in result.leaderboard[:20]
        ],
    )
    console.print(
        f"Best: trial {result.best_trial}, {result.metric} = {result.best_value:.6g}, "
        f"params {json.dumps(result.best_params)}; stopped: {result.stopped}.",
        markup=False,
    )
    if result.model_version is not None:
        console.print(f"Registered {register} v{result.model_version.version}.", markup=False)
