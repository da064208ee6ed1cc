"""``civicml runs rules RUN_ID``: SageMaker Debugger-style training rules on a run's metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from civicml.cli._common import JsonOpt, client, console, print_json, table

_RULE_HELP = (
    "NAME or NAME:PARAM=VALUE,...: loss_not_decreasing, overfit, overtraining, "
    "class_imbalance (e.g. overfit:ratio_threshold=0.2); repeat; default: all four."
)


def check_rules(
    run_id: Annotated[str, typer.Argument(help="The run to check.")],
    rule: Annotated[list[str] | None, typer.Option("--rule", "-r", help=_RULE_HELP)] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Record the results as run tags.")
    ] = True,
    fail_on_fire: Annotated[
        bool, typer.Option("--fail-on-fire", help="Exit 1 when a rule fired.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Evaluate training rules on RUN_ID's logged metrics (and its training data)."""
    from civicml.sdk.rules import check_run
    from civicml.training.rules import parse_rules

    parsed = parse_rules(rule) if rule else None  # bad specs: exit 2 before connecting
    with client() as ml:
        results = check_run(ml.backend, run_id, parsed, record=record)
    if json_:
        print_json(results)
    else:
        table(
            f"Rules of run {run_id}",
            ["rule", "status", "step", "reason"],
            [[r.rule, r.status, r.step, r.reason] for r in results],
        )
        fired = [r.rule for r in results if r.fired]
        console.print(f"Fired: {', '.join(fired)}." if fired else "No rule fired.", markup=False)
    if fail_on_fire and any(r.fired for r in results):
        raise typer.Exit(1)
