"""Model cards: one per model version, in SageMaker's card schema and statuses.

A card has two kinds of content. The **filled** sections are read from the platform each time
the card is read — model overview (id, artifact digest, algorithm, problem type, creator,
library versions), training details (run, parameters, training dataset versions and their
profile), evaluation details (validation metrics and confusion matrix, the latest bias and
explanation reports), approval history with each gate's evidence, and where the version is
deployed. The **written** sections (:data:`~civicml.oversight.card_fields.EDITABLE_FIELDS`:
description, owner, business goal, KPIs and acceptable error, intended uses, risk rating,
ethical considerations, limitations) are what a person writes; each edit stores a new immutable
card version and an audit event. A status change (Draft → PendingReview → Approved, or
Archived) changes no content and makes no version, as in SageMaker; an edit of an Approved card
returns it to Draft (it must be reviewed again); an Archived card is read-only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from civicml.core.errors import (
    ArtifactIntegrityError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    closest,
)
from civicml.core.ids import new_id
from civicml.data.service import DatasetService
from civicml.evaluation.records import BiasSummary, ExplanationSummary
from civicml.evaluation.service import EvaluationService
from civicml.governance.audit import AuditTrail
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.oversight._tables import model_card_versions, model_cards
from civicml.oversight.card_fields import (
    CARD_STATUSES,
    EDITABLE_FIELDS,
    RISK_RATINGS,
    CardVersion,
    ModelCard,
)
from civicml.registry.etags import check_if_match, make_etag
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving.service import EndpointService
from civicml.store.context import Context
from civicml.tracking.service import TrackingService
from civicml.training.model import MANIFEST_FILE

__all__ = ["CardService", "card_etag", "training_datasets"]

log = logging.getLogger("civicml.oversight")

_MAX_TEXT = 20_000
_PROBLEM_TYPES = {"classification": "Classification", "regression": "Regression"}


class CardService:
    """Reads, edits and exports the model card of a model version.

    Example:
        >>> cards = CardService(ctx)  # doctest: +SKIP
        >>> cards.update("benefits", "eligibility", 2, {"model_overview.model_owner": "Benefits"
        ...     " analytics (R. Diaz)"}, note="owner")  # doctest: +SKIP
        >>> cards.get("benefits", "eligibility", 2).missing  # doctest: +SKIP
        ['model_overview.model_description', ...]
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._audit = AuditTrail(ctx)
        self._lineage = LineageService(ctx)
        self._projects = ProjectService(ctx)
        self._registry = RegistryService(ctx)

    # Reading ----------------------------------------------------------------------------------
    def get(
        self, project: str, model: str, version: int | str, *, card_version: int | None = None
    ) -> ModelCard:
        """The card of a model version, filled from the platform now.

        Args:
            card_version: Show this version of the written fields (default: the latest).

        Raises:
            NotFoundError: The project, model, version or card version does not exist.
        """
        mv = self._registry.get_version(project, model, version)
        with self._ctx.db.read() as conn:
            card = _card_row(conn, mv.id)
            written, number = self._written(conn, card, card_version, mv)
        return self._card(mv, card, written, number)

    def history(self, project: str, model: str, version: int | str) -> list[CardVersion]:
        """Every version of the written fields, oldest first (empty until the first edit)."""
        mv = self._registry.get_version(project, model, version)
        with self._ctx.db.read() as conn:
            card = _card_row(conn, mv.id)
            if card is None:
                return []
            rows = conn.execute(
                select(model_card_versions)
                .where(model_card_versions.c.card_id == card.id)
                .order_by(model_card_versions.c.version)
            ).all()
        out: list[CardVersion] = []
        previous: dict[str, Any] = {}
        for r in rows:
            changed = sorted(
                k for k in set(r.content) | set(previous) if r.content.get(k) != previous.get(k)
            )
            out.append(
                CardVersion(
                    version=r.version,
                    fields=r.content,
                    changed=changed,
                    note=r.note,
                    created_at=r.created_at,
                    created_by=r.created_by,
                )
            )
            previous = r.content
        return out

    # Changing ---------------------------------------------------------------------------------
    def update(
        self,
        project: str,
        model: str,
        version: int | str,
        fields: Mapping[str, Any],
        *,
        note: str = "",
        if_match: str | None = None,
    ) -> ModelCard:
        """Write fields of the card; stores a new card version (audited).

        Args:
            fields: Values by dotted path, e.g. ``{"intended_uses.risk_rating": "High"}``;
                ``None`` clears a field. Paths are listed in ``EDITABLE_FIELDS``.
            note: Why the card changed (kept with the version).
            if_match: The card's ETag as read (:func:`card_etag`); the edit is refused when
                the card was edited or changed status since.

        Raises:
            InvalidInputError: An unknown field, a value of the wrong type or too long, or an
                invalid risk rating.
            ConflictError: Nothing would change, or the card is Archived.
            NotFoundError: The project, model or version does not exist.
            PreconditionFailedError: ``if_match`` is not the card's current ETag.
        """
        clean = _check_fields(fields)
        note = _check_note(note)
        mv = self._registry.get_version(project, model, version)
        proj = self._projects.get(project, "cards.write")
        with self._ctx.db.write() as uow:
            conn = uow.conn
            card = _card_row(conn, mv.id)
            _check_card_precondition(if_match, mv, card)
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            if card is not None and card.status == "Archived":
                raise ConflictError(
                    f"The card of {mv.name} v{mv.version} is Archived and read-only.",
                    hint="Archived cards can be read and exported, not edited.",
                )
            current: dict[str, Any] = {}
            if card is not None:
                current = dict(_version_row(conn, card.id, card.latest_version).content)
            merged = {**current, **clean}
            merged = {k: v for k, v in merged.items() if v is not None}
            changed = sorted(
                k for k in set(merged) | set(current) if merged.get(k) != current.get(k)
            )
            if not changed:
                raise ConflictError(
                    f"The card of {mv.name} v{mv.version} already says that; nothing changed.",
                    hint="Send only the fields whose text changes.",
                )
            status_before = None if card is None else card.status
            if card is None:
                card_id, number, status = new_id(), 1, "Draft"
                conn.execute(
                    insert(model_cards).values(
                        id=card_id,
                        project_id=proj.id,
                        model_version_id=mv.id,
                        status=status,
                        latest_version=number,
                        created_at=now,
                        created_by=user,
                        updated_at=now,
                        updated_by=user,
                    )
                )
                mv_node = self._lineage.node(
                    uow, "model_version", mv.id, name=f"{mv.name} v{mv.version}", project_id=proj.id
                )
                card_node = self._lineage.node(
                    uow,
                    "model_card",
                    card_id,
                    name=f"card of {mv.name} v{mv.version}",
                    project_id=proj.id,
                )
                self._lineage.link(uow, mv_node, card_node, "AssociatedWith")
            else:
                card_id, number = card.id, card.latest_version + 1
                # an edit of an approved card needs a new review
                status = "Draft" if card.status == "Approved" else card.status
                conn.execute(
                    update(model_cards)
                    .where(model_cards.c.id == card_id)
                    .values(latest_version=number, status=status, updated_at=now, updated_by=user)
                )
            conn.execute(
                insert(model_card_versions).values(
                    card_id=card_id,
                    version=number,
                    content=merged,
                    note=note,
                    created_at=now,
                    created_by=user,
                )
            )
            self._audit.record(
                uow,
                "model_card.updated",
                "model_card",
                card_id,
                project=proj.name,
                before={"card_version": number - 1, "status": status_before}
                | {k: current.get(k) for k in changed},
                after={
                    "model": mv.name,
                    "model_version": mv.version,
                    "card_version": number,
                    "status": status,
                    "note": note,
                    **{k: merged.get(k) for k in changed},
                },
            )
        return self.get(project, model, mv.version)

    def set_status(
        self,
        project: str,
        model: str,
        version: int | str,
        status: str,
        *,
        note: str = "",
        if_match: str | None = None,
    ) -> ModelCard:
        """Move the card to another status (no new card version; audited).

        Args:
            if_match: The card's ETag as read (:func:`card_etag`); refused when the card was
                edited or changed status since.

        Raises:
            InvalidInputError: Unknown status.
            ConflictError: Already that status, the card is Archived, or ``Approved`` is asked
                for a card with required fields missing.
            PreconditionFailedError: ``if_match`` is not the card's current ETag.
        """
        if status not in CARD_STATUSES:
            raise InvalidInputError(
                f"Card status {status!r} is not known.",
                hint=closest(status, CARD_STATUSES) or f"Use one of {', '.join(CARD_STATUSES)}.",
            )
        note = _check_note(note)
        mv = self._registry.get_version(project, model, version)
        mv_label = f"{mv.name} v{mv.version}"
        proj = self._projects.get(project, "cards.write")
        with self._ctx.db.write() as uow:
            card = _card_row(uow.conn, mv.id)
            _check_card_precondition(if_match, mv, card)
            if card is None:
                raise ConflictError(
                    f"The card of {mv_label} has nothing written yet, so its status stays Draft.",
                    hint="Write its fields first: civicml cards edit ... --set FIELD=TEXT",
                )
            if card.status == "Archived":
                raise ConflictError(
                    f"The card of {mv_label} is Archived; archived cards do not change status.",
                    hint="Archived is final. Register a new version for a new card.",
                )
            if card.status == status:
                raise ConflictError(
                    f"The card of {mv_label} is already {status}.", hint="Nothing was changed."
                )
            # checked against the fields as they are in this transaction, not an earlier read
            missing = _missing(_version_row(uow.conn, card.id, card.latest_version).content)
            if status == "Approved" and missing:
                raise ConflictError(
                    f"The card of {mv_label} cannot be Approved: required fields are missing: "
                    + ", ".join(missing)
                    + ".",
                    hint="Write them first: civicml cards edit ... --set FIELD=TEXT",
                    details=[{"field": m, "problem": "required"} for m in missing],
                )
            now, user = self._ctx.clock.now(), self._ctx.principal.user
            uow.conn.execute(
                update(model_cards)
                .where(model_cards.c.id == card.id)
                .values(status=status, updated_at=now, updated_by=user)
            )
            self._audit.record(
                uow,
                "model_card.status_changed",
                "model_card",
                card.id,
                project=proj.name,
                before={"status": card.status},
                after={
                    "model": mv.name,
                    "model_version": mv.version,
                    "status": status,
                    "card_version": card.latest_version,
                    "note": note,
                },
            )
        return self.get(project, model, version)

    # Exporting --------------------------------------------------------------------------------
    def export(
        self,
        project: str,
        model: str,
        version: int | str,
        fmt: str = "html",
        *,
        card_version: int | None = None,
    ) -> str:
        """The card as ``"html"`` (self-contained page), ``"markdown"`` or ``"json"``.

        Raises:
            InvalidInputError: Unknown format.
        """
        from civicml.oversight.card_render import render_card_html, render_card_markdown

        if fmt not in ("html", "markdown", "json"):
            raise InvalidInputError(
                f"Card format {fmt!r} is not known.", hint="Use html, markdown or json."
            )
        card = self.get(project, model, version, card_version=card_version)
        if fmt == "json":
            return card.model_dump_json(indent=2)
        if fmt == "markdown":
            return render_card_markdown(card)
        return render_card_html(card)

    # Internals --------------------------------------------------------------------------------
    def _written(
        self, conn: Connection, card: Any, card_version: int | None, mv: ModelVersion
    ) -> tuple[dict[str, Any], int]:
        if card is None:
            if card_version not in (None, 0):
                raise NotFoundError(
                    f"The card of {mv.name} v{mv.version} has no version {card_version}.",
                    hint="Nothing has been written on it yet.",
                )
            return {}, 0
        number = card.latest_version if card_version is None else card_version
        if not 1 <= number <= card.latest_version:
            raise NotFoundError(
                f"The card of {mv.name} v{mv.version} has no version {number}.",
                hint=f"Its versions are 1 to {card.latest_version}.",
            )
        return dict(_version_row(conn, card.id, number).content), number

    def _card(self, mv: ModelVersion, card: Any, written: dict[str, Any], number: int) -> ModelCard:
        missing = [
            path
            for path, spec in EDITABLE_FIELDS.items()
            if spec.required
            and (
                not written.get(path)
                or (path.endswith("risk_rating") and written[path] == "Unknown")
            )
        ]
        content = self._filled(mv)
        for path, value in written.items():
            section, key = path.split(".", 1)
            content.setdefault(section, {})[key] = value
        for path in EDITABLE_FIELDS:
            section, key = path.split(".", 1)
            content.setdefault(section, {}).setdefault(key, None)
        return ModelCard(
            model=mv.name,
            model_version=mv.version,
            model_version_id=mv.id,
            status="Draft" if card is None else card.status,
            card_version=number,
            complete=not missing,
            missing=missing,
            content=content,
            updated_at=None if card is None else card.updated_at,
            updated_by=None if card is None else card.updated_by,
        )

    def _filled(self, mv: ModelVersion) -> dict[str, Any]:
        manifest = self._model_manifest(mv)
        creator = mv.created_by
        params: dict[str, Any] = dict(manifest.get("params") or {})
        if mv.run_id:
            try:
                creator = TrackingService(self._ctx).get_run(mv.run_id).created_by
            except NotFoundError:
                pass
        libs = manifest.get("library_versions") or {}
        task = str(manifest.get("task") or "")
        overview = {
            "model_id": mv.id,
            "model_name": mv.name,
            "model_version": mv.version,
            "model_artifact": [f"sha256:{mv.artifact_digest}"],
            "problem_type": _PROBLEM_TYPES.get(task, task or None),
            "algorithm_type": manifest.get("algorithm"),
            "model_creator": creator,
            "registered_by": mv.created_by,
            **({"model_files_problem": manifest["_problem"]} if "_problem" in manifest else {}),
            "inference_environment": {
                "container_image": [", ".join(f"{k} {v}" for k, v in sorted(libs.items()))]
                if libs
                else []
            },
        }
        training = {
            "training_observations": (manifest.get("training") or {}).get("train_rows"),
            "training_job_details": {
                "run_id": mv.run_id,
                "target": manifest.get("target"),
                "seed": manifest.get("seed"),
                "hyper_parameters": [
                    {"name": k, "value": str(v)} for k, v in sorted(params.items())
                ],
                "training": manifest.get("training"),
                "datasets": self._training_data(mv),
            },
            # Erasures (docs/privacy.md) that removed a data subject from its training data.
            "trained_on_erased_data": erased_data_marks(self._lineage, mv.id),
        }
        return {
            "model_overview": overview,
            "intended_uses": {},
            "business_details": {},
            "training_details": training,
            "evaluation_details": self._evaluations(mv, manifest),
            "additional_information": {},
            "approval": {
                "status": mv.approval_status.value,
                "history": [
                    r.model_dump(mode="json")
                    for r in self._registry.approval_history(mv.project, mv.name, mv.version)
                ],
            },
            "deployments": [
                {"endpoint": e.name, "status": e.status}
                for e in EndpointService(self._ctx).list(mv.project)
                if e.model_version_id == mv.id
            ],
        }

    def _model_manifest(self, mv: ModelVersion) -> dict[str, Any]:
        """The model's own ``civicml-model.json`` (algorithm, task, parameters, library
        versions); ``{"_problem": why}`` when its files cannot be read — a card must still
        render, and say so, when the artifact store lost or damaged them."""
        try:
            files = self._registry.get_manifest(mv).get("files", {})
            for path, entry in files.items():
                if path == MANIFEST_FILE or path.endswith("/" + MANIFEST_FILE):
                    data = json.loads(self._ctx.artifacts.read_bytes(entry["digest"]))
                    return data if isinstance(data, dict) else {}
        except (NotFoundError, ArtifactIntegrityError) as err:
            log.warning("model card of %s v%s: %s", mv.name, mv.version, err.message)
            why = (  # no store paths on a card: it is shown to anyone who may read it
                "its files are missing from the artifact store"
                if isinstance(err, NotFoundError)
                else "its files no longer match their SHA-256 (damaged or altered)"
            )
            return {"_problem": f"{why}; run 'civicml audit verify' and restore from a backup"}
        except (ValueError, KeyError, TypeError):
            return {}
        return {}

    def _training_data(self, mv: ModelVersion) -> list[dict[str, Any]]:
        return [
            {
                "dataset": v.name,
                "version": v.version,
                "digest": f"sha256:{v.digest}",
                "rows": v.row_count,
                "columns": len(v.columns),
                "missing_by_column": {p.name: p.missing for p in v.profile if p.missing},
                "profile": [_profile_summary(p) for p in v.profile],
            }
            for v in training_datasets(self._ctx, mv)
        ]

    def _evaluations(self, mv: ModelVersion, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = [
            {
                "name": "Validation metrics",
                "type": "simple",
                "metric_data": [
                    {"name": k, "type": "number", "value": v}
                    for k, v in sorted(mv.metrics.items())
                    if v is not None
                ],
            }
        ]
        matrix = manifest.get("confusion_matrix")
        if isinstance(matrix, dict) and matrix.get("matrix"):
            groups.append(
                {
                    "name": "Confusion matrix (validation)",
                    "type": "matrix",
                    "x_axis_name": [str(x) for x in matrix.get("labels", [])],
                    "y_axis_name": [str(x) for x in matrix.get("labels", [])],
                    "value": matrix["matrix"],
                }
            )
        out = [{"name": "Validation", "evaluation_observation": "", "metric_groups": groups}]
        evaluations = EvaluationService(self._ctx)
        bias = evaluations.latest(mv.project, mv.name, mv.version, "bias_post_training")
        if bias is not None and isinstance(bias.summary, BiasSummary):
            values = bias.summary.values
            out.append(
                {
                    "name": "Bias (SageMaker Clarify metrics)",
                    "evaluation_job_arn": f"evaluation:{bias.id}",
                    "datasets": [f"{bias.dataset.dataset} v{bias.dataset.version}"],
                    "metric_groups": [
                        {
                            "name": f"{facet} = {value}",
                            "type": "simple",
                            "metric_data": [
                                {"name": code, "type": "number", "value": figure}
                                for code, figure in metrics.items()
                                if figure is not None
                            ],
                        }
                        for facet, by_value in values.items()
                        for value, metrics in by_value.items()
                    ],
                }
            )
        explanation = evaluations.latest(mv.project, mv.name, mv.version, "explanation")
        if explanation is not None and isinstance(explanation.summary, ExplanationSummary):
            top = explanation.summary.top_features[:10]
            out.append(
                {
                    "name": "Explanation (mean |SHAP| per input column)",
                    "evaluation_job_arn": f"evaluation:{explanation.id}",
                    "datasets": [f"{explanation.dataset.dataset} v{explanation.dataset.version}"],
                    "metric_groups": [
                        {
                            "name": "Global feature importance",
                            "type": "bar_chart",
                            "metric_data": [
                                {"name": t.column, "type": "number", "value": t.importance}
                                for t in top
                            ],
                        }
                    ],
                }
            )
        return out


#: The association a run's inputs are recorded with: ``dataset version --ContributedTo--> run``
#: (``TrackingService.log_input``, which ``cm.train.tabular`` calls for its dataset).
RUN_INPUT = "ContributedTo"


def training_datasets(ctx: Context, mv: ModelVersion) -> list[Any]:
    """The training data of a model version: the dataset versions its training run consumed.

    That is the run's *input* edges in lineage (``dataset version --ContributedTo--> run`` for
    the run that produced the version), not everything upstream of the version: an approval's
    evidence (the current side of a drift report, the dataset of a bias report) is upstream of
    the version too once it is approved, and is not training data. Every reader of "training
    data" — the card, the gate's ``[data]`` checks, the dashboard — uses this one definition.
    A version registered without a run has no recorded training data.
    """
    if not mv.run_id:
        return []
    try:
        graph = LineageService(ctx).query("run", mv.run_id, direction="upstream", max_depth=1)
    except NotFoundError:  # a run that never recorded lineage
        return []
    inputs = {e.src for e in graph.edges if e.dst == graph.root.id and e.kind == RUN_INPUT}
    service = DatasetService(ctx)
    out = []
    for node in graph.nodes:
        if node.id in inputs and node.kind == "dataset_version" and not node.deleted:
            try:
                out.append(service.get_version_by_id(node.ref))
            except NotFoundError:
                continue
    return sorted(out, key=lambda v: (v.name, v.version))


def erased_data_marks(lineage: LineageService, model_version_id: str) -> list[str]:
    """The erasures that removed a data subject from the version's training data (ids, oldest
    first): the version is "trained on erased data" when there is one (docs/privacy.md)."""
    try:
        node = lineage.get_node("model_version", model_version_id)
    except NotFoundError:
        return []
    marks = (node.properties or {}).get("trained_on_erased_data") or []
    return [str(m) for m in marks]


def card_etag(card: ModelCard) -> str:
    """The ETag of a card as read: its model version, status and the written version shown
    (an earlier ``card_version`` is not the current card, so its tag is stale)."""
    return make_etag("model_card", card.model_version_id, card.status, card.card_version)


def _check_card_precondition(if_match: str | None, mv: ModelVersion, card: Any) -> None:
    current = make_etag(
        "model_card",
        mv.id,
        "Draft" if card is None else card.status,
        0 if card is None else card.latest_version,
    )
    check_if_match(
        if_match,
        current,
        f"card of {mv.name} v{mv.version}",
        f"GET /api/v1/projects/{mv.project}/models/{mv.name}/versions/{mv.version}/card",
    )


def _profile_summary(p: Any) -> dict[str, Any]:
    """One column of a dataset profile, in brief: kind, missing, range and mean or top values."""
    out: dict[str, Any] = {"column": p.name, "kind": p.kind, "missing": p.missing}
    if p.kind == "numeric":
        out |= {"min": p.min, "max": p.max, "mean": p.mean}
    elif p.top:
        out["top"] = {str(t.value): t.count for t in p.top[:5]}
    return out


def _missing(written: Mapping[str, Any]) -> list[str]:
    """The required fields not written yet ('Unknown' is not a risk rating)."""
    return [
        path
        for path, spec in EDITABLE_FIELDS.items()
        if spec.required and written.get(path) in (None, "", "Unknown")
    ]


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _card_row(conn: Connection, version_id: str) -> Any:
    return conn.execute(
        select(model_cards).where(model_cards.c.model_version_id == version_id)
    ).first()


def _version_row(conn: Connection, card_id: str, number: int) -> Any:
    return conn.execute(
        select(model_card_versions).where(
            model_card_versions.c.card_id == card_id, model_card_versions.c.version == number
        )
    ).one()


def _check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fields, Mapping) or not fields:
        raise InvalidInputError(
            "No card fields were given.",
            hint="Send e.g. {'intended_uses.risk_rating': 'High'}; fields: "
            + ", ".join(EDITABLE_FIELDS),
        )
    clean: dict[str, Any] = {}
    for path, value in fields.items():
        spec = EDITABLE_FIELDS.get(path)
        if spec is None:
            raise InvalidInputError(
                f"{path!r} is not a field a person writes on a model card.",
                hint=closest(str(path), EDITABLE_FIELDS)
                or "The written fields are: " + ", ".join(EDITABLE_FIELDS) + ".",
            )
        if value is None:
            clean[path] = None
            continue
        if path.endswith("custom_details"):
            if not isinstance(value, dict) or len(json.dumps(value)) > _MAX_TEXT:
                raise InvalidInputError(
                    f"{path} must be an object of at most {_MAX_TEXT} characters as JSON.",
                    hint='Send e.g. {"data_protection_impact_assessment": "DPIA-2026-14"}.',
                )
            clean[path] = value
            continue
        if not isinstance(value, str):
            raise InvalidInputError(
                f"{path} must be text, not {type(value).__name__}.", hint="Send a string."
            )
        text = value.strip()
        if len(text) > _MAX_TEXT:
            raise InvalidInputError(
                f"{path} is {len(text)} characters; the most is {_MAX_TEXT}.",
                hint="Shorten it, or link to a longer document.",
            )
        if spec.choices and text not in spec.choices:
            raise InvalidInputError(
                f"{path} must be one of {', '.join(RISK_RATINGS)}, not {text!r}.",
                hint=closest(text, spec.choices) or "Use SageMaker's risk ratings.",
            )
        clean[path] = text or None
    return clean


def _check_note(note: str) -> str:
    if not isinstance(note, str) or len(note) > 2000:
        raise InvalidInputError("The note must be text of at most 2000 characters.", hint="")
    return note.strip()
