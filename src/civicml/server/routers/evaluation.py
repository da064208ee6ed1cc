"""Evaluations: make bias and explanation reports, list them, serve their files.

The HTML report is served as the drift reports are (:mod:`civicml.server.routers.monitoring`):
with its own Content-Security-Policy under which nothing may load or run and the one inline
``<style>`` element is allowed by its SHA-256. The reports have no scripts, no ``style=``
attributes and no external resources (their plots are inline SVG).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from civicml.core.types import PositiveInt64, StrictInt
from civicml.evaluation.records import Evaluation, FacetSpec, Scalar
from civicml.evaluation.service import MAX_EXPLAIN_ROWS, MAX_TOP_K, EvaluationService
from civicml.server.deps import Services, services
from civicml.server.html import html_response
from civicml.server.paging import Page, page

router = APIRouter(tags=["evaluation"])
Svc = Annotated[Services, Depends(services)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSelector(_Body):
    dataset: str = Field(description="Dataset name, e.g. 'applications'.")
    version: PositiveInt64 | str = Field(
        default="latest", description="Version number, or 'latest' (resolved when run)."
    )


class ModelSelector(_Body):
    name: str = Field(description="Registered model name, e.g. 'eligibility'.")
    version: PositiveInt64 | str = Field(
        description="Version number or alias, e.g. 2 or 'production'."
    )


class BiasCreate(_Body):
    dataset: DatasetSelector = Field(description="The dataset version with labels and facets.")
    label: str = Field(description="The observed label column, e.g. 'eligible'.")
    positive_label: Scalar | list[Scalar] = Field(
        description="The favourable label value, or a list of them, e.g. 1."
    )
    facets: str | list[str | FacetSpec] = Field(
        description="Facet columns: 'sex', or a list of names and "
        "{'column', 'values' | 'threshold'} objects."
    )
    group: str | None = Field(default=None, description="Column of strata for CDDL / CDDPL.")
    model: ModelSelector | None = Field(
        default=None,
        description="A classification model version: adds post-training metrics of its "
        "predictions on the dataset.",
    )
    title: str | None = Field(default=None, max_length=256, description="Report heading.")


class ExplanationCreate(_Body):
    model: ModelSelector = Field(description="The model version to explain.")
    dataset: DatasetSelector = Field(description="A dataset version with the model's inputs.")
    rows: StrictInt = Field(
        default=1000, ge=1, le=MAX_EXPLAIN_ROWS, description="Most rows explained (sampled)."
    )
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the row sample.")
    top_k: StrictInt = Field(
        default=5, ge=1, le=MAX_TOP_K, description="Partial dependence of this many columns."
    )
    title: str | None = Field(default=None, max_length=256, description="Report heading.")


def _evaluations(svc: Services) -> EvaluationService:
    return EvaluationService(svc.ctx)


def _created(evaluation: Evaluation, response: Response) -> Evaluation:
    response.headers["Location"] = f"/api/v1/evaluations/{evaluation.id}"
    return evaluation


@router.post(
    "/api/v1/projects/{project}/evaluations/bias", response_model=Evaluation, status_code=201
)
def create_bias(project: str, body: BiasCreate, svc: Svc, response: Response) -> Evaluation:
    """Measure bias on a dataset version (and a model's predictions); store the report."""
    evaluation = _evaluations(svc).bias(
        project,
        dataset=(body.dataset.dataset, body.dataset.version),
        label=body.label,
        positive_label=body.positive_label,
        facets=body.facets,
        group=body.group,
        model=None if body.model is None else (body.model.name, body.model.version),
        title=body.title,
    )
    return _created(evaluation, response)


@router.post(
    "/api/v1/projects/{project}/evaluations/explanation",
    response_model=Evaluation,
    status_code=201,
)
def create_explanation(
    project: str, body: ExplanationCreate, svc: Svc, response: Response
) -> Evaluation:
    """Explain a model version on a dataset version (SHAP); store the report."""
    evaluation = _evaluations(svc).explain(
        project,
        model=(body.model.name, body.model.version),
        dataset=(body.dataset.dataset, body.dataset.version),
        rows=body.rows,
        seed=body.seed,
        top_k=body.top_k,
        title=body.title,
    )
    return _created(evaluation, response)


@router.get("/api/v1/projects/{project}/evaluations", response_model=list[Evaluation])
def list_evaluations(
    project: str,
    svc: Svc,
    kind: Annotated[
        str | None,
        Query(description="Only this kind: bias_pre_training, bias_post_training, explanation."),
    ] = None,
    model: Annotated[str | None, Query(description="Only evaluations of this model.")] = None,
    version: Annotated[
        str | None, Query(description="Only those of this version (number or alias) of model.")
    ] = None,
    *,
    paging: Page,
    request: Request,
    response: Response,
) -> list[Evaluation]:
    """The evaluations of a project, newest first."""
    return page(_evaluations(svc).list(project, kind, model, version), paging, request, response)


@router.get("/api/v1/evaluations/{evaluation_id}", response_model=Evaluation)
def get_evaluation(evaluation_id: str, svc: Svc) -> Evaluation:
    """An evaluation: what it evaluated, its figures in brief and its files."""
    return _evaluations(svc).get(evaluation_id)


@router.get("/api/v1/evaluations/{evaluation_id}/html", response_class=Response)
def evaluation_html(evaluation_id: str, svc: Svc) -> Response:
    """The self-contained HTML report (inline CSS and SVG; no scripts, nothing fetched)."""
    with _evaluations(svc).open_file(evaluation_id, "report.html") as handle:
        data = handle.read()
    return html_response(data)


@router.get("/api/v1/evaluations/{evaluation_id}/json", response_class=Response)
def evaluation_json(evaluation_id: str, svc: Svc) -> Response:
    """The full result as stored: the BiasReport or the ExplanationReport."""
    with _evaluations(svc).open_file(evaluation_id, "report.json") as handle:
        data = handle.read()
    return Response(data, media_type="application/json")
