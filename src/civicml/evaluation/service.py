"""The evaluation service: bias and explanation reports on dataset and model versions, stored.

``bias`` measures SageMaker Clarify's bias metrics on a dataset version's labels and, when a
model version is named, on that model's predictions for the same rows
(:func:`~civicml.evaluation.bias.pretraining_bias`,
:func:`~civicml.evaluation.bias.posttraining_bias`); ``explain`` computes SHAP importance,
partial dependence and example attributions of a model version on a dataset version
(:func:`~civicml.evaluation.explain.explain`). The model is loaded only after its files were
verified (:func:`~civicml.evaluation.models.load_tabular_model`).

Each stores ``report.json`` and ``report.html`` in the artifact store first, then records the
evaluation in one unit of work: the ``evaluations`` row, its two artifact-index entries, its
lineage node with a ``ContributedTo`` edge from the dataset version (and from the model
version), and the ``evaluation.created`` audit event. The row's ``summary`` is the
machine-readable shape documented in :mod:`civicml.evaluation.records`.

For post-training bias the model predicts each row from the dataset's signature columns and the
dataset's label column is the truth. The flip test (FT) compares the model's numeric input
columns other than the facet analysed that have no missing values (its k-NN needs complete
numbers); the report's notes name them and those left out.

Labels and facet values given as text (from the CLI or a query string) are matched to the
column's own values by their text, so ``"1"`` finds the integer label ``1``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, TypeAlias

import pandas as pd  # type: ignore[import-untyped]
from sqlalchemy import Connection, insert, select

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.core.ids import new_id
from civicml.data.schemas import DatasetVersion
from civicml.data.service import DatasetService
from civicml.evaluation._inputs import (
    bounded,
    check_kind,
    engine_values,
    evaluation_title,
    facet_specs,
    match_facet,
    match_positives,
    plain,
    require,
    require_signature,
    version_selector,
)
from civicml.evaluation._tables import evaluations
from civicml.evaluation.bias import posttraining_bias, pretraining_bias
from civicml.evaluation.explain import explain as explain_model
from civicml.evaluation.explain_html import render_explanation_html
from civicml.evaluation.explain_schemas import ExplanationReport
from civicml.evaluation.models import load_tabular_model
from civicml.evaluation.records import (
    BiasInputs,
    BiasSummary,
    DatasetVersionRef,
    Evaluation,
    EvaluationKind,
    ExplanationInputs,
    ExplanationSummary,
    FacetSpec,
    FeatureImportance,
    ModelVersionRef,
)
from civicml.evaluation.report_html import render_bias_html
from civicml.evaluation.schemas import BiasFacetResult, BiasReport
from civicml.governance._tables import projects
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import Project
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.store.artifact_index import ArtifactIndex
from civicml.store.context import Context
from civicml.training import TabularModel

__all__ = ["REPORT_FILES", "EvaluationService", "FacetLike", "VersionSelector"]

#: A dataset version by (name, number) or (name, "latest"); a model version by (name, number)
#: or (name, alias).
VersionSelector: TypeAlias = tuple[str, int | str]
#: A facet: a column name, a :class:`FacetSpec` or its dict form.
FacetLike: TypeAlias = str | FacetSpec | Mapping[str, Any]

#: The files stored with every evaluation, and their media types.
REPORT_FILES: dict[str, str] = {
    "report.json": "application/json",
    "report.html": "text/html; charset=utf-8",
}
MAX_EXPLAIN_ROWS = 100_000
MAX_TOP_K = 50
_LOCAL_ROWS = 3


class EvaluationService:
    """Makes bias and explanation reports of dataset and model versions and reads them back.

    Args:
        ctx: The stores, principal and clock every call runs with.

    Example:
        >>> evals = EvaluationService(ctx)  # doctest: +SKIP
        >>> ev = evals.bias(  # doctest: +SKIP
        ...     "benefits", dataset=("applications", 1), label="eligible", positive_label=1,
        ...     facets=["sex", {"column": "age", "threshold": 60}], model=("eligibility", 2),
        ... )
        >>> ev.summary.values["sex"]["female"]["DPPL"]  # doctest: +SKIP
        0.031
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)
        self._datasets = DatasetService(ctx)
        self._registry = RegistryService(ctx)

    # Making evaluations -----------------------------------------------------------------------
    def bias(
        self,
        project: str,
        *,
        dataset: VersionSelector,
        label: str,
        positive_label: Any,
        facets: FacetLike | Sequence[FacetLike],
        group: str | None = None,
        model: VersionSelector | None = None,
        title: str | None = None,
    ) -> Evaluation:
        """Measure bias on a dataset version (and a model's predictions) and store the report.

        Without ``model`` the report holds Clarify's pre-training metrics of the labels (kind
        ``bias_pre_training``); with one it also holds the post-training metrics of the model's
        predicted labels for the same rows (kind ``bias_post_training``). The model predicts
        from the dataset's signature columns; the dataset's ``label`` column is the truth.

        Args:
            project: Project the dataset (and model) belong to.
            dataset: ``(dataset name, version)``; the version may be ``"latest"``.
            label: The observed label column, e.g. ``"eligible"``.
            positive_label: The favourable label value, or a list of them, e.g. ``1``.
            facets: Protected attribute(s): a column name, ``{"column": "sex", "values":
                ["female"]}`` for chosen values, ``{"column": "age", "threshold": 60}`` for a
                continuous facet (facet d = rows above 60), or a list of these.
            group: Column of strata for CDDL / CDDPL (conditional demographic disparity).
            model: ``(model name, version or alias)`` of a classification model.
            title: Heading; default ``"Bias: eligibility v2 on applications v1"``.

        Returns:
            The stored evaluation; ``summary.values[facet][facet value][code]`` holds each figure.

        Raises:
            NotFoundError: The project, dataset, model or a version does not exist.
            InvalidInputError: A column named is not in the dataset, a label or facet value is
                not in its column, the model is not a classifier or needs columns the dataset
                lacks, or an option is malformed.
        """
        proj = self._projects.get(project, "evaluations.write")
        dv = self._dataset(proj.name, dataset)
        mv = None if model is None else self._model(proj.name, model)
        specs = facet_specs(facets)
        where = f"dataset {dv.name} v{dv.version}"
        names = [c.name for c in dv.columns]
        require(label, names, "label", where)
        for spec in specs:
            require(spec.column, names, "facet", where)
            if spec.column == label:
                raise InvalidInputError(
                    f"Column {label!r} is both the label and a facet.",
                    hint="A facet is a protected attribute such as 'sex'; the label the outcome.",
                )
        if group is not None:
            require(group, names, "group", where)
            if group == label or group in {s.column for s in specs}:
                raise InvalidInputError(
                    f"Group column {group!r} is also the label or a facet.",
                    hint="The group holds strata (e.g. 'region') that are neither.",
                )
        heading = evaluation_title(title, "Bias", dv, mv)
        frame = self._datasets.to_pandas(dv)
        positives = match_positives(positive_label, frame[label], label, where)
        specs = [match_facet(spec, frame[spec.column], where) for spec in specs]
        options: dict[str, Any] = {
            "label": label,
            "positive_label": positives,
            "facet": [s.column for s in specs],
            "facet_values": {s.column: engine_values(s) for s in specs if s.values is not None}
            or None,
            "threshold": {s.column: s.threshold for s in specs if s.threshold is not None} or None,
            "group": group,
        }
        used = list(dict.fromkeys([label, *(s.column for s in specs), *([group] if group else [])]))
        report = pretraining_bias(frame[used], **options)
        kind: EvaluationKind = "bias_pre_training"
        if mv is not None:
            fitted = self._classifier(mv, positives, names, where)
            post = _posttraining(frame, fitted, names, specs, options)
            report = _merge(report, post, f"{mv.name} v{mv.version}")
            kind = "bias_post_training"
        summary = BiasSummary(
            stage=report.stage,
            label=report.label,
            positive_label=report.positive_label,
            facets=[s.column for s in specs],
            values=_values(report),
        )
        recorded = BiasInputs(
            label=label, positive_label=[plain(p) for p in positives], facets=specs, group=group
        )
        files = {
            "report.json": report.model_dump_json(indent=2).encode(),
            "report.html": render_bias_html(report, title=heading).encode(),
        }
        brief = {"stage": summary.stage, "facets": summary.facets, "label": label}
        return self._store(proj, kind, heading, dv, mv, files, summary, recorded, brief)

    def explain(
        self,
        project: str,
        *,
        model: VersionSelector,
        dataset: VersionSelector,
        rows: int = 1000,
        seed: int = 0,
        top_k: int = 5,
        title: str | None = None,
    ) -> Evaluation:
        """Explain a model version on a dataset version with SHAP and store the report.

        Global importance (mean |SHAP| per raw input column) over at most ``rows`` rows,
        partial dependence of the ``top_k`` most important columns, and local attributions of
        the first three rows; see :func:`civicml.evaluation.explain.explain`.

        Args:
            project: Project the model and dataset belong to.
            model: ``(model name, version or alias)``.
            dataset: ``(dataset name, version)``; it must hold the model's signature columns.
            rows: Most rows explained (a seeded sample beyond), 1 to 100,000.
            seed: Seed of the row sample (and of the kernel explainer).
            top_k: Partial dependence of this many top columns, 1 to 50.
            title: Heading; default ``"Explanation: eligibility v2 on applications v1"``.

        Returns:
            The stored evaluation; ``summary.top_features`` ranks every input column.

        Raises:
            NotFoundError: The project, model, dataset or a version does not exist.
            InvalidInputError: The dataset lacks a signature column or has no rows, or an
                option is out of range.
        """
        proj = self._projects.get(project, "evaluations.write")
        mv = self._model(proj.name, model)
        dv = self._dataset(proj.name, dataset)
        recorded = ExplanationInputs(
            rows=bounded("rows", rows, 1, MAX_EXPLAIN_ROWS),
            seed=bounded("seed", seed, 0, 2**32 - 1),
            top_k=bounded("top_k", top_k, 1, MAX_TOP_K),
        )
        heading = evaluation_title(title, "Explanation", dv, mv)
        where = f"dataset {dv.name} v{dv.version}"
        if dv.row_count == 0:
            raise InvalidInputError(
                f"The {where} has no rows to explain.", hint="Explain on a version with rows."
            )
        fitted = self._load(mv)
        require_signature(fitted, mv, [c.name for c in dv.columns], where)
        frame = self._datasets.to_pandas(dv, columns=fitted.feature_names)
        result = explain_model(
            fitted,
            frame,
            top_k=recorded.top_k,
            local_rows=_LOCAL_ROWS,
            max_rows=recorded.rows,
            seed=recorded.seed,
        )
        found = result.global_explanation
        summary = ExplanationSummary(
            output=_output(found.outputs),
            output_space=found.output_space,
            explainer=found.explainer,
            top_features=[
                FeatureImportance(column=c.column, importance=c.importance)
                for c in found.importance
            ],
            n_rows=found.rows_explained,
            pd_columns=[p.column for p in result.partial_dependence],
        )
        files = {
            "report.json": result.model_dump_json(indent=2).encode(),
            "report.html": render_explanation_html(result, title=heading).encode(),
        }
        brief = {"top_features": [f.column for f in summary.top_features[:5]]}
        return self._store(proj, "explanation", heading, dv, mv, files, summary, recorded, brief)

    # Reading ----------------------------------------------------------------------------------
    def _may_read(self, row: Any) -> None:
        self._projects.access.require(
            row.project_id, row.project_name, "evaluations.read", hidden=lambda: _missing(row.id)
        )

    def get(self, evaluation_id: str) -> Evaluation:
        """The evaluation ``evaluation_id``.

        Raises:
            NotFoundError: No evaluation has that id.
        """
        with self._ctx.db.read() as conn:
            row = _row(conn, evaluation_id)
            self._may_read(row)
            return _evaluation(conn, row)

    def list(
        self,
        project: str,
        kind: str | None = None,
        model: str | None = None,
        version: int | str | None = None,
    ) -> builtins.list[Evaluation]:
        """The evaluations of ``project``, newest first, optionally of one kind or model.

        Args:
            project: The project.
            kind: Only this kind: ``bias_pre_training``, ``bias_post_training``, ``explanation``.
            model: Only evaluations of this registered model's versions.
            version: Only those of this version (number or alias) of ``model``.

        Raises:
            NotFoundError: The project, model or version does not exist.
            InvalidInputError: ``kind`` is not known, or ``version`` is given without ``model``.
        """
        check_kind(kind)
        proj = self._projects.get(project, "evaluations.read")
        query = _select().where(evaluations.c.project_id == proj.id)
        if kind is not None:
            query = query.where(evaluations.c.kind == kind)
        if version is not None and model is None:
            raise InvalidInputError(
                f"Version {version!r} was given without a model.",
                hint="Name the model too, e.g. model='eligibility', version=2.",
            )
        if model is not None and version is not None:
            mv = self._registry.get_version(proj.name, model, version)
            query = query.where(evaluations.c.model_version_id == mv.id)
        elif model is not None:
            ids = [
                v.id for v in self._registry.list_versions(proj.name, model, include_archived=True)
            ]
            query = query.where(evaluations.c.model_version_id.in_(ids))
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                query.order_by(evaluations.c.created_at.desc(), evaluations.c.id.desc())
            ).all()
            return [_evaluation(conn, r) for r in rows]

    def latest(
        self, project: str, model: str, version: int | str, kind: str | None = None
    ) -> Evaluation | None:
        """The newest evaluation of a model version (of ``kind`` when given), or ``None``.

        Raises:
            NotFoundError: The project, model or version does not exist.
            InvalidInputError: ``kind`` is not known.
        """
        check_kind(kind)
        proj = self._projects.get(project, "evaluations.read")
        mv = self._registry.get_version(proj.name, model, version)
        query = _select().where(evaluations.c.model_version_id == mv.id)
        if kind is not None:
            query = query.where(evaluations.c.kind == kind)
        query = query.order_by(evaluations.c.created_at.desc(), evaluations.c.id.desc()).limit(1)
        with self._ctx.db.read() as conn:
            row = conn.execute(query).first()
            return None if row is None else _evaluation(conn, row)

    def open_file(self, evaluation_id: str, name: str) -> BinaryIO:
        """A stored file of the evaluation, checked against its SHA-256 (the caller closes it).

        Args:
            evaluation_id: The evaluation.
            name: ``"report.html"`` or ``"report.json"``.

        Raises:
            InvalidInputError: ``name`` is not one of the evaluation's files.
            NotFoundError: No evaluation has that id, or the bytes are gone from the store.
            ArtifactIntegrityError: The stored bytes no longer match the digest.
        """
        if name not in REPORT_FILES:
            raise InvalidInputError(
                f"Evaluations have no file {name!r}.",
                hint=f"Use one of {', '.join(REPORT_FILES)}.",
            )
        with self._ctx.db.read() as conn:
            self._may_read(_row(conn, evaluation_id))
            info = ArtifactIndex.get(conn, "evaluation", evaluation_id, name)
        return self._ctx.artifacts.open(info.digest)

    def read_result(self, evaluation_id: str) -> BiasReport | ExplanationReport:
        """The engine's full result: a :class:`BiasReport` or an :class:`ExplanationReport`."""
        kind = self.get(evaluation_id).kind
        with self.open_file(evaluation_id, "report.json") as handle:
            data = handle.read()
        if kind == "explanation":
            return ExplanationReport.model_validate_json(data)
        return BiasReport.model_validate_json(data)

    # Internals --------------------------------------------------------------------------------
    def _dataset(self, project: str, selector: VersionSelector) -> DatasetVersion:
        name, version = version_selector(
            selector, "dataset", "('applications', 1) or ('applications', 'latest')"
        )
        return self._datasets.get_version(project, name, version)

    def _model(self, project: str, selector: VersionSelector) -> ModelVersion:
        name, version = version_selector(
            selector, "model", "('eligibility', 2) or ('eligibility', 'production')"
        )
        return self._registry.get_version(project, name, version)

    def _load(self, mv: ModelVersion) -> TabularModel:
        return load_tabular_model(self._ctx, mv)

    def _classifier(
        self, mv: ModelVersion, positives: builtins.list[Any], names: builtins.list[str], where: str
    ) -> TabularModel:
        fitted = self._load(mv)
        label = f"{mv.name} v{mv.version}"
        if fitted.task != "classification":
            raise InvalidInputError(
                f"Model {label} is a regression model; post-training bias needs the predicted "
                "labels of a classifier.",
                hint="Leave the model out for pre-training bias, or name a classification model.",
            )
        require_signature(fitted, mv, names, where)
        wanted = {str(p) for p in positives}
        if not any(str(c) in wanted for c in fitted.classes_):
            raise InvalidInputError(
                f"Model {label} predicts {', '.join(repr(plain(c)) for c in fitted.classes_)}; "
                f"none is the positive label {', '.join(repr(plain(p)) for p in positives)}.",
                hint=f"Check the label: the model was trained to predict {fitted.target!r}.",
            )
        return fitted

    def _store(
        self,
        proj: Project,
        kind: EvaluationKind,
        heading: str,
        dv: DatasetVersion,
        mv: ModelVersion | None,
        files: dict[str, bytes],
        summary: BiasSummary | ExplanationSummary,
        recorded: BiasInputs | ExplanationInputs,
        brief: dict[str, Any],
    ) -> Evaluation:
        stored = {path: self._ctx.artifacts.put_bytes(data) for path, data in files.items()}
        dataset_ref = DatasetVersionRef(
            dataset=dv.name, version=dv.version, id=dv.id, digest=dv.digest, rows=dv.row_count
        )
        model_ref = (
            None if mv is None else ModelVersionRef(name=mv.name, version=mv.version, id=mv.id)
        )
        now, user = self._ctx.clock.now(), self._ctx.principal.user
        evaluation_id = new_id()
        with self._ctx.db.write() as uow:
            uow.conn.execute(
                insert(evaluations).values(
                    id=evaluation_id,
                    project_id=proj.id,
                    kind=kind,
                    model_version_id=None if mv is None else mv.id,
                    dataset_version_id=dv.id,
                    title=heading,
                    created_at=now,
                    created_by=user,
                    summary=summary.model_dump(mode="json"),
                    inputs={
                        "dataset": dataset_ref.model_dump(mode="json"),
                        "model": None if model_ref is None else model_ref.model_dump(mode="json"),
                        "options": recorded.model_dump(mode="json"),
                    },
                )
            )
            infos = ArtifactIndex.add_files(
                uow,
                project_id=proj.id,
                owner_kind="evaluation",
                owner_id=evaluation_id,
                stored=stored,
                media_types=REPORT_FILES,
                created_by=user,
                created_at=now,
            )
            sources = [("dataset_version", dv.id, f"{dv.name} v{dv.version}")]
            if mv is not None:
                sources.append(("model_version", mv.id, f"{mv.name} v{mv.version}"))
            self._lineage.derived(
                uow,
                "evaluation",
                evaluation_id,
                name=heading,
                project_id=proj.id,
                sources=sources,
                properties={"kind": kind},
            )
            self._audit.record(
                uow,
                "evaluation.created",
                "evaluation",
                evaluation_id,
                project=proj.name,
                after={
                    "kind": kind,
                    "title": heading,
                    "dataset": f"{dv.name} v{dv.version}",
                    "model": None if mv is None else f"{mv.name} v{mv.version}",
                    **brief,
                    "files": {i.path: i.digest for i in infos},
                },
            )
        return Evaluation(
            id=evaluation_id,
            project=proj.name,
            kind=kind,
            title=heading,
            model=model_ref,
            dataset=dataset_ref,
            created_at=now,
            created_by=user,
            summary=summary,
            inputs=recorded,
            files=infos,
        )


# Results ------------------------------------------------------------------------------------
def _posttraining(
    frame: pd.DataFrame,
    fitted: TabularModel,
    names: builtins.list[str],
    specs: builtins.list[FacetSpec],
    options: dict[str, Any],
) -> BiasReport:
    """Post-training metrics of the model's predictions, one engine run per facet.

    Each run gives the flip test's k-NN the model's complete numeric inputs other than the
    facet analysed (the engine's own default, minus columns with missing values, which it
    cannot compare); a note names them.
    """
    predicted = _free_name(names)
    label, group = options["label"], options["group"]
    numeric = [
        c
        for c in fitted.feature_names
        if c not in (label, group) and pd.api.types.is_numeric_dtype(frame[c].dtype)
    ]
    complete = [c for c in numeric if bool(frame[c].notna().all())]
    gaps = [c for c in numeric if c not in complete]
    kept = [label, *(s.column for s in specs), *([group] if group else []), *complete]
    scored = frame[builtins.list(dict.fromkeys(kept))].assign(**{predicted: fitted.predict(frame)})
    runs = []
    for spec in specs:
        features = [c for c in complete if c != spec.column]
        runs.append(
            posttraining_bias(
                scored,
                predicted=predicted,
                features=features or None,
                **{
                    **options,
                    "facet": [spec.column],
                    "facet_values": None if spec.values is None else engine_values(spec),
                    "threshold": spec.threshold,
                },
            )
        )
    notes = [n for run in runs for n in run.notes]
    if complete:
        notes.append(
            "FT's nearest-neighbour search compared the model's numeric input columns without "
            f"missing values, other than the facet analysed: {', '.join(complete)}"
            + (f" (left out for missing values: {', '.join(gaps)})." if gaps else ".")
        )
    return runs[0].model_copy(
        update={
            "facets": [f for run in runs for f in run.facets],
            "notes": builtins.list(dict.fromkeys(notes)),
        }
    )


def _merge(pre: BiasReport, post: BiasReport, model: str) -> BiasReport:
    """One report with the pre- then the post-training metrics of every facet value."""
    extra = {(f.facet, f.facet_value): f.metrics for f in post.facets}
    facets = [
        BiasFacetResult(
            facet=f.facet,
            facet_value=f.facet_value,
            facet_kind=f.facet_kind,
            n_a=f.n_a,
            n_d=f.n_d,
            metrics=[*f.metrics, *extra.get((f.facet, f.facet_value), [])],
        )
        for f in pre.facets
    ]
    return post.model_copy(
        update={
            "predicted": model,
            "prediction_source": "model",
            "facets": facets,
            "notes": builtins.list(dict.fromkeys([*pre.notes, *post.notes])),
        }
    )


def _free_name(names: builtins.list[str]) -> str:
    """A column name the dataset does not use, for the model's predicted labels."""
    name = "civicml_predicted_label"
    while name in names:
        name = "_" + name
    return name


def _values(report: BiasReport) -> dict[str, dict[str, dict[str, float | None]]]:
    values: dict[str, dict[str, dict[str, float | None]]] = {}
    for f in report.facets:
        values.setdefault(f.facet, {})[f.facet_value] = {m.code: m.value for m in f.metrics}
    return values


def _output(outputs: builtins.list[Any]) -> str:
    if outputs == [None]:
        return "value"
    return ",".join(str(o) for o in outputs)


# Rows ---------------------------------------------------------------------------------------
def _select() -> Any:
    return select(evaluations, projects.c.name.label("project_name")).join(
        projects, projects.c.id == evaluations.c.project_id
    )


def _row(conn: Connection, evaluation_id: str) -> Any:
    row = conn.execute(_select().where(evaluations.c.id == evaluation_id)).first()
    if row is None:
        raise _missing(evaluation_id)
    return row


def _missing(evaluation_id: str) -> NotFoundError:
    return NotFoundError(
        f"Evaluation {evaluation_id!r} does not exist.",
        hint="List the evaluations: civicml evaluate list -p PROJECT",
    )


def _evaluation(conn: Connection, row: Any) -> Evaluation:
    explanation = row.kind == "explanation"
    stored = row.inputs
    summary: BiasSummary | ExplanationSummary
    recorded: BiasInputs | ExplanationInputs
    if explanation:
        summary = ExplanationSummary.model_validate(row.summary)
        recorded = ExplanationInputs.model_validate(stored["options"])
    else:
        summary = BiasSummary.model_validate(row.summary)
        recorded = BiasInputs.model_validate(stored["options"])
    return Evaluation(
        id=row.id,
        project=row.project_name,
        kind=row.kind,
        title=row.title,
        model=None if stored["model"] is None else ModelVersionRef.model_validate(stored["model"]),
        dataset=DatasetVersionRef.model_validate(stored["dataset"]),
        created_at=row.created_at,
        created_by=row.created_by,
        summary=summary,
        inputs=recorded,
        files=ArtifactIndex.list(conn, "evaluation", row.id),
    )
