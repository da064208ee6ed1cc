"""Model registry: registered models, versions, approval status, aliases.

A registered model groups the versions of one model in a project. Each version points at a
content-addressed manifest of its files, starts ``PendingManualApproval`` and is approved or
rejected with a recorded reason; aliases such as ``production`` name the version to serve.
"""

from civicml.registry.schemas import (
    ApprovalRecord,
    ApprovalStatus,
    ColumnSpec,
    ModelVersion,
    RegisteredModel,
    Signature,
)
from civicml.registry.service import RegistryService

__all__ = [
    "ApprovalRecord",
    "ApprovalStatus",
    "ColumnSpec",
    "ModelVersion",
    "RegisteredModel",
    "RegistryService",
    "Signature",
]
