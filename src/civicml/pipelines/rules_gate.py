"""The training-rules gate of a pipeline (``steps.check_rules``): evaluate Debugger-style rules
on a trained run through the services, record the results on the gate's own run.

Kept apart from :mod:`civicml.pipelines.steps` so that module stays a list of thin steps.
"""

from __future__ import annotations

from typing import Any

from civicml.core.errors import InvalidInputError
from civicml.training.rules import (
    RuleResult,
    default_rules,
    dumps,
    evaluate_rules,
    gather_evidence,
    parse_rules,
)

__all__ = ["evaluate_run"]

EVALUATION_PATH = "rules/evaluation.json"


def evaluate_run(
    ctx: Any, project: str, run_id: str, gate_run_id: str, rules: list[Any] | None
) -> list[RuleResult]:
    """Evaluate ``rules`` (default: every built-in rule) on run ``run_id`` of ``project`` and
    record them on the gate's run ``gate_run_id``.

    Raises:
        InvalidInputError: A bad rule spec, or a run of another project.
    """
    from civicml.data.service import DatasetService
    from civicml.tracking.schemas import MetricValue
    from civicml.tracking.service import TrackingService

    parsed = parse_rules(rules) if rules is not None else default_rules()
    tracking = TrackingService(ctx)
    datasets = DatasetService(ctx)
    run = tracking.get_run(run_id)
    if run.project != project:
        raise InvalidInputError(
            f"Run {run_id} belongs to project {run.project!r}, not {project!r}.",
            hint="Check the rules of a run this pipeline trained.",
        )

    def read(path: str) -> bytes:
        _info, handle = tracking.open_artifact(run_id, path)
        with handle:
            return handle.read()

    evidence = gather_evidence(
        parsed,
        params=run.params,
        metric_keys=run.metrics,
        history=lambda key: [
            (m.step, float(m.value)) for m in tracking.metric_history(run_id, key)
        ],
        read_artifact=read,
        load_frame=lambda name, version: datasets.to_pandas(
            datasets.get_version(project, name, version)
        ),
    )
    results = evaluate_rules(parsed, evidence)
    tags: dict[str, object] = {"civicml.rules.run_id": run_id}
    for result in results:
        tags[f"civicml.rule.{result.rule}"] = result.status
        tags[f"civicml.rule.{result.rule}.reason"] = result.reason[:1000]
    tracking.set_tags(gate_run_id, tags)
    tracking.log_artifact(gate_run_id, EVALUATION_PATH, dumps(results, run_id=run_id).encode())
    losses = {k: v[0][1] for k, v in evidence.metrics.items() if len(v) == 1 and k.endswith("loss")}
    if losses:  # the final losses of a model trained without rules: shown on the gate's run
        tracking.log_metrics(gate_run_id, [MetricValue(key=k, value=v) for k, v in losses.items()])
    return results
