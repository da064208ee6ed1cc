"""Ready-made pipeline steps over what civicml already does.

Each is a ``@step`` to call inside a ``@cm.pipeline`` function; it reaches the running
execution through :func:`civicml.pipelines.current` and works through the same services as the
SDK, as the user who runs (or resumes) the execution:

``ingest`` → ``validate`` → ``train`` or ``tune`` → ``evaluate_bias`` → ``condition`` →
``register`` → ``wait_for_approval`` → ``deploy`` / ``batch_predict``, and ``fail``.

>>> from civicml.pipelines import steps
>>> steps.condition.gate, steps.wait_for_approval.cache, steps.deploy.cache
(True, False, False)
"""

from __future__ import annotations

import operator
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from civicml.core.errors import ConflictError, InvalidInputError
from civicml.data.schemas import DatasetVersion
from civicml.pipelines.dsl import StepWaiting, current, step
from civicml.registry.schemas import ApprovalStatus, ModelVersion

__all__ = [
    "StepFailedError",
    "batch_predict",
    "check_rules",
    "condition",
    "deploy",
    "evaluate_bias",
    "explain",
    "fail",
    "ingest",
    "register",
    "train",
    "tune",
    "validate",
    "wait_for_approval",
    "when",
]

MODEL_PATH = "model"

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class StepFailedError(ConflictError):
    """A pipeline failed on purpose: a ``fail`` step, a condition with ``otherwise="fail"``,
    a rejected model version or an approval that did not come in time."""


@step(cache=False)  # the key holds the path, not the file's content; same content: same version
def ingest(name: str, source: Any) -> DatasetVersion:
    """Store ``source`` (a file path, or a DataFrame from an earlier step) as a version of
    dataset ``name``; the same content again returns the existing version, so the steps after
    it stay cache hits."""
    from civicml.data.service import DatasetService

    here = current()
    return DatasetService(here.ctx).ingest(here.project, name, source, progress=False)


@step(cache=False)  # expectations and overrides change; the check is cheap next to training
def validate(dataset: DatasetVersion, sample_rows: int = 20) -> DatasetVersion:
    """Check ``dataset`` against its dataset's quality expectations (a report with trigger
    ``pipeline``) and pass it on; the execution fails when the version may not be consumed: a
    blocking expectation failed and no override released it (docs/datasets.md)."""
    from civicml.data.quality import QualityService
    from civicml.data.service import DatasetService

    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"validate needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass the output of the ingest step.",
        )
    here = current()
    QualityService(here.ctx).run(dataset, trigger="pipeline", sample_rows=sample_rows)
    datasets = DatasetService(here.ctx)
    try:
        datasets.check_usable(dataset, purpose="pipeline")
    except ConflictError as err:
        raise StepFailedError(str(err), hint=err.hint) from err
    return datasets.get_version_by_id(dataset.id)


@step
def train(
    dataset: DatasetVersion,
    target: str,
    algorithm: str = "logistic",
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a built-in tabular model on ``dataset`` and record it on the step's run, as
    ``cm.train.tabular`` does (params, ``val_*`` metrics, model files under ``model/``, lineage
    from the dataset version). Returns what :func:`register` needs: run id, artifact path,
    signature and metrics."""
    from civicml.data.service import DatasetService

    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"train needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass the output of the ingest step.",
        )
    here = current()
    DatasetService(here.ctx).check_usable(dataset, purpose="pipeline")  # quarantine, policy
    frame = DatasetService(here.ctx).to_pandas(dataset)
    return _fit_and_record(here.ctx, here.run_id, dataset, frame, target, algorithm, params)


def _fit_and_record(
    ctx: Any,
    run_id: str,
    dataset: DatasetVersion,
    frame: Any,
    target: str,
    algorithm: str,
    params: dict[str, Any] | None,
    prepared: Any = None,
) -> dict[str, Any]:
    """Fit a built-in model and record it on run ``run_id``: params, ``val_*`` metrics, the
    model files under ``model/``, lineage from the dataset version. Returns what
    :func:`register` takes. ``prepared``: the data side of the fit, made once for the trials
    of a tuning (:func:`civicml.training.tune.prepared_for`)."""
    from civicml.tracking.schemas import MetricValue
    from civicml.tracking.service import TrackingService
    from civicml.training import fit_tabular

    tracking = TrackingService(ctx)
    model = fit_tabular(frame, target, algorithm=algorithm, params=params, prepared=prepared)
    tracking.log_input(run_id, "dataset_version", dataset.id)
    tracking.log_params(
        run_id,
        {
            "algorithm": model.algorithm,
            "task": model.task,
            "target": target,
            "dataset": f"{dataset.name}@v{dataset.version}",
            **{f"model.{k}": v for k, v in sorted(model.params.items())},
        },
    )
    metrics = {f"val_{k}": float(v) for k, v in model.metrics.items()}
    tracking.log_metrics(run_id, [MetricValue(key=k, value=v) for k, v in metrics.items()])
    with tempfile.TemporaryDirectory(prefix="civicml-model-") as tmp:
        model.save(Path(tmp))
        for file in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            with open(file, "rb") as data:
                path = f"{MODEL_PATH}/{file.relative_to(tmp).as_posix()}"
                tracking.log_artifact(run_id, path, data)
    return {
        "run_id": run_id,
        "artifact_path": MODEL_PATH,
        "signature": [dict(column) for column in model.signature],
        "metrics": metrics,
        "task": model.task,
        "dataset": dataset.id,
    }


@step
def tune(
    dataset: DatasetVersion,
    target: str,
    space: dict[str, Any],
    algorithm: str = "lightgbm",
    params: dict[str, Any] | None = None,
    metric: str | None = None,
    strategy: str = "tpe",
    max_trials: int = 10,
    max_parallel: int = 2,
    early_stopping: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Search hyperparameters as ``cm.train.tune`` does, the step's run being the parent and
    every trial a child run in the same experiment; trials run as Ray tasks when ``compute``
    names Ray. ``space`` is JSON: ``{"num_leaves": "int:8:64", "learning_rate":
    "float:0.01:0.3:log", "min_child_samples": [5, 10, 20]}``.

    Returns what :func:`train` returns, for the best trial (its run holds the model files), so
    :func:`register` takes it; plus ``tuning_id``, ``best_params``, ``best_value``, ``metric``
    and ``trials`` (complete, pruned).
    """
    import json

    from civicml.core.compute import executor_for
    from civicml.data.service import DatasetService
    from civicml.store.context import shippable_settings
    from civicml.tracking.schemas import MetricValue
    from civicml.tracking.service import TrackingService
    from civicml.training.tune import (
        check_metric,
        default_direction,
        default_metric,
        leaderboard,
        run_study,
        space_from_json,
    )

    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"tune needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass the output of the ingest step.",
        )
    here = current()
    ctx = here.ctx
    search = space_from_json(space)
    DatasetService(ctx).check_usable(dataset, purpose="pipeline")  # quarantine, policy
    frame = DatasetService(ctx).to_pandas(dataset)
    key = "val_" + check_metric(metric or default_metric(frame, target, "auto"))
    direction = default_direction(key)
    tracking = TrackingService(ctx)
    run = tracking.get_run(here.run_id)
    tracking.log_input(here.run_id, "dataset_version", dataset.id)
    tracking.log_params(
        here.run_id,
        {
            "tuning.algorithm": algorithm,
            "tuning.metric": key,
            "tuning.direction": direction,
            "tuning.strategy": strategy,
            "tuning.max_trials": max_trials,
            "tuning.max_parallel": max_parallel,
            "tuning.early_stopping": early_stopping or "none",
        },
    )
    tracking.set_tags(here.run_id, {"tuning.id": here.run_id, "tuning.role": "parent"})
    executor = None if ctx.settings.compute == "local" else executor_for(ctx.settings.compute)
    trial = _StepTrial(
        project=here.project,
        experiment=run.experiment,
        parent=here.run_id,
        name=here.step,
        dataset=dataset,
        target=target,
        algorithm=algorithm,
        params=dict(params or {}),
        metric=key,
        probe=algorithm == "lightgbm" and (early_stopping == "median" or strategy == "hyperband"),
        settings=shippable_settings(ctx.settings) if executor is not None else None,
        principal=ctx.principal,
    )
    local = {"ctx": ctx, "frame": frame}
    result = run_study(
        trial if executor is not None else lambda t: trial.run(local["ctx"], local["frame"], t),
        space=search,
        tuning_id=here.run_id,
        metric=key,
        direction=direction,
        strategy=strategy,
        max_trials=max_trials,
        max_parallel=max_parallel,
        early_stopping="median" if early_stopping == "median" else None,
        seed=seed,
        executor=executor,
    )
    rows = leaderboard(result.trials, direction)
    tracking.log_artifact(
        here.run_id,
        "tuning/leaderboard.json",
        json.dumps({"metric": key, "direction": direction, "rows": rows}, default=str).encode(),
    )
    tracking.log_metrics(here.run_id, [MetricValue(key=f"best_{key}", value=result.best_value)])
    tracking.set_tags(
        here.run_id,
        {"tuning.best_run_id": result.best_run_id or "", "tuning.best_trial": result.best_trial},
    )
    best = next(t for t in result.trials if t.number == result.best_trial)
    return {
        **best.info,
        "tuning_id": here.run_id,
        "best_params": result.best_params,
        "best_value": result.best_value,
        "metric": key,
        "trials": {
            "complete": sum(t.state == "complete" for t in result.trials),
            "pruned": sum(t.state == "pruned" for t in result.trials),
        },
    }


@dataclass(frozen=True, slots=True)
class _StepTrial:
    """One trial of the :func:`tune` step: a child run of the step's run. Shipped to a Ray
    worker as plain data (settings without the API token, the principal); run in a thread
    with the step's own context otherwise."""

    project: str
    experiment: str
    parent: str
    name: str
    dataset: DatasetVersion
    target: str
    algorithm: str
    params: dict[str, Any]
    metric: str
    probe: bool
    settings: dict[str, Any] | None
    principal: Any

    def __call__(self, trial: Any) -> float:
        from civicml.data.service import DatasetService
        from civicml.store.context import worker_context

        ctx = worker_context(self.settings or {}, self.principal)
        cached = _FRAMES.get(self.dataset.id)
        if cached is None:
            _FRAMES.clear()
            cached = _FRAMES[self.dataset.id] = DatasetService(ctx).to_pandas(self.dataset)
        return self.run(ctx, cached, trial)

    def run(self, ctx: Any, frame: Any, trial: Any) -> float:
        from optuna import TrialPruned

        from civicml.core.compute import worker_info
        from civicml.tracking.schemas import MetricValue, RunStatus
        from civicml.tracking.service import TrackingService
        from civicml.training.tune import lightgbm_curve, prepared_for

        tracking = TrackingService(ctx)
        child = tracking.create_run(
            self.project,
            experiment=self.experiment,
            name=f"{self.name}-trial-{trial.number}",
            tags={
                "tuning.id": self.parent,
                "tuning.trial": trial.number,
                "tuning.role": "trial",
                "parent_run_id": self.parent,
                **{f"civicml.compute.{k}": v for k, v in worker_info().items()},
            },
        )
        trial.run_id = child.id
        merged = {**self.params, **trial.params}

        def report(step_: int, value: float) -> None:
            tracking.log_metrics(child.id, [MetricValue(key=self.metric, value=value, step=step_)])
            trial.report(step_, value)

        try:
            prepared = prepared_for(frame, self.target, algorithm=self.algorithm)  # once a job
            if self.probe:
                lightgbm_curve(
                    frame,
                    self.target,
                    metric=self.metric,
                    report=report,
                    params=merged,
                    prepared=prepared,
                )
            info = _fit_and_record(
                ctx, child.id, self.dataset, frame, self.target, self.algorithm, merged, prepared
            )
        except TrialPruned as pruned:
            tracking.set_tags(child.id, {"tuning.state": "pruned", "tuning.pruned": str(pruned)})
            tracking.end_run(child.id, RunStatus.KILLED)
            raise
        except BaseException:
            tracking.set_tags(child.id, {"tuning.state": "failed"})
            tracking.end_run(child.id, RunStatus.FAILED)
            raise
        tracking.set_tags(child.id, {"tuning.state": "complete"})
        tracking.end_run(child.id, RunStatus.FINISHED)
        trial.info = info
        return float(info["metrics"][self.metric])


_FRAMES: dict[str, Any] = {}  # a Ray worker's dataset, read once for its trials


@step
def register(model_name: str, trained: dict[str, Any], description: str = "") -> ModelVersion:
    """Register what :func:`train` returned as a new version of ``model_name``
    (``PendingManualApproval``)."""
    from civicml.registry.service import RegistryService

    here = current()
    return RegistryService(here.ctx).register(
        here.project,
        model_name,
        run_id=trained["run_id"],
        artifact_path=trained.get("artifact_path", MODEL_PATH),
        signature=trained.get("signature"),
        metrics=trained.get("metrics"),
        description=description,
    )


@step
def evaluate_bias(
    dataset: DatasetVersion,
    model: ModelVersion | None,
    label: str,
    positive_label: Any,
    facets: Any,
) -> dict[str, Any]:
    """Measure bias of ``dataset`` (and ``model``'s predictions, unless None), store the
    evaluation and return its summary with its id: ``{"evaluation_id", "stage", "label",
    "positive_label", "facets", "values": {facet: {value: {metric: number}}}}``."""
    from civicml.evaluation.service import EvaluationService

    here = current()
    evaluation = EvaluationService(here.ctx).bias(
        here.project,
        dataset=(dataset.name, dataset.version),
        label=label,
        positive_label=positive_label,
        facets=facets,
        model=None if model is None else (model.name, model.version),
    )
    summary = evaluation.summary.model_dump(mode="json") if evaluation.summary else {}
    return {"evaluation_id": evaluation.id, **summary}


@step
def explain(
    model: ModelVersion, dataset: DatasetVersion, rows: int = 1000, top_k: int = 5
) -> dict[str, Any]:
    """Explain ``model`` on ``dataset`` with SHAP (global importance over at most ``rows``
    rows, partial dependence of the ``top_k`` most important columns), store the evaluation
    (JSON + HTML, in lineage: evidence for an approval policy's ``explanation`` check) and
    return its summary with its id: ``{"evaluation_id", "top_features": [...], ...}``."""
    from civicml.evaluation.service import EvaluationService

    here = current()
    evaluation = EvaluationService(here.ctx).explain(
        here.project,
        model=(model.name, model.version),
        dataset=(dataset.name, dataset.version),
        rows=rows,
        top_k=top_k,
    )
    summary = evaluation.summary.model_dump(mode="json") if evaluation.summary else {}
    return {"evaluation_id": evaluation.id, **summary}


@step
def condition(
    value: Any, op: str, threshold: Any, key: str | None = None, otherwise: str = "skip"
) -> bool:
    """``value op threshold`` (op: ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``); with ``key``
    the value is looked up in a step's output first (dots go deeper:
    ``key="metrics.val_accuracy"``, ``key="values.sex.female.DPPL"``).

    When false, the steps that take this step's output, and what depends on them, are
    ``skipped`` and the execution still succeeds; with ``otherwise="fail"`` the execution
    fails instead.
    """
    if op not in _OPS:
        raise InvalidInputError(
            f"Condition operator {op!r} is not known.", hint=f"Use one of {', '.join(_OPS)}."
        )
    if otherwise not in ("skip", "fail"):
        raise InvalidInputError(
            f"condition(otherwise={otherwise!r}) must be 'skip' or 'fail'.",
            hint="'skip' skips the steps after it; 'fail' fails the execution.",
        )
    if key is not None:
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                known = ", ".join(map(str, value)) if isinstance(value, dict) else "none"
                raise InvalidInputError(
                    f"Condition key {key!r} is not in the value ({part!r} is missing).",
                    hint=f"Keys at that level: {known}.",
                )
            value = value[part]
    if value is None:
        raise InvalidInputError(
            "The condition's value is None (a metric that was not computed?).",
            hint="Compare a value that exists, e.g. key='metrics.val_accuracy'.",
        )
    result = bool(_OPS[op](value, threshold))
    if not result and otherwise == "fail":
        raise StepFailedError(
            f"Condition {key or 'value'} = {value!r} {op} {threshold!r} is false."
        )
    return result


condition.gate = True


@step
def check_rules(trained: Any, rules: list[Any] | None = None, otherwise: str = "skip") -> bool:
    """Training rules as a gate (docs/training-rules.md): evaluate them on the run of a
    :func:`train` step's output (or a run id) and hold only when none fired. ``rules`` are
    specs (``"overfit:ratio_threshold=0.2"``) or dicts; default: every built-in rule. The
    results go on this step's run (tags ``civicml.rule.<name>``, ``rules/evaluation.json``).
    A fired rule skips the steps after it, or with ``otherwise="fail"`` fails the execution.
    """
    from civicml.pipelines.rules_gate import evaluate_run

    if otherwise not in ("skip", "fail"):
        raise InvalidInputError(
            f"check_rules(otherwise={otherwise!r}) must be 'skip' or 'fail'.",
            hint="'skip' skips the steps after it; 'fail' fails the execution.",
        )
    run_id = trained.get("run_id") if isinstance(trained, dict) else trained
    if not isinstance(run_id, str) or not run_id:
        raise InvalidInputError(
            "check_rules needs a train step's output or a run id.",
            hint="Pass the output of steps.train(...).",
        )
    here = current()
    fired = [r for r in evaluate_run(here.ctx, here.project, run_id, here.run_id, rules) if r.fired]
    if fired and otherwise == "fail":
        raise StepFailedError(
            "Training rule(s) fired: " + " ".join(f"{r.rule}: {r.reason}" for r in fired)
        )
    return not fired


check_rules.gate = True


@step
def when(value: Any, condition: bool) -> Any:
    """``value`` passed on unchanged: a step that takes a ``condition`` step's output runs only
    when the condition held, so ``register(name, when(trained, good))`` registers only a good
    model."""
    return value


@step(cache=False)
def fail(message: str) -> None:
    """Fail the execution with ``message`` (its steps after this one are skipped)."""
    raise StepFailedError(message)


@step(cache=False)
def wait_for_approval(
    model_version: ModelVersion, timeout_s: float = 7 * 24 * 3600.0
) -> ModelVersion:
    """The callback pattern: wait until a reviewer approves or rejects ``model_version``.

    While it is ``PendingManualApproval`` the step ends ``waiting`` and the execution pauses;
    ``PipelineService.resume(execution_id)`` (``ml.pipelines.retry``) checks again. Approved:
    returns the version and the steps after it run. Rejected: the execution fails with the
    reviewer's note. Still pending ``timeout_s`` after the wait began: the execution fails.
    """
    from civicml.registry.service import RegistryService

    here = current()
    mv = RegistryService(here.ctx).get_version(
        here.project, model_version.name, model_version.version
    )
    if mv.approval_status is ApprovalStatus.APPROVED:
        return mv
    if mv.approval_status is ApprovalStatus.REJECTED:
        raise StepFailedError(
            f"Model version {mv.name}/{mv.version} was rejected by {mv.approval_by}: "
            f"{mv.approval_note}"
        )
    since = here.waiting_since
    if since is not None and here.ctx.clock.now() - since > timedelta(seconds=timeout_s):
        raise StepFailedError(
            f"Model version {mv.name}/{mv.version} was not approved or rejected within "
            f"{timeout_s:g} s."
        )
    raise StepWaiting(f"Waiting for a reviewer to approve or reject {mv.name}/{mv.version}.")


@step(cache=False)
def deploy(endpoint_name: str, model_version: ModelVersion) -> dict[str, Any]:
    """Serve the (approved) version as a new endpoint; returns the endpoint as JSON
    (:class:`~civicml.serving.schemas.EndpointInfo`)."""
    from civicml.serving.service import EndpointService

    here = current()
    info = EndpointService(here.ctx).deploy(
        here.project, endpoint_name, model_version.name, model_version.version
    )
    return info.model_dump(mode="json")


@step
def batch_predict(
    model_version: ModelVersion,
    dataset: DatasetVersion,
    chunk_rows: int = 50_000,
    output: str | None = None,
) -> Any:
    """Predict every row of ``dataset`` with ``model_version``, loaded from its verified files
    as endpoints load it (never unpickled here), chunk by chunk through
    :class:`~civicml.serving.batch.BatchService`: the dataset's rows with a ``prediction``
    column and, for a classifier, one ``probability_<class>`` column per class.

    Without ``output`` the rows come back as a DataFrame (the step's output). With ``output``
    the step runs a batch job instead: the rows become a new version of dataset ``output``
    (memory bounded by a chunk; lineage model version → batch job → output version) and the
    step returns that :class:`~civicml.data.schemas.DatasetVersion`.

    With ``compute`` naming Ray the rows go out in chunks of ``chunk_rows`` as Ray tasks (Arrow
    data, not pickles) whose workers load the model from the artifact store; the step's run
    records the chunks and the workers (tags ``civicml.compute.batch_*``).
    """
    import json

    from civicml.data.service import DatasetService
    from civicml.serving.batch import BatchService
    from civicml.serving.batch_schemas import BatchJobCreate
    from civicml.tracking.service import TrackingService

    if chunk_rows < 1:
        raise InvalidInputError(f"chunk_rows must be at least 1, not {chunk_rows}.")
    here = current()
    DatasetService(here.ctx).check_usable(dataset, purpose="pipeline")  # quarantine, policy
    service = BatchService(here.ctx)
    if output is not None:
        job = service.run(
            here.project,
            BatchJobCreate(
                model=model_version.name,
                model_version=model_version.version,
                input_dataset=dataset.name,
                input_version=dataset.version,
                output_dataset=output,
                chunk_rows=chunk_rows,
            ),
        )
        TrackingService(here.ctx).set_tags(
            here.run_id, {"civicml.batch_job": job.id, "civicml.compute.batch_chunks": job.chunks}
        )
        return DatasetService(here.ctx).get_version_by_id(str(job.output_version_id))
    table, tally = service.predict_table(
        here.project, model_version, dataset, chunk_rows=chunk_rows
    )
    if here.ctx.settings.compute != "local":
        TrackingService(here.ctx).set_tags(
            here.run_id,
            {
                "civicml.compute.batch_chunks": tally.chunks,
                "civicml.compute.batch_workers": json.dumps(sorted(tally.workers)),
            },
        )
    return table.to_pandas()


def _predict_frame(ctx: Any, mv: ModelVersion, frame: Any, what: str) -> Any:
    """The reference for the chunked prediction: the whole frame at once, through the
    model's own pipeline (tests compare the step's output with it)."""
    from civicml.serving.runtime import load_version

    loaded = load_version(ctx, mv, ctx.settings.home / "cache" / "models")
    columns = [str(c["name"]) for c in loaded.model.signature]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"Dataset {what} lacks the model's input columns {', '.join(map(repr, missing))}.",
            hint=f"Model {mv.name}/{mv.version} reads: {', '.join(columns)}.",
        )
    labels, proba = loaded.predict(loaded.validate(frame[columns]))
    result = frame.copy()
    result["prediction"] = labels
    if proba is not None:
        for i, cls in enumerate(loaded.classes):
            result[f"probability_{cls}"] = [row[i] for row in proba]
    return result
