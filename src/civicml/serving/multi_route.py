"""Multi-model routes: a multi-model endpoint as requests see it, and how a request names its
model.

A request to a multi-model endpoint names its model in the header ``X-Civicml-Target-Model:
MODEL[/VERSION]`` (SageMaker's ``TargetModel``) or in the path (``…/models/MODEL/invocations``).
``MODEL`` alone is the newest version of that model the endpoint holds; ``VERSION`` is a number
or the alias the version was added by. The value is checked before anything else reads it: at
most :data:`MAX_TARGET` characters, entity-name characters only, else a 400 — a hostile header
never reaches a log line, a database query or a file path.

A :class:`MultiRoute` is immutable like :class:`~civicml.serving.routing.Route` and swapped whole
when the endpoint's models change; its :class:`~civicml.serving.model_cache.ModelCache` (the
models loaded now) carries over from one route of the endpoint to the next, less the models
that were removed. Each loaded model is a one-variant :class:`RouteVariant` named after its
target (``eligibility/3``), so counting, capture and Prometheus label it per model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from civicml.core.errors import BadRequestError, ConflictError, NotFoundError, closest
from civicml.registry.schemas import ApprovalStatus, ModelVersion
from civicml.registry.service import RegistryService
from civicml.serving.model_cache import ModelCache
from civicml.serving.routing import Route, RouteVariant
from civicml.serving.schemas import EndpointInfo

__all__ = [
    "MAX_TARGET",
    "TARGET_HEADER",
    "Member",
    "MultiRoute",
    "build_multi_route",
    "check_servable",
    "not_multi_model",
    "parse_target",
]

#: The request header naming the model of a multi-model endpoint (and the response header
#: naming the one that answered).
TARGET_HEADER = "x-civicml-target-model"
#: The longest target accepted: a model name and a version, each at most 128 characters.
MAX_TARGET = 257
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_TARGET = re.compile(rf"({_PART})(?:/({_PART}))?")
#: A megabyte of the cache limit.
MB = 1 << 20


def parse_target(value: str) -> tuple[str, str | None]:
    """``(model, version or None)`` of a target ``MODEL[/VERSION]``.

    Raises:
        BadRequestError: It is empty, longer than :data:`MAX_TARGET` or has characters outside
            letters, digits, ``.``, ``_``, ``-`` (and one ``/``).
    """
    text = value.strip()
    if len(text) > MAX_TARGET:
        raise BadRequestError(
            f"The target model is {len(text)} characters long; at most {MAX_TARGET} are allowed.",
            hint="Send X-Civicml-Target-Model: MODEL or MODEL/VERSION, e.g. eligibility/3.",
            details=[{"header": TARGET_HEADER, "problem": "too long"}],
        )
    found = _TARGET.fullmatch(text)
    if found is None:
        raise BadRequestError(
            "The target model is not MODEL or MODEL/VERSION made of letters, digits, '.', '_' "
            "or '-'.",
            hint="Send X-Civicml-Target-Model: MODEL or MODEL/VERSION, e.g. eligibility/3 or "
            "eligibility/production.",
            details=[{"header": TARGET_HEADER, "problem": "malformed"}],
        )
    return found.group(1), found.group(2)


@dataclass(frozen=True, slots=True)
class Member:
    """One model version a multi-model endpoint holds."""

    id: str
    model_name: str
    version: int
    version_id: str
    ref: str
    size_bytes: int

    @property
    def target(self) -> str:
        """``MODEL/VERSION``: how requests and answers name it."""
        return f"{self.model_name}/{self.version}"


@dataclass(frozen=True, slots=True)
class MultiRoute:
    """A multi-model endpoint as requests see it: immutable, swapped whole."""

    project_id: str
    endpoint: EndpointInfo
    checked: float  # time.monotonic() of the last database check
    #: Members by lower-case model name, newest version first.
    by_model: Mapping[str, tuple[Member, ...]]
    #: The loaded models (by model version id), shared by the endpoint's successive routes.
    cache: ModelCache[RouteVariant]

    def member(self, target: str | None) -> Member:
        """The member a request's target names.

        Raises:
            BadRequestError: No target, or a malformed one.
            NotFoundError: The endpoint holds no such model or version (close names as hint).
        """
        if target is None:
            raise BadRequestError(
                f"Endpoint {self.endpoint.name!r} is a multi-model endpoint; the request must "
                "name its model.",
                hint="Send the header X-Civicml-Target-Model: MODEL[/VERSION] (or POST to "
                f".../endpoints/{self.endpoint.name}/models/MODEL/invocations). Its models: "
                f"{self._some()}.",
                details=[{"header": TARGET_HEADER, "problem": "missing"}],
            )
        model, version = parse_target(target)
        held = self.by_model.get(model.lower())
        if held is None:
            names = [m[0].model_name for m in self.by_model.values()]
            raise NotFoundError(
                f"Endpoint {self.endpoint.name!r} serves no model {model!r}.",
                hint=closest(model, names) or f"Its models: {self._some()}.",
                details=[{"header": TARGET_HEADER, "problem": "unknown model", "got": model}],
            )
        if version is None:
            return held[0]
        for member in held:
            if version.isdigit() and int(version) == member.version:
                return member
            if not version.isdigit() and version.lower() == member.ref.lower():
                return member
        versions = ", ".join(m.target for m in held)
        raise NotFoundError(
            f"Endpoint {self.endpoint.name!r} holds no version {version!r} of model "
            f"{held[0].model_name!r}.",
            hint=f"It holds {versions}; add another with civicml endpoints models add "
            f"{self.endpoint.name} {held[0].model_name} VERSION.",
            details=[{"header": TARGET_HEADER, "problem": "unknown version", "got": version}],
        )

    def route_for(self, variant: RouteVariant) -> Route:
        """A one-variant route answering with ``variant`` (a loaded member)."""
        return Route(
            project_id=self.project_id,
            endpoint=self.endpoint,
            loaded=variant.loaded,
            checked=self.checked,
            live=(variant,),
            cumulative=(1.0,),
            single=variant,
            by_name={},
            shadow=None,
        )

    def _some(self, most: int = 10) -> str:
        targets = [m.target for held in self.by_model.values() for m in held]
        more = f" and {len(targets) - most} more" if len(targets) > most else ""
        return ", ".join(targets[:most]) + more


def build_multi_route(
    project_id: str,
    endpoint: EndpointInfo,
    rows: Sequence[Any],
    current: object,
    limit_bytes: int,
    checked: float,
) -> MultiRoute:
    """The route of a multi-model endpoint with its model rows; the cache of ``current``
    (the endpoint's previous route, if it was one) carries over, resized and less the models
    that were removed."""
    members: dict[str, list[Member]] = {}
    for row in rows:
        member = Member(
            id=row.id,
            model_name=row.model_name,
            version=int(row.model_version),
            version_id=row.model_version_id,
            ref=row.ref,
            size_bytes=int(row.size_bytes),
        )
        members.setdefault(member.model_name.lower(), []).append(member)
    by_model = {k: tuple(sorted(v, key=lambda m: -m.version)) for k, v in members.items()}
    if isinstance(current, MultiRoute) and current.endpoint.id == endpoint.id:
        cache = current.cache
        if cache.limit_bytes != limit_bytes:
            cache.resize(limit_bytes)
        cache.discard(m.version_id for held in by_model.values() for m in held)
    else:
        cache = ModelCache(limit_bytes)
    return MultiRoute(project_id, endpoint, checked, by_model, cache)


def check_servable(registry: RegistryService, mv: ModelVersion) -> str:
    """Refuse ``mv`` unless it may be served now: Approved, not archived, its files the ones its
    approval bound and its registration signature verifying (what deploy checks); returns the
    signature status (``"verified"`` or ``"absent"``).

    Raises:
        ConflictError: It is not Approved, or archived.
        ArtifactIntegrityError: Its files are not the ones its approval bound, or its
            signature does not verify.
    """
    label = f"{mv.name}/{mv.version}"
    if mv.approval_status is not ApprovalStatus.APPROVED:
        raise ConflictError(
            f"Model version {label} is {mv.approval_status.value}; only Approved versions are "
            "served.",
            hint=f"Approve it first: civicml models approve {mv.name} {mv.version} --note "
            f"'<why>' --project {mv.project}",
        )
    if mv.archived:
        raise ConflictError(
            f"Model version {label} is archived; archived versions are not served.",
            hint=f"Unarchive it first: civicml models unarchive {mv.name} {mv.version} "
            f"--project {mv.project}",
        )
    registry.check_approved_files(mv)
    return registry.verify_version_signature(mv)


def not_multi_model(endpoint: str) -> BadRequestError:
    """The error for a target model sent to a single-model endpoint."""
    return BadRequestError(
        f"Endpoint {endpoint!r} serves one model by its variants; it takes no target model.",
        hint="Leave out X-Civicml-Target-Model (pin a variant with civicml-variant instead), "
        "or invoke a multi-model endpoint.",
        details=[{"header": TARGET_HEADER, "problem": "not a multi-model endpoint"}],
    )
