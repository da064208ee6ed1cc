"""Routes: an endpoint as requests see it, and how a request picks its variant.

A :class:`Route` is an immutable snapshot of an endpoint — its variants, each with its loaded
model, the cumulative weights of the live ones, the shadow and the capture settings. The model
host keeps one per endpoint in a dict and replaces it whole when anything changes, so a request
in flight keeps the route (and the models) it started with: no request fails or mixes versions
during a weight change or a version switch. :meth:`Route.pick` is the whole cost of variants on
the request path: the pinned variant by name, the only live variant with weight when there is
one, else one random draw against the cumulative weights (:func:`bisect.bisect_right`).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from civicml.core.errors import NotFoundError, closest
from civicml.serving.schemas import EndpointInfo, VariantInfo, VariantRole

if TYPE_CHECKING:
    from civicml.serving.runtime import LoadedModel

__all__ = ["Route", "RouteVariant", "build_route", "no_variant", "variants_of"]


@dataclass(frozen=True, slots=True)
class RouteVariant:
    """One variant as requests see it: its id, name, loaded model, weight and shadow share."""

    id: str
    name: str
    loaded: LoadedModel
    weight: float
    shadow_percent: float


_draw = random.random


@dataclass(frozen=True, slots=True)
class Route:
    """An endpoint as requests see it: immutable, swapped whole (see the module docstring)."""

    project_id: str
    endpoint: EndpointInfo
    #: The model of the primary variant (the live one with the most weight).
    loaded: LoadedModel
    checked: float  # time.monotonic() of the last database check
    #: Live variants with a weight above 0, in order, and their cumulative weights.
    live: tuple[RouteVariant, ...]
    cumulative: tuple[float, ...]
    #: The variant every unpinned request gets (one live variant with weight), else None.
    single: RouteVariant | None
    #: Every variant by lower-case name (weight-0 and shadow ones too), for pinned requests.
    by_name: Mapping[str, RouteVariant]
    shadow: RouteVariant | None

    def pick(self, pinned: str | None) -> RouteVariant:
        """The variant of one request: ``pinned`` when given, else one weighted draw.

        Raises:
            NotFoundError: The endpoint has no variant ``pinned``.
        """
        if pinned is None:
            single = self.single
            if single is not None:
                return single
            cumulative = self.cumulative
            index = bisect.bisect_right(cumulative, _draw() * cumulative[-1])
            return self.live[min(index, len(self.live) - 1)]
        found = self.by_name.get(pinned.lower())
        if found is None:
            raise no_variant(self.endpoint, pinned, [v.name for v in self.by_name.values()])
        return found

    def signature(self) -> tuple[Any, ...]:
        """What the route serves: its variants, their models, weights and shadow percent."""
        return tuple(
            (v.id, v.name, v.loaded.version_id, v.weight, v.shadow_percent)
            for v in self.by_name.values()
        )


def no_variant(endpoint: EndpointInfo, pinned: str, names: Sequence[str]) -> NotFoundError:
    pinned = pinned[:128]
    return NotFoundError(
        f"Endpoint {endpoint.name!r} has no variant {pinned!r}.",
        hint=closest(pinned, names)
        or (
            f"Its variants: {', '.join(names)}. Pin one with the header civicml-variant "
            "(or azureml-model-deployment), or leave it out to follow the traffic weights."
        ),
        details=[{"header": "civicml-variant", "problem": "unknown variant", "got": pinned}],
    )


def variants_of(endpoint: EndpointInfo) -> list[VariantInfo]:
    """The endpoint's variants; one named after its version when it lists none."""
    if endpoint.variants:
        return endpoint.variants
    now = endpoint.updated_at
    return [
        VariantInfo(
            id=endpoint.id,
            name=f"v{endpoint.model_version}",
            role=VariantRole.LIVE,
            model_name=endpoint.model_name,
            model_version=endpoint.model_version,
            model_version_id=endpoint.model_version_id,
            weight=1.0,
            share=1.0,
            shadow_percent=0.0,
            created_at=endpoint.created_at,
            created_by=endpoint.created_by,
            updated_at=now,
            updated_by=endpoint.updated_by,
        )
    ]


def build_route(
    project_id: str, endpoint: EndpointInfo, models: Mapping[str, LoadedModel], checked: float
) -> Route:
    """The route of ``endpoint`` with ``models`` (by model version id) loaded.

    Raises:
        KeyError: A variant's model is not in ``models``.
    """
    variants = variants_of(endpoint)
    made = [
        (
            info.role,
            RouteVariant(
                id=info.id,
                name=info.name,
                loaded=models[info.model_version_id],
                weight=info.weight,
                shadow_percent=info.shadow_percent,
            ),
        )
        for info in variants
    ]
    live = tuple(v for role, v in made if role is VariantRole.LIVE and v.weight > 0)
    everyone = [v for role, v in made if role is VariantRole.LIVE]
    shadow = next((v for role, v in made if role is VariantRole.SHADOW), None)
    primary = next(
        (v for v in everyone if v.loaded.version_id == endpoint.model_version_id),
        everyone[0] if everyone else made[0][1],
    )
    if not live:  # no weights at all: everything goes to the primary variant
        live = (primary,)
    cumulative: list[float] = []
    total = 0.0
    for variant in live:
        total += variant.weight if len(live) > 1 else 1.0
        cumulative.append(total)
    return Route(
        project_id=project_id,
        endpoint=endpoint,
        loaded=primary.loaded,
        checked=checked,
        live=live,
        cumulative=tuple(cumulative),
        single=live[0] if len(live) == 1 else None,
        by_name={v.name.lower(): v for _, v in made},
        shadow=shadow if shadow is not None and shadow.shadow_percent > 0 else None,
    )
