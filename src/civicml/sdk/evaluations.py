"""``proj.evaluations``: bias and explanation reports, embedded or against a server."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.errors import InvalidInputError
from civicml.core.ids import validate_name
from civicml.data.schemas import DatasetVersion
from civicml.evaluation.explain_schemas import ExplanationReport
from civicml.evaluation.records import Evaluation, FacetSpec
from civicml.evaluation.schemas import BiasReport
from civicml.evaluation.service import EvaluationService, FacetLike
from civicml.registry.schemas import ModelVersion

__all__ = ["EvaluationsHandle"]

_EVALUATIONS = TypeAdapter(list[Evaluation])
_RESULT: TypeAdapter[BiasReport | ExplanationReport] = TypeAdapter(BiasReport | ExplanationReport)
DatasetLike = DatasetVersion | tuple[str, int | str]
ModelLike = ModelVersion | tuple[str, int | str]


class EvaluationsHandle:
    """The bias and explanation reports of a project.

    Args:
        backend: The SDK backend (embedded or remote).
        project: Project name.

    Example:
        >>> ev = proj.evaluations.bias(  # doctest: +SKIP
        ...     applications, label="eligible", positive_label=1, facets="sex", model=mv
        ... )
        >>> ev.summary.values["sex"]["female"]["DI"]  # doctest: +SKIP
        0.93
        >>> shap = proj.evaluations.explain(mv, applications)  # doctest: +SKIP
        >>> Path("why.html").write_text(proj.evaluations.html(shap))  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    @property
    def _svc(self) -> EvaluationService:
        return EvaluationService(self._backend.ctx)

    def bias(
        self,
        dataset: DatasetLike,
        *,
        label: str,
        positive_label: Any,
        facets: FacetLike | Sequence[FacetLike],
        group: str | None = None,
        model: ModelLike | None = None,
        title: str | None = None,
    ) -> Evaluation:
        """Measure bias on a dataset version (and a model's predictions) and store the report.

        Args:
            dataset: A dataset version, or ``(name, version)`` where the version may be
                ``"latest"``.
            label: The observed label column.
            positive_label: The favourable label value, or a list of them.
            facets: A column name, ``{"column": "sex", "values": ["female"]}``,
                ``{"column": "age", "threshold": 60}`` (a :class:`FacetSpec`), or a list.
            group: Column of strata for CDDL / CDDPL.
            model: A model version, or ``(name, version or alias)``; adds the post-training
                metrics of its predictions.
            title: Heading of the report.

        Returns:
            The stored evaluation; ``summary.values[facet][facet value][code]`` holds the figures.
        """
        data = self._dataset(dataset)
        chosen = None if model is None else self._model(model)
        if not self._backend.remote:
            return self._svc.bias(
                self._project,
                dataset=data,
                label=label,
                positive_label=positive_label,
                facets=facets,
                group=group,
                model=chosen,
                title=title,
            )
        body: dict[str, Any] = {
            "dataset": {"dataset": data[0], "version": data[1]},
            "label": label,
            "positive_label": _json_value(positive_label),
            "facets": _json_facets(facets),
            "group": group,
            "model": None if chosen is None else {"name": chosen[0], "version": chosen[1]},
            "title": title,
        }
        path = f"{self._base()}/evaluations/bias"
        return Evaluation.model_validate(self._backend._json("POST", path, json_body=body))

    def explain(
        self,
        model: ModelLike,
        dataset: DatasetLike,
        *,
        rows: int = 1000,
        seed: int = 0,
        top_k: int = 5,
        title: str | None = None,
    ) -> Evaluation:
        """Explain a model version on a dataset version (SHAP) and store the report.

        Args:
            model: A model version, or ``(name, version or alias)``.
            dataset: A dataset version with the model's input columns, or ``(name, version)``.
            rows: Most rows explained (a seeded sample beyond).
            seed: Seed of the sample.
            top_k: Partial dependence of this many top columns.
            title: Heading of the report.

        Returns:
            The stored evaluation; ``summary.top_features`` ranks the input columns.
        """
        chosen, data = self._model(model), self._dataset(dataset)
        if not self._backend.remote:
            return self._svc.explain(
                self._project,
                model=chosen,
                dataset=data,
                rows=rows,
                seed=seed,
                top_k=top_k,
                title=title,
            )
        body = {
            "model": {"name": chosen[0], "version": chosen[1]},
            "dataset": {"dataset": data[0], "version": data[1]},
            "rows": rows,
            "seed": seed,
            "top_k": top_k,
            "title": title,
        }
        path = f"{self._base()}/evaluations/explanation"
        return Evaluation.model_validate(self._backend._json("POST", path, json_body=body))

    def list(
        self,
        *,
        kind: str | None = None,
        model: str | ModelVersion | None = None,
        version: int | str | None = None,
    ) -> builtins.list[Evaluation]:
        """The project's evaluations, newest first; only of ``kind`` / a model when given.

        ``model`` may be a model version (then ``version`` is taken from it) or a model name.
        """
        name = model.name if isinstance(model, ModelVersion) else model
        if isinstance(model, ModelVersion):
            version = model.version
        if not self._backend.remote:
            return self._svc.list(self._project, kind, name, version)
        wanted = {"kind": kind, "model": name, "version": version}
        params = {k: v for k, v in wanted.items() if v is not None}
        found = self._backend._json("GET", f"{self._base()}/evaluations", params=params)
        return _EVALUATIONS.validate_python(found)

    def latest(self, model: ModelLike, *, kind: str | None = None) -> Evaluation | None:
        """The newest evaluation of a model version (of ``kind`` when given), or ``None``."""
        name, version = self._model(model)
        found = self.list(kind=kind, model=name, version=version)
        return found[0] if found else None

    def get(self, evaluation: Evaluation | str) -> Evaluation:
        """An evaluation by id."""
        evaluation_id = _id(evaluation)
        if not self._backend.remote:
            return self._svc.get(evaluation_id)
        return Evaluation.model_validate(self._backend._json("GET", _path(evaluation_id)))

    def html(self, evaluation: Evaluation | str) -> str:
        """The report's self-contained HTML page."""
        evaluation_id = _id(evaluation)
        if not self._backend.remote:
            with self._svc.open_file(evaluation_id, "report.html") as handle:
                return handle.read().decode()
        return str(self._backend.call("GET", f"{_path(evaluation_id)}/html").text)

    def result(self, evaluation: Evaluation | str) -> BiasReport | ExplanationReport:
        """The engine's full result: a :class:`BiasReport` or an :class:`ExplanationReport`."""
        evaluation_id = _id(evaluation)
        if not self._backend.remote:
            return self._svc.read_result(evaluation_id)
        data = self._backend.call("GET", f"{_path(evaluation_id)}/json").content
        return _RESULT.validate_json(data)

    # Internals --------------------------------------------------------------------------------
    def _base(self) -> str:
        return f"/api/v1/projects/{quote(validate_name('Project', self._project), safe='')}"

    def _dataset(self, value: DatasetLike) -> tuple[str, int | str]:
        if isinstance(value, DatasetVersion):
            self._same_project(value.project, f"Dataset version {value.name} v{value.version}")
            return value.name, value.version
        if _is_pair(value):
            return value[0], value[1]
        raise InvalidInputError(
            f"The dataset version {value!r} is neither a DatasetVersion nor (name, version).",
            hint="Pass proj.datasets.version('applications', 1) or ('applications', 'latest').",
        )

    def _model(self, value: ModelLike) -> tuple[str, int | str]:
        if isinstance(value, ModelVersion):
            self._same_project(value.project, f"Model version {value.name} v{value.version}")
            return value.name, value.version
        if _is_pair(value):
            return value[0], value[1]
        raise InvalidInputError(
            f"The model version {value!r} is neither a ModelVersion nor (name, version).",
            hint="Pass proj.models.version('eligibility', 2) or ('eligibility', 'production').",
        )

    def _same_project(self, project: str, what: str) -> None:
        if project != self._project:
            raise InvalidInputError(
                f"{what} belongs to project {project!r}, not {self._project!r}.",
                hint=f"Evaluate it from ml.project({project!r}).evaluations.",
            )


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | str)
        and not isinstance(value[1], bool)
    )


def _json_value(value: Any) -> Any:
    """A label or facet value (or a list of them) as JSON carries it (NumPy scalars unwrapped)."""
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _json_facets(facets: Any) -> Any:
    items = [facets] if isinstance(facets, str | FacetSpec | Mapping) else facets
    if not isinstance(items, Sequence):
        return facets  # the server says what is wrong with it
    out: builtins.list[Any] = []
    for item in items:
        if isinstance(item, FacetSpec):
            out.append(item.model_dump(mode="json", exclude_none=True))
        elif isinstance(item, Mapping):
            out.append({k: _json_value(v) for k, v in item.items()})
        else:
            out.append(item)
    return out


def _id(evaluation: Evaluation | str) -> str:
    return evaluation.id if isinstance(evaluation, Evaluation) else str(evaluation)


def _path(evaluation_id: str) -> str:
    return f"/api/v1/evaluations/{quote(evaluation_id, safe='')}"
