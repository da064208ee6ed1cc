"""Stores: the metadata database, the content-addressed artifact store and the service context."""

from civicml.store.artifact_index import ArtifactIndex
from civicml.store.artifacts import ArtifactStore, LocalArtifactStore, Stored, open_artifact_store
from civicml.store.context import Context
from civicml.store.db import MetadataStore, UnitOfWork
from civicml.store.paths import validate_relative_path
from civicml.store.schemas import ArtifactInfo

__all__ = [
    "ArtifactIndex",
    "ArtifactInfo",
    "ArtifactStore",
    "Context",
    "LocalArtifactStore",
    "MetadataStore",
    "Stored",
    "UnitOfWork",
    "open_artifact_store",
    "validate_relative_path",
]
