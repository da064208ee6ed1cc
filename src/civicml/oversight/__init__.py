"""Human oversight of models before they decide about people.

* :class:`CardService` — a model card per model version in SageMaker's schema and statuses:
  filled from the registry, lineage and reports; written fields versioned and audited; exported
  as HTML, Markdown or JSON.
* :class:`ApprovalService` — approval policies per registered model (a small TOML file, see
  :mod:`civicml.oversight.policy`) evaluated as a gate whenever a version is approved; a failed
  gate refuses the approval unless someone with an override role writes a justification.
  Separation of duties is enforced by the registry.
* :class:`DashboardService` — every model version of a project with its status, deployments,
  metrics, bias figures, card and gate.
* :func:`etag` — the ETag of a model version, alias, card or policy, for ``if_match=``.
"""

from civicml.oversight.approvals import ApprovalService, GateCheck, GateFailedError, GateResult
from civicml.oversight.card_fields import EDITABLE_FIELDS, CardVersion, ModelCard
from civicml.oversight.cards import CardService
from civicml.oversight.dashboard import Dashboard, DashboardRow, DashboardService
from civicml.oversight.etags import etag
from civicml.oversight.policy import ApprovalPolicy, parse_policy

__all__ = [
    "EDITABLE_FIELDS",
    "ApprovalPolicy",
    "ApprovalService",
    "CardService",
    "CardVersion",
    "Dashboard",
    "DashboardRow",
    "DashboardService",
    "GateCheck",
    "GateFailedError",
    "GateResult",
    "ModelCard",
    "etag",
    "parse_policy",
]
