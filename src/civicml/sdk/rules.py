"""``cm.rules``: SageMaker Debugger's built-in training rules on civicml runs.

Pass rules to built-in training (``cm.train.tabular(..., rules=[cm.rules.overfit()])``) or to
tuning, or evaluate them on any run's logged metrics with ``ml.runs.check_rules(run_id)``.
Definitions, parameters and defaults: :mod:`civicml.training.rules` and docs/training-rules.md.

What a result leaves on the run: tag ``civicml.rule.<name>`` (``fired``, ``ok`` or
``insufficient_data``) and ``civicml.rule.<name>.reason``; ``civicml.rules.stopped`` when a
rule stopped training; the whole evaluation as the artifact ``rules/evaluation.json`` while the
run is running (a finished run takes tags only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from civicml.core.errors import InvalidInputError
from civicml.training.rules import (
    RULES,
    ClassImbalance,
    LossNotDecreasing,
    OnFire,
    Overfit,
    Overtraining,
    Rule,
    RuleFiredError,
    RuleMonitor,
    RuleResult,
    default_rules,
    dumps,
    evaluate_rules,
    final_losses,
    gather_evidence,
    labels_of,
    parse_rule,
    parse_rules,
)

__all__ = [
    "RULES",
    "Rule",
    "RuleFiredError",
    "RuleResult",
    "check_run",
    "class_imbalance",
    "default_rules",
    "loss_not_decreasing",
    "overfit",
    "overtraining",
    "parse_rule",
    "parse_rules",
]

EVALUATION_PATH = "rules/evaluation.json"
TAG = "civicml.rule."
_MAX_REASON = 1000


def loss_not_decreasing(
    *,
    metric: str = "train_loss",
    num_steps: int = 10,
    diff_percent: float = 0.1,
    increase_threshold_percent: float = 5.0,
    on_fire: OnFire = "record",
) -> LossNotDecreasing:
    """Debugger's LossNotDecreasing: every ``num_steps`` steps the lowest ``metric`` must have
    dropped by ``diff_percent`` % and not risen ``increase_threshold_percent`` % above it."""
    return LossNotDecreasing(
        metric=metric,
        num_steps=num_steps,
        diff_percent=diff_percent,
        increase_threshold_percent=increase_threshold_percent,
        on_fire=on_fire,
    )


def overfit(
    *,
    train_metric: str = "train_loss",
    validation_metric: str = "val_loss",
    start_step: int = 0,
    patience: int = 1,
    ratio_threshold: float = 0.1,
    on_fire: OnFire = "record",
) -> Overfit:
    """Debugger's Overfit: ``(val - train) / train`` loss above ``ratio_threshold`` for
    ``patience`` steps from ``start_step``."""
    return Overfit(
        train_metric=train_metric,
        validation_metric=validation_metric,
        start_step=start_step,
        patience=patience,
        ratio_threshold=ratio_threshold,
        on_fire=on_fire,
    )


def overtraining(
    *,
    train_metric: str = "train_loss",
    validation_metric: str = "val_loss",
    patience_train: int = 5,
    patience_validation: int = 10,
    delta: float = 0.01,
    on_fire: OnFire = "record",
) -> Overtraining:
    """Debugger's Overtraining: the validation loss has not improved by ``delta`` for
    ``patience_validation`` steps while the training loss keeps improving."""
    return Overtraining(
        train_metric=train_metric,
        validation_metric=validation_metric,
        patience_train=patience_train,
        patience_validation=patience_validation,
        delta=delta,
        on_fire=on_fire,
    )


def class_imbalance(
    *,
    threshold_imbalance: float = 10.0,
    threshold_misprediction: float = 0.7,
    samples: int = 500,
    on_fire: OnFire = "record",
) -> ClassImbalance:
    """Debugger's ClassImbalance: the largest class over ``threshold_imbalance`` times the
    smallest, or a class mispredicted more often than ``threshold_misprediction``."""
    return ClassImbalance(
        threshold_imbalance=threshold_imbalance,
        threshold_misprediction=threshold_misprediction,
        samples=samples,
        on_fire=on_fire,
    )


def check_run(
    backend: Any,
    run_id: str,
    rules: Iterable[Rule | str | Mapping[str, Any]] | None = None,
    *,
    record: bool = True,
) -> list[RuleResult]:
    """Evaluate ``rules`` (default: every built-in rule) on a run's logged metrics.

    Class imbalance reads the run's training data: the dataset version and target its params
    name (``dataset``, ``target``, as ``cm.train.tabular`` logs them) and, when stored, the
    validation confusion matrix (``evaluation/confusion_matrix.json``). A run trained without
    rules has no loss curve: the loss rules then use the final training and validation loss of
    its stored model, as step 0 (:func:`civicml.training.rules.gather_evidence`).
    """
    parsed = parse_rules(rules) if rules is not None else default_rules()
    if not parsed:
        raise InvalidInputError(
            "No rules to evaluate.", hint="Give rules, e.g. [cm.rules.overfit()], or omit it."
        )
    from civicml.sdk.datasets import DatasetsHandle

    run = backend.get_run(run_id)
    datasets = DatasetsHandle(backend, run.project)
    evidence = gather_evidence(
        parsed,
        params=run.params,
        metric_keys=run.metrics,
        history=lambda key: [(m.step, float(m.value)) for m in backend.metric_history(run_id, key)],
        read_artifact=lambda path: backend.read_artifact(run_id, path),
        load_frame=lambda name, version: datasets.to_pandas(datasets.version(name, version)),
    )
    results = evaluate_rules(parsed, evidence)
    if record:
        record_results(backend, run_id, results, running=run.status.value == "running")
    return results


def record_results(
    backend: Any,
    run_id: str,
    results: Sequence[RuleResult],
    *,
    running: bool,
    stopped: RuleResult | None = None,
) -> None:
    """Tags ``civicml.rule.<name>`` and ``….reason`` on the run, and ``rules/evaluation.json``
    while it is running."""
    tags: dict[str, object] = {}
    for result in results:
        tags[TAG + result.rule] = result.status
        tags[TAG + result.rule + ".reason"] = result.reason[:_MAX_REASON]
    if stopped is not None:
        tags["civicml.rules.stopped"] = f"{stopped.rule} at step {stopped.step}"
    backend.set_tags(run_id, tags)
    if running:
        extra = {"stopped": None if stopped is None else stopped.model_dump(mode="json")}
        backend.log_artifact(run_id, EVALUATION_PATH, dumps(results, **extra).encode())


def monitor_for(
    rules: Iterable[Rule | str | Mapping[str, Any]] | None, frame: Any, target: str, task: str
) -> RuleMonitor | None:
    """A :class:`RuleMonitor` for built-in training (``None`` when no rules are given)."""
    parsed = parse_rules(rules)
    if not parsed:
        return None
    return RuleMonitor(parsed, labels=labels_of(frame, target, task))


def after_fit(
    monitor: RuleMonitor,
    run: Any,
    model: Any,
    frame: Any,
    *,
    validation_fraction: float,
    features: list[str] | None,
) -> list[RuleResult]:
    """Finish a training's rules: the final losses for algorithms without a boosting curve,
    every rule's result, recorded on the run."""
    if model.algorithm != "lightgbm":
        losses = final_losses(
            model, frame, validation_fraction=validation_fraction, features=features
        )
        run.log_metrics(losses, step=0)
        monitor.add(0, losses)
    results = monitor.finish(model.confusion_matrix)
    run.flush()
    record_results(run._backend, run.id, results, running=True, stopped=monitor.stopped)
    return results


def before_fit(monitor: RuleMonitor, run: Any) -> None:
    """Log the boosting losses to ``run``; label rules first (a stop one ends the run)."""
    from civicml.tracking.schemas import RunStatus

    monitor.log = lambda step, losses: run.log_metrics(losses, step=step)
    try:
        monitor.before_training()
    except RuleFiredError:
        results = monitor.finish()
        record_results(run._backend, run.id, results, running=True, stopped=monitor.stopped)
        run.end(RunStatus.FAILED)
        raise
