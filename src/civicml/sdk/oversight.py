"""Oversight from the SDK: governed approval, policies and gates, model cards, the dashboard.

``proj.models.approve(...)``, ``proj.models.set_policy(...)``, ``proj.models.gate(...)`` and
``proj.models.dashboard()`` call the functions here; ``proj.cards`` is a :class:`CardsHandle`.
Each works embedded (the services in this process) and against a server (its REST API).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from civicml.core.errors import NotFoundError
from civicml.core.ids import validate_name
from civicml.oversight import (
    ApprovalService,
    CardService,
    CardVersion,
    Dashboard,
    DashboardService,
    GateResult,
    ModelCard,
    etag,
)
from civicml.registry.schemas import ApprovalPolicyRecord, ApprovalStatus, ModelVersion

__all__ = [
    "CardsHandle",
    "change_approval",
    "dashboard",
    "export_package",
    "gate",
    "get_policy",
    "import_package",
    "set_policy",
]

_CARD_VERSIONS = TypeAdapter(list[CardVersion])


def _model_path(project: str, name: str) -> str:
    return (
        f"/api/v1/projects/{quote(validate_name('Project', project), safe='')}"
        f"/models/{quote(validate_name('Model', name), safe='')}"
    )


def _version_path(project: str, name: str, version: int | str) -> str:
    return f"{_model_path(project, name)}/versions/{quote(str(version), safe='')}"


def change_approval(
    backend: Any,
    project: str,
    name: str,
    version: int | str,
    status: ApprovalStatus | str,
    note: str,
    override_justification: str | None = None,
) -> ModelVersion:
    """Change an approval status through the gate (see :class:`ApprovalService`)."""
    if not backend.remote:
        return ApprovalService(backend.ctx).update_approval(
            project, name, version, status, note, override_justification=override_justification
        )
    value = status.value if isinstance(status, ApprovalStatus) else status
    body: dict[str, Any] = {"status": value, "note": note}
    if override_justification is not None:
        body["override_justification"] = override_justification
    data = backend._json("PUT", f"{_version_path(project, name, version)}/approval", json_body=body)
    return ModelVersion.model_validate(data)


def set_policy(
    backend: Any,
    project: str,
    name: str,
    policy: str | Path | Mapping[str, Any],
    *,
    if_match: str | None = None,
) -> ApprovalPolicyRecord:
    """Store a new version of the model's approval policy: TOML/JSON text, a file, or a dict
    (``if_match``: the current policy's ETag as read; 412 when another was set since)."""
    source: str | dict[str, Any]
    if isinstance(policy, Path):
        source = policy.read_text(encoding="utf-8")
    elif isinstance(policy, Mapping):
        source = dict(policy)
    else:
        source = policy
    if not backend.remote:
        return ApprovalService(backend.ctx).set_policy(project, name, source, if_match=if_match)
    data = backend._json(
        "PUT",
        f"{_model_path(project, name)}/policy",
        json_body={"policy": source},
        if_match=if_match,
    )
    return ApprovalPolicyRecord.model_validate(data)


def get_policy(backend: Any, project: str, name: str) -> ApprovalPolicyRecord | None:
    """The policy that applies to the model now, or ``None``."""
    if not backend.remote:
        return ApprovalService(backend.ctx).policy(project, name)
    try:
        data = backend._json("GET", f"{_model_path(project, name)}/policy")
    except NotFoundError as err:
        if "has no approval policy" in err.message:
            return None
        raise
    return ApprovalPolicyRecord.model_validate(data)


def gate(backend: Any, project: str, name: str, version: int | str) -> GateResult:
    """Evaluate the version's approval gate now (changes nothing)."""
    if not backend.remote:
        return ApprovalService(backend.ctx).check(project, name, version)
    return GateResult.model_validate(
        backend._json("GET", f"{_version_path(project, name, version)}/gate")
    )


def dashboard(backend: Any, project: str, *, include_archived: bool = False) -> Dashboard:
    """Every model version of the project with its status, deployments, bias, card and gate."""
    if not backend.remote:
        return DashboardService(backend.ctx).dashboard(project, include_archived=include_archived)
    path = f"/api/v1/projects/{quote(validate_name('Project', project), safe='')}/dashboard"
    params = {"include_archived": "true"} if include_archived else {}
    return Dashboard.model_validate(backend._json("GET", path, params=params))


def export_package(backend: Any, project: str, name: str, version: int | str, path: Path) -> str:
    """Write the signed package of a version to ``path``; returns the signer's key id."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        if backend.remote:
            response = backend.call("GET", f"{_version_path(project, name, version)}/package")
            tmp.write_bytes(response.content)
            signer = str(response.headers.get("X-CivicML-Signer", ""))
        else:
            from civicml.oversight.packages import PackageService

            with open(tmp, "wb") as sink:
                signer = PackageService(backend.ctx).export(project, name, version, sink)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return signer


def import_package(backend: Any, project: str, path: Path, name: str | None) -> ModelVersion:
    """Verify the package at ``path`` and register its model, pending local approval."""
    with open(path, "rb") as source:
        if backend.remote:
            url = f"/api/v1/projects/{quote(validate_name('Project', project), safe='')}"
            data = backend._json(
                "POST",
                f"{url}/models/import",
                content=source,
                params={} if name is None else {"name": name},
            )
            return ModelVersion.model_validate(data)
        from civicml.oversight.packages import PackageService

        return PackageService(backend.ctx).import_package(project, source, name=name)


class CardsHandle:
    """The model cards of a project's model versions.

    Example:
        >>> card = proj.cards.edit("eligibility", 2, {"intended_uses.risk_rating": "High"},
        ...                        note="risk workshop 2026-11-20")  # doctest: +SKIP
        >>> card.missing  # doctest: +SKIP
        ['model_overview.model_description', ...]
        >>> Path("card.html").write_text(proj.cards.export("eligibility", 2))  # doctest: +SKIP
    """

    def __init__(self, backend: Any, project: str) -> None:
        self._backend = backend
        self._project = project

    @property
    def _svc(self) -> CardService:
        return CardService(self._backend.ctx)

    def get(
        self,
        model: str | ModelVersion,
        version: int | str | None = None,
        *,
        card_version: int | None = None,
    ) -> ModelCard:
        """The card of a model version (``card_version``: an earlier version of its fields)."""
        name, number = _ref(model, version)
        if not self._backend.remote:
            return self._svc.get(self._project, name, number, card_version=card_version)
        params = {} if card_version is None else {"card_version": card_version}
        return ModelCard.model_validate(
            self._backend._json(
                "GET", f"{_version_path(self._project, name, number)}/card", params=params
            )
        )

    def edit(
        self,
        model: str | ModelVersion,
        version: int | str | None = None,
        fields: Mapping[str, Any] | None = None,
        *,
        note: str = "",
        if_match: str | None = None,
    ) -> ModelCard:
        """Write fields (dotted paths, e.g. ``"intended_uses.risk_rating"``): a new card version.

        ``if_match=cards.etag(card)`` refuses the edit (412) when the card changed since you
        read ``card``."""
        name, number = _ref(model, version)
        values = dict(fields or {})
        if not self._backend.remote:
            return self._svc.update(
                self._project, name, number, values, note=note, if_match=if_match
            )
        data = self._backend._json(
            "PATCH",
            f"{_version_path(self._project, name, number)}/card",
            json_body={"fields": values, "note": note},
            if_match=if_match,
        )
        return ModelCard.model_validate(data)

    def set_status(
        self,
        model: str | ModelVersion,
        version: int | str | None = None,
        *,
        status: str,
        note: str = "",
        if_match: str | None = None,
    ) -> ModelCard:
        """Move the card to Draft, PendingReview, Approved or Archived (``if_match``: the
        card's ETag as read; 412 when it changed since)."""
        name, number = _ref(model, version)
        if not self._backend.remote:
            return self._svc.set_status(
                self._project, name, number, status, note=note, if_match=if_match
            )
        data = self._backend._json(
            "POST",
            f"{_version_path(self._project, name, number)}/card/status",
            json_body={"status": status, "note": note},
            if_match=if_match,
        )
        return ModelCard.model_validate(data)

    @staticmethod
    def etag(card: ModelCard) -> str:
        """The ETag of a card as read, for ``if_match=`` of :meth:`edit` and :meth:`set_status`."""
        return etag(card)

    def history(
        self, model: str | ModelVersion, version: int | str | None = None
    ) -> builtins.list[CardVersion]:
        """Every version of the card's written fields, oldest first."""
        name, number = _ref(model, version)
        if not self._backend.remote:
            return self._svc.history(self._project, name, number)
        return _CARD_VERSIONS.validate_python(
            self._backend._json("GET", f"{_version_path(self._project, name, number)}/card/history")
        )

    def export(
        self,
        model: str | ModelVersion,
        version: int | str | None = None,
        *,
        format: str = "html",
        card_version: int | None = None,
    ) -> str:
        """The card as ``"html"`` (self-contained page), ``"markdown"`` or ``"json"``."""
        name, number = _ref(model, version)
        if not self._backend.remote:
            return self._svc.export(self._project, name, number, format, card_version=card_version)
        if format == "json":
            return self.get(name, number, card_version=card_version).model_dump_json(indent=2)
        params = {} if card_version is None else {"card_version": card_version}
        path = f"{_version_path(self._project, name, number)}/card/{format}"
        return str(self._backend.call("GET", path, params=params).text)


def _ref(model: str | ModelVersion, version: int | str | None) -> tuple[str, int | str]:
    if isinstance(model, ModelVersion):
        return model.name, model.version
    if version is None:
        raise TypeError("Give the model version: proj.cards.get('eligibility', 2).")
    return model, version
