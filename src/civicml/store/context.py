"""The collaborators every service takes: store, artifacts, principal, settings, clock."""

from __future__ import annotations

from dataclasses import dataclass, replace

from civicml.core.clock import SYSTEM_CLOCK, Clock
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.store.artifacts import ArtifactStore
from civicml.store.db import MetadataStore

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """What a service call runs with. Build one per principal; share the stores."""

    db: MetadataStore
    artifacts: ArtifactStore
    principal: Principal
    settings: Settings
    clock: Clock = SYSTEM_CLOCK

    def as_principal(self, principal: Principal) -> Context:
        """The same stores, acting for someone else (one per request on the server)."""
        return replace(self, principal=principal)
