"""Privacy: retention periods and legal holds of datasets and captured requests, enforced by a
scheduled pass; erasure of a data subject through lineage, with a certificate."""

from civicml.privacy.erasure import ErasureService
from civicml.privacy.retention import RetentionLoop, RetentionService
from civicml.privacy.rules import RuleService
from civicml.privacy.schemas import (
    CaptureErasure,
    Erasure,
    ErasureCreate,
    ErasureSummary,
    FlaggedModel,
    HoldSet,
    RetentionResult,
    RetentionRule,
    RetentionSet,
    TargetKind,
    VersionErasure,
)

__all__ = [
    "CaptureErasure",
    "Erasure",
    "ErasureCreate",
    "ErasureService",
    "ErasureSummary",
    "FlaggedModel",
    "HoldSet",
    "RetentionLoop",
    "RetentionResult",
    "RetentionRule",
    "RetentionService",
    "RetentionSet",
    "RuleService",
    "TargetKind",
    "VersionErasure",
]
