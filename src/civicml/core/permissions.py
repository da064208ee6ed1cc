"""What a role may do: the permission catalog and the built-in roles (data only).

Permissions are ``<area>.<action>``. A role is a set of permissions; the built-in roles are
modelled on SageMaker Role Manager's personas and Azure Machine Learning's built-in roles, and
``[custom_roles]`` in the settings adds roles of one's own. A role name that is neither built in
nor custom (``risk_officer`` in an approval policy's override list) is a *label*: it gives no
permission. :class:`civicml.governance.access.Access` applies these; docs/security.md shows them
as the permission matrix (a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "ADMIN_ROLE",
    "BUILTIN_ROLES",
    "PERMISSIONS",
    "PLATFORM_PERMISSIONS",
    "PROJECT_PERMISSIONS",
    "role_table",
]

#: The platform role: every permission on every project, and the platform permissions.
ADMIN_ROLE = "admin"

#: Permissions on one project, with what each allows.
PROJECT_PERMISSIONS: dict[str, str] = {
    "projects.read": "see the project, its members and its dashboard",
    "datasets.read": "list, show and download dataset versions; list and show batch jobs",
    "datasets.write": "ingest dataset versions; turn captured requests into a dataset; run "
    "batch prediction jobs",
    "datasets.override_quarantine": "release a quarantined dataset version, or justify training "
    "on one classified personal",
    "sources.read": "list and show database and stream sources, their runs, lag and throughput",
    "sources.write": "add, change, run and remove database and stream sources",
    "experiments.read": "list and show experiments, runs, metrics and run artifacts",
    "experiments.write": "create experiments and runs; log params, metrics, tags, artifacts",
    "models.read": "models, versions, manifests, aliases, approvals, gates, policies, cards",
    "models.write": "create models, register, archive and delete versions, set aliases, "
    "import packages",
    "models.export": "export a version as a signed package",
    "models.approve": "approve or reject a version",
    "policies.write": "set a model's approval policy",
    "cards.write": "edit a model card and its status",
    "evaluations.read": "list and show bias and explanation evaluations",
    "evaluations.write": "compute bias and explanation evaluations",
    "monitoring.read": "list and show drift reports, monitors and their executions, alerts",
    "monitoring.write": "compute drift reports; manage monitors, ground truth and alert rules",
    "endpoints.read": "list and show endpoints",
    "endpoints.write": "deploy, update and delete endpoints",
    "endpoints.invoke": "send requests to an endpoint",
    "lineage.read": "walk the lineage graph",
    "audit.read": "read the project's audit events",
    "members.write": "grant and revoke roles on the project",
    "privacy.retention": "set retention periods and legal holds of datasets and captured "
    "requests; enforce retention now",
    "privacy.erase": "carry out erasure requests for a data subject; read their certificates",
}

#: Permissions that are not about one project; only roles held on every project give them.
PLATFORM_PERMISSIONS: dict[str, str] = {
    "projects.create": "create projects",
    "audit.verify": "verify and export the whole audit chain; read events of no project",
    "tokens.admin": "create service-account tokens; list and revoke everyone's tokens",
    "keys.admin": "list, rotate and retire the encryption keys; encrypt plaintext artifacts",
    "metrics.read": "scrape the server's Prometheus metrics (GET /metrics)",
}

PERMISSIONS: dict[str, str] = {**PROJECT_PERMISSIONS, **PLATFORM_PERMISSIONS}

_READ = frozenset(
    {
        "projects.read",
        "datasets.read",
        "sources.read",
        "experiments.read",
        "models.read",
        "evaluations.read",
        "monitoring.read",
        "endpoints.read",
        "lineage.read",
    }
)

#: The built-in roles (SageMaker personas / Azure ML roles, docs/security.md).
BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "viewer": _READ,
    "data-scientist": _READ
    | {
        "datasets.write",
        "sources.write",
        "experiments.write",
        "models.write",
        "evaluations.write",
        "monitoring.write",
        "cards.write",
    },
    "ml-engineer": _READ
    | {
        "datasets.write",
        "sources.write",
        "experiments.write",
        "models.write",
        "models.export",
        "monitoring.write",
        "endpoints.write",
        "endpoints.invoke",
    },
    "reviewer": _READ
    | {
        "models.approve",
        "policies.write",
        "cards.write",
        "evaluations.write",
        "audit.read",
        "datasets.override_quarantine",
    },
    "auditor": _READ | {"audit.read", "audit.verify"},
    "invoker": frozenset({"endpoints.invoke"}),
    "project-admin": frozenset(PROJECT_PERMISSIONS),
    ADMIN_ROLE: frozenset(PERMISSIONS),
}


def role_table(custom: Mapping[str, Sequence[str]] | None = None) -> dict[str, frozenset[str]]:
    """The built-in roles and the ``custom`` ones (the ``custom_roles`` setting).

    Raises:
        ValueError: A custom role redefines a built-in one or names an unknown permission.
    """
    table = dict(BUILTIN_ROLES)
    for name, permissions in (custom or {}).items():
        if name in BUILTIN_ROLES:
            raise ValueError(f"custom role {name!r} redefines a built-in role; choose another name")
        unknown = sorted(set(permissions) - set(PERMISSIONS))
        if unknown:
            raise ValueError(
                f"custom role {name!r} names unknown permission(s) {', '.join(unknown)}; "
                "the permissions are listed in docs/security.md"
            )
        table[name] = frozenset(permissions)
    return table
