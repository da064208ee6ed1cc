"""The collaborators every service takes: store, artifacts, principal, settings, clock."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from civicml.core.clock import SYSTEM_CLOCK, Clock
from civicml.core.identity import Principal
from civicml.core.settings import Settings
from civicml.store.artifacts import ArtifactStore, artifact_store_for
from civicml.store.db import MetadataStore

__all__ = ["Context", "shippable_settings", "worker_context"]


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


def shippable_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for a worker on another process or machine, without the API
    token (a worker reaches the stores directly, never a server). The stores are named
    explicitly — database URL, artifact location, key directory — so a worker's own
    environment cannot point it elsewhere."""
    data = settings.model_dump(exclude={"token"}, exclude_none=True)
    data["db_url"] = settings.database_url
    data["artifacts"] = (
        settings.artifacts if settings.artifacts_s3 else str(settings.artifacts_root)
    )
    data["keys_dir"] = str(settings.keys_root)
    return data


_WORKER_STORES: dict[str, tuple[MetadataStore, ArtifactStore, Settings]] = {}
_WORKER_LOCK = threading.Lock()


def worker_context(settings: dict[str, Any], principal: Principal) -> Context:
    """A Context for work handed out by a coordinator (a Ray task): the stores ``settings``
    name (from :func:`shippable_settings`), acting as the coordinator's ``principal``.

    The stores are opened once per worker process and shared by its tasks. Unlike opening the
    embedded platform, nothing is recovered here: the coordinator's runs are alive, and only
    the coordinator may judge them abandoned.
    """
    import json

    key = json.dumps(settings, sort_keys=True, default=str)
    with _WORKER_LOCK:
        found = _WORKER_STORES.get(key)
        if found is None:
            loaded = Settings.load(**settings)
            loaded.home.mkdir(parents=True, exist_ok=True)
            found = (
                MetadataStore(loaded.database_url, busy_timeout_s=loaded.db_busy_timeout_s),
                artifact_store_for(loaded),
                loaded,
            )
            _WORKER_STORES[key] = found
    db, artifacts, loaded = found
    return Context(db=db, artifacts=artifacts, principal=principal, settings=loaded)
