"""Baselines: what a monitor compares with, suggested from the training data (Model Monitor's
baselining job).

The baseline dataset is the training data of the model version the endpoint serves — the
dataset versions its training run consumed, found through lineage (``dataset version
--ContributedTo--> run``) — or a dataset version the user names (a holdout). From it:

* **data quality**: ``statistics.json`` and ``constraints.json`` of the model's input columns
  (:func:`civicml.monitoring.constraints.suggest_baseline`);
* **model quality**: the model's metrics on it, and thresholds ``tolerance`` below them;
* **bias drift**: the model's post-training bias figures on it; the ranges come from the model's
  approval policy (``[[bias]]`` rules) or the monitor's own;
* **attribution drift**: each feature's mean |SHAP| on a seeded sample of it.

Each baseline stores its files in the artifact store; the suggested constraints become the
monitor's editable constraints unless the user gave their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd  # type: ignore[import-untyped]
from pydantic import BaseModel, ValidationError

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.evaluation.explain import KERNEL_MAX_ROWS, ModelExplainer
from civicml.evaluation.models import load_tabular_model
from civicml.governance.lineage import LineageService
from civicml.monitoring.schemas import BaselineConstraints
from civicml.monitors.bias_drift import policy_checks
from civicml.monitors.checks import (
    baseline_attribution,
    baseline_bias,
    baseline_quality,
    suggest_data_quality,
)
from civicml.monitors.schemas import (
    AttributionConstraints,
    BiasDriftConstraints,
    DatasetRef,
    ModelQualityConstraints,
    ModelRef,
    MonitorType,
)
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.store.context import Context
from civicml.training import TabularModel

__all__ = [
    "BaselineResult",
    "compute_baseline",
    "constraints_model",
    "explainer_for",
    "training_data",
]

RUN_INPUT = "ContributedTo"
_CONSTRAINTS: dict[MonitorType, type[BaseModel]] = {
    MonitorType.DATA_QUALITY: BaselineConstraints,
    MonitorType.MODEL_QUALITY: ModelQualityConstraints,
    MonitorType.BIAS_DRIFT: BiasDriftConstraints,
    MonitorType.ATTRIBUTION_DRIFT: AttributionConstraints,
}


@dataclass
class BaselineResult:
    """What a baseline computation found."""

    dataset: DatasetRef
    model: ModelRef
    source: str
    metrics: dict[str, float | None]
    files: dict[str, bytes]
    constraints: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


def constraints_model(kind: MonitorType, data: Any, *, what: str = "constraints") -> BaseModel:
    """``data`` validated as the constraints document of a monitor type.

    Raises:
        InvalidInputError: It does not have the type's shape (the message names the field).
    """
    model = _CONSTRAINTS[kind]
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise InvalidInputError(
            f"The {kind.value} {what}: {where}: {first['msg']}.",
            hint="See the constraints of each monitor type in docs/monitors.md.",
            details=[
                {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                for e in err.errors()[:20]
            ],
        ) from err


def training_data(ctx: Context, mv: ModelVersion) -> list[DatasetVersion]:
    """The dataset versions the run that produced ``mv`` consumed (its lineage inputs)."""
    if not mv.run_id:
        return []
    try:
        graph = LineageService(ctx).query("run", mv.run_id, direction="upstream", max_depth=1)
    except NotFoundError:
        return []
    inputs = {e.src for e in graph.edges if e.dst == graph.root.id and e.kind == RUN_INPUT}
    service = DatasetService(ctx)
    found = []
    for node in graph.nodes:
        if node.id in inputs and node.kind == "dataset_version" and not node.deleted:
            try:
                found.append(service.get_version_by_id(node.ref))
            except NotFoundError:
                continue
    return sorted(found, key=lambda v: (v.name, v.version))


def explainer_for(model: TabularModel, reference: pd.DataFrame, rows: int) -> tuple[Any, int]:
    """One SHAP explainer for both sides (the baseline's rows as background) and how many rows
    it explains per side (the kernel explainer is costly: at most 100)."""
    sample = reference[model.feature_names]
    if len(sample) > rows:
        sample = sample.sample(n=rows, random_state=0).sort_index()
    explainer = ModelExplainer(model, model.validate(sample))
    return explainer, (min(rows, KERNEL_MAX_ROWS) if explainer.kind == "kernel" else rows)


def _pick_training(found: list[DatasetVersion], model: TabularModel) -> DatasetVersion | None:
    wanted = set(model.feature_names) | {model.target}
    for version in found:
        if wanted <= {c.name for c in version.columns}:
            return version
    return None


def compute_baseline(
    ctx: Context,
    project: str,
    kind: MonitorType,
    mv: ModelVersion,
    *,
    dataset: str | None,
    version: int | str | None,
    config: dict[str, Any],
    constraints: dict[str, Any] | None,
    facets: list[str] | None,
) -> BaselineResult:
    """Compute the baseline of a monitor of ``kind`` on model version ``mv``.

    Raises:
        InvalidInputError: No training data is recorded and none was named; the data lacks the
            model's columns; the model does not fit the type (bias drift needs a classifier);
            no bias range is known; or the given constraints are malformed.
    """
    datasets = DatasetService(ctx)
    model = load_tabular_model(ctx, mv)
    if dataset is not None:
        dv = datasets.get_version(project, dataset, "latest" if version is None else version)
        source = "named"
    else:
        picked = _pick_training(training_data(ctx, mv), model)
        source = "training_data"
        if picked is None:
            raise InvalidInputError(
                f"Model {mv.name} v{mv.version} has no recorded training data with its columns, "
                "so no baseline can be suggested.",
                hint="Name one: --baseline-dataset applications --baseline-version 1 "
                "(baseline_dataset= in the SDK).",
            )
        dv = picked
    names = {c.name for c in dv.columns}
    missing = [c for c in model.feature_names if c not in names]
    if missing:
        raise InvalidInputError(
            f"{dv.name} v{dv.version} lacks the model's input column(s) {missing[:10]}.",
            hint="Baseline with the data the model was trained on (or a holdout like it).",
        )
    needs_target = kind in (MonitorType.MODEL_QUALITY, MonitorType.BIAS_DRIFT)
    if needs_target and model.target not in names:
        raise InvalidInputError(
            f"{dv.name} v{dv.version} has no label column {model.target!r}; a {kind.value} "
            "baseline needs the true labels.",
            hint="Name a dataset version with the label (e.g. the training data).",
        )
    reference = datasets.to_pandas(dv)
    config = dict(config)
    config["columns"] = list(model.feature_names)
    config["classes"] = [_plain(c) for c in getattr(model, "classes_", []) or []]
    files: dict[str, bytes] = {}
    metrics: dict[str, float | None] = {}
    suggested: BaseModel
    if kind is MonitorType.DATA_QUALITY:
        statistics, suggested = suggest_data_quality(reference[model.feature_names])
        files["statistics.json"] = statistics.model_dump_json(indent=2).encode()
        files["constraints.json"] = suggested.model_dump_json(indent=2).encode()
    elif kind is MonitorType.MODEL_QUALITY:
        problem, metrics, suggested = baseline_quality(model, reference, config["tolerance"])
        config["problem_type"] = problem
        files["baseline.json"] = json.dumps(
            {"problem_type": problem, "metrics": metrics}, indent=2
        ).encode()
    elif kind is MonitorType.BIAS_DRIFT:
        if model.task != "classification":
            raise InvalidInputError(
                f"Model {mv.name} v{mv.version} is a regression model; bias drift needs the "
                "predicted labels of a classifier.",
                hint="Watch it with a model_quality or data_quality monitor instead.",
            )
        checks = _bias_constraints(ctx, project, mv, constraints, facets)
        suggested = checks
        metrics = baseline_bias(model, reference, checks, config.get("positive_label"))
        files["baseline.json"] = json.dumps({"metrics": metrics}, indent=2).encode()
    else:
        explainer, rows = explainer_for(model, reference, int(config["shap_rows"]))
        sample = reference[model.feature_names]
        if len(sample) > rows:
            sample = sample.sample(n=rows, random_state=0).sort_index()
        attributions = baseline_attribution(explainer, model.validate(sample))
        metrics = {f"{label}/{f}": v for label, by in attributions.items() for f, v in by.items()}
        files["baseline.json"] = json.dumps(
            {"attributions": attributions, "explainer": explainer.kind, "rows": len(sample)},
            indent=2,
        ).encode()
        suggested = AttributionConstraints()
    chosen: BaseModel = suggested
    if constraints is not None and kind is not MonitorType.BIAS_DRIFT:
        chosen = constraints_model(kind, constraints)
    if isinstance(chosen, ModelQualityConstraints) and chosen.problem_type != config.get(
        "problem_type"
    ):
        raise InvalidInputError(
            f"The constraints are for {chosen.problem_type}; the model's problem is "
            f"{config.get('problem_type')}.",
            hint="Leave constraints out to have them suggested from the baseline.",
        )
    return BaselineResult(
        dataset=DatasetRef(
            dataset=dv.name, version=dv.version, id=dv.id, digest=dv.digest, rows=dv.row_count
        ),
        model=ModelRef(name=mv.name, version=mv.version, id=mv.id),
        source=source,
        metrics=metrics,
        files=files,
        constraints=chosen.model_dump(mode="json"),
        config=config,
    )


def _bias_constraints(
    ctx: Context,
    project: str,
    mv: ModelVersion,
    given: dict[str, Any] | None,
    facets: list[str] | None,
) -> BiasDriftConstraints:
    if given is not None:
        return cast(
            BiasDriftConstraints,
            constraints_model(MonitorType.BIAS_DRIFT, {"source": "monitor", **given}),
        )
    record = RegistryService(ctx).approval_policy(project, mv.name)
    checks = policy_checks(None if record is None else dict(record.policy))
    if facets:
        checks = [c for c in checks if c.facet in facets]
    if not checks:
        raise InvalidInputError(
            f"Model {mv.name} has no approval policy with a post-training [[bias]] rule"
            + (f" on {', '.join(facets)}" if facets else "")
            + ", so a bias-drift monitor has no range to check.",
            hint='Set the policy\'s [[bias]] rules, or give constraints: {"checks": '
            '[{"metric": "DPPL", "facet": "sex", "max_abs": 0.1}]}.',
        )
    return BiasDriftConstraints(source="policy", checks=checks)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value
