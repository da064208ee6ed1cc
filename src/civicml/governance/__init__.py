"""Governance: projects, the tamper-evident audit trail and the lineage graph."""

from civicml.governance.audit import AuditSigner, AuditTrail, verify_export
from civicml.governance.lineage import LineageService
from civicml.governance.projects import ProjectService
from civicml.governance.schemas import (
    AuditEvent,
    AuditProblem,
    AuditReport,
    AuditWarning,
    LineageEdge,
    LineageGraph,
    LineageNode,
    Project,
    SignedHead,
)

__all__ = [
    "AuditEvent",
    "AuditProblem",
    "AuditReport",
    "AuditSigner",
    "AuditTrail",
    "AuditWarning",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "LineageService",
    "Project",
    "ProjectService",
    "SignedHead",
    "verify_export",
]
