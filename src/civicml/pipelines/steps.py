"""Ready-made pipeline steps over what civicml already does.

Each is a ``@step`` to call inside a ``@cm.pipeline`` function; it reaches the running
execution through :func:`civicml.pipelines.current` and works through the same services as the
SDK, as the user who runs (or resumes) the execution:

``ingest`` → ``train`` → ``evaluate_bias`` → ``condition`` → ``register`` →
``wait_for_approval`` → ``deploy`` / ``batch_predict``, and ``fail``.

>>> from civicml.pipelines import steps
>>> steps.condition.gate, steps.wait_for_approval.cache, steps.deploy.cache
(True, False, False)
"""

from __future__ import annotations

import operator
import tempfile
from collections.abc import Callable
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
    "condition",
    "deploy",
    "evaluate_bias",
    "fail",
    "ingest",
    "register",
    "train",
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
    from civicml.tracking.schemas import MetricValue
    from civicml.tracking.service import TrackingService
    from civicml.training import fit_tabular

    if not isinstance(dataset, DatasetVersion):
        raise InvalidInputError(
            f"train needs a dataset version, not {type(dataset).__name__}.",
            hint="Pass the output of the ingest step.",
        )
    here = current()
    tracking = TrackingService(here.ctx)
    frame = DatasetService(here.ctx).to_pandas(dataset)
    model = fit_tabular(frame, target, algorithm=algorithm, params=params)
    tracking.log_input(here.run_id, "dataset_version", dataset.id)
    tracking.log_params(
        here.run_id,
        {
            "algorithm": model.algorithm,
            "task": model.task,
            "target": target,
            "dataset": f"{dataset.name}@v{dataset.version}",
            **{f"model.{k}": v for k, v in sorted(model.params.items())},
        },
    )
    metrics = {f"val_{k}": float(v) for k, v in model.metrics.items()}
    tracking.log_metrics(here.run_id, [MetricValue(key=k, value=v) for k, v in metrics.items()])
    with tempfile.TemporaryDirectory(prefix="civicml-model-") as tmp:
        model.save(Path(tmp))
        for file in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            with open(file, "rb") as data:
                path = f"{MODEL_PATH}/{file.relative_to(tmp).as_posix()}"
                tracking.log_artifact(here.run_id, path, data)
    return {
        "run_id": here.run_id,
        "artifact_path": MODEL_PATH,
        "signature": [dict(column) for column in model.signature],
        "metrics": metrics,
        "task": model.task,
        "dataset": dataset.id,
    }


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
def batch_predict(model_version: ModelVersion, dataset: DatasetVersion) -> Any:
    """Predict every row of ``dataset`` with ``model_version``, loaded from its verified files
    as endpoints load it (never unpickled here): the dataset's rows with a ``prediction``
    column and, for a classifier, one ``probability_<class>`` column per class."""
    from civicml.data.service import DatasetService
    from civicml.registry.service import RegistryService
    from civicml.serving.runtime import load_version

    here = current()
    mv = RegistryService(here.ctx).get_version(
        here.project, model_version.name, model_version.version
    )
    frame = DatasetService(here.ctx).to_pandas(dataset)
    loaded = load_version(here.ctx, mv, here.ctx.settings.home / "cache" / "models")
    columns = [str(c["name"]) for c in loaded.model.signature]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"Dataset {dataset.name} v{dataset.version} lacks the model's input columns "
            f"{', '.join(map(repr, missing))}.",
            hint=f"Model {mv.name}/{mv.version} reads: {', '.join(columns)}.",
        )
    labels, proba = loaded.predict(loaded.validate(frame[columns]))
    result = frame.copy()
    result["prediction"] = labels
    if proba is not None:
        for i, cls in enumerate(loaded.classes):
            result[f"probability_{cls}"] = [row[i] for row in proba]
    return result
