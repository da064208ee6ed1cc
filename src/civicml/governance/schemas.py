"""Schemas of governance that cross a boundary: projects, audit events and reports, lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from civicml.core.types import StrictInt

__all__ = [
    "AuditEvent",
    "AuditProblem",
    "AuditReport",
    "AuditWarning",
    "Grant",
    "GrantRequest",
    "KeyReport",
    "KeyRotation",
    "KeyUsage",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "OIDCClientConfig",
    "Project",
    "SignedHead",
    "TokenCreate",
    "TokenCreated",
    "TokenInfo",
    "WhoAmI",
]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Project(_Schema):
    """A project: every experiment, run, model and dataset belongs to one."""

    id: str = Field(description="Project id.")
    name: str = Field(description="Unique project name.")
    description: str = Field(default="", description="Free text.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it.")


class Grant(_Schema):
    """A role granted to a user on one project."""

    user: str = Field(description="Who holds it (as the name was given).")
    role: str = Field(description="The role (docs/security.md lists each one's permissions).")
    granted_at: datetime = Field(description="When it was granted (UTC).")
    granted_by: str = Field(description="Who granted it.")


class GrantRequest(_Schema):
    """What to grant or revoke (``POST /api/v1/projects/{project}/grants``)."""

    user: str = Field(description="The user or service account.", max_length=128)
    role: str = Field(description="A built-in or custom role.", max_length=64)


class KeyUsage(_Schema):
    """One key-encryption key of the artifact store."""

    key_id: str = Field(description="The key's id (never its material).")
    current: bool = Field(description="Whether new artifacts are wrapped under it.")
    objects: int = Field(description="Stored artifacts whose data key it wraps.")


class KeyReport(_Schema):
    """Every key-encryption key, and what is still stored in plaintext."""

    encrypt: bool = Field(description="Whether new artifacts are encrypted (encrypt_artifacts).")
    keys: list[KeyUsage]
    plaintext_objects: int = Field(description="Artifacts stored before encryption was on.")
    unknown_keys: dict[str, int] = Field(
        description="Key ids that artifacts name but the key provider does not hold (their "
        "artifacts cannot be read), with how many use each."
    )


class KeyRotation(_Schema):
    """What a rotation did."""

    key_id: str = Field(description="The new current key.")
    previous_key_id: str | None = Field(description="The key that was current before.")
    rewrapped: int = Field(description="Artifact data keys re-wrapped under the new key.")
    encrypted: int = Field(description="Plaintext artifacts encrypted on the way.")


class AuditEvent(_Schema):
    """One entry of the hash-chained audit trail."""

    seq: int = Field(description="Position in the chain, from 1.")
    id: str = Field(description="Event id.")
    at: str = Field(description="When (ISO-8601 UTC), exactly as hashed.")
    actor: str = Field(description="The user who made the change.")
    roles: list[str] = Field(description="The roles they acted in.")
    action: str = Field(description="What happened, e.g. 'model_version.approved'.")
    entity_kind: str = Field(description="Kind of thing changed, e.g. 'model_version'.")
    entity_id: str = Field(description="Id of the thing changed.")
    project: str | None = Field(default=None, description="Project name, if any.")
    before: dict[str, Any] | None = Field(default=None, description="Summary before the change.")
    after: dict[str, Any] | None = Field(default=None, description="Summary after the change.")
    prev_hash: str = Field(description="Hash of the previous event (64 zeros for the first).")
    hash: str = Field(description="SHA-256 of this event's canonical JSON.")


class SignedHead(_Schema):
    """A chain head signed with the installation's Ed25519 key (kept outside the database)."""

    seq: int = Field(description="Sequence number of the head event.")
    hash: str = Field(description="Hash of the head event.")
    signed_at: str = Field(description="When it was signed (ISO-8601 UTC).")
    public_key: str = Field(description="Raw Ed25519 public key, hex.")
    signature: str = Field(description="Ed25519 signature, hex.")


class AuditProblem(_Schema):
    """The first place where the chain does not hold."""

    seq: int = Field(description="Sequence number of the first bad event.")
    event_id: str | None = Field(default=None, description="Its id, when the row exists.")
    reason: str = Field(description="What is wrong.")


class AuditWarning(_Schema):
    """Something verification noticed that does not break the chain (it still passes)."""

    kind: Literal["clock_went_backwards", "unsigned_tail", "more_warnings"] = Field(
        description="'clock_went_backwards': the event is timestamped earlier than an event "
        "before it in the chain (a writer's clock was wrong); 'unsigned_tail': the newest events "
        "are not covered by a signed head yet (their writer signs within "
        "audit_witness_interval_ms, or the next write does); 'more_warnings': a count of the "
        "warnings left out of this list."
    )
    seq: int = Field(description="Sequence number of the event concerned (0 for a count).")
    event_id: str | None = Field(default=None, description="Its id.")
    message: str = Field(description="What was noticed.")


AuditVerdict = Literal["verified", "failed", "unwitnessed"]


class AuditReport(_Schema):
    """The result of ``civicml audit verify``."""

    ok: bool = Field(description="True when the chain, its head and the signed witness hold.")
    verdict: AuditVerdict = Field(
        default="verified",
        description="'verified': everything holds (ok); 'failed': the chain, its head or the "
        "signed head does not hold (tampering or damage; see problems); 'unwitnessed': the chain "
        "links correctly but this home holds no signed head for it, so truncation or a "
        "recomputed chain cannot be ruled out (not a tamper verdict; see problems for how to "
        "point verification at the witness).",
    )
    events_checked: int = Field(description="Events whose hash and link were verified.")
    head_seq: int = Field(description="Last verified sequence number.")
    head_hash: str = Field(description="Hash of the last verified event.")
    witness: SignedHead | None = Field(default=None, description="The signed head checked.")
    problems: list[AuditProblem] = Field(default_factory=list, description="What failed.")
    warnings: list[AuditWarning] = Field(
        default_factory=list,
        description="What was noticed without failing verification, e.g. events whose "
        "timestamps go backwards (at most 100, then a count).",
    )


NodeKind = Literal[
    "project",
    "experiment",
    "run",
    "dataset_version",
    "model",
    "model_version",
    "endpoint",
    "report",
    "artifact",
    "pipeline_run",
]
EdgeKind = Literal["ContributedTo", "AssociatedWith", "DerivedFrom", "Produced", "SameAs"]


class LineageNode(_Schema):
    """An entity in the lineage graph (SageMaker's Artifact / Action / Context)."""

    id: str = Field(description="Node id.")
    kind: str = Field(description="Entity kind, e.g. 'run' or 'model_version'.")
    ref: str = Field(description="Id of the entity it stands for.")
    name: str = Field(description="Human-readable name, e.g. 'eligibility v3'.")
    project_id: str | None = Field(default=None, description="Owning project id.")
    properties: dict[str, Any] | None = Field(default=None, description="Extra facts.")
    deleted: bool = Field(default=False, description="The entity was deleted; the node remains.")


class LineageEdge(_Schema):
    """A directed association: data or responsibility flows from ``src`` to ``dst``."""

    src: str = Field(description="Upstream node id.")
    dst: str = Field(description="Downstream node id.")
    kind: str = Field(description="Association type (SageMaker's AssociationType).")


class LineageGraph(_Schema):
    """The answer to an upstream/downstream query."""

    root: LineageNode = Field(description="The node the query started from.")
    direction: Literal["upstream", "downstream", "both"] = Field(description="Query direction.")
    nodes: list[LineageNode] = Field(description="Every node reached, the root included.")
    edges: list[LineageEdge] = Field(description="Every edge between reached nodes.")


# API tokens ------------------------------------------------------------------------------------
class TokenCreate(_Schema):
    """What to create an API token with (``POST /api/v1/tokens``)."""

    name: str = Field(description="A label for the token (e.g. 'laptop', 'ci-nightly').")
    kind: Literal["personal", "service"] = Field(
        default="personal",
        description="'personal': acts as you, with at most your roles. 'service': a service "
        "account (CI pipeline, endpoint caller); only a platform admin creates one.",
    )
    owner: str | None = Field(
        default=None,
        description="Service accounts only: the account's name (recorded as the actor of "
        "its calls). Personal tokens are always yours.",
    )
    roles: list[str] | None = Field(
        default=None,
        description="Roles the token acts in; default your own (personal) or none (service).",
    )
    projects: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Projects the token may reach; ['*'] for all.",
    )
    endpoint: str | None = Field(
        default=None,
        description="'project/endpoint': the token may only invoke that endpoint.",
    )
    expires_in_days: StrictInt | None = Field(
        default=90,
        ge=1,
        le=3650,
        description="Days until the token expires; null for a token that never expires.",
    )


class TokenInfo(_Schema):
    """An API token as listed: never its secret, never its hash."""

    id: str = Field(description="Token id (what revoke takes).")
    name: str = Field(description="Its label.")
    owner: str = Field(description="Who it acts as.")
    kind: Literal["personal", "service"] = Field(description="personal or service.")
    prefix: str = Field(description="The first characters of the secret, to recognise it.")
    projects: list[str] = Field(description="Projects it may reach (['*']: all).")
    roles: list[str] = Field(description="Roles it acts in.")
    endpoint: str | None = Field(default=None, description="The one endpoint it may invoke.")
    created_at: datetime = Field(description="When it was created (UTC).")
    created_by: str = Field(description="Who created it.")
    expires_at: datetime | None = Field(default=None, description="When it expires (UTC).")
    revoked_at: datetime | None = Field(default=None, description="When it was revoked.")
    revoked_by: str | None = Field(default=None, description="Who revoked it.")
    last_used_at: datetime | None = Field(
        default=None, description="Last time it authenticated a request (to the minute)."
    )
    status: Literal["active", "expired", "revoked"] = Field(description="Whether it works.")


class TokenCreated(_Schema):
    """The answer to creating a token: the secret, shown this once and never again."""

    token: TokenInfo
    secret: str = Field(description="The token itself; store it now, it cannot be shown again.")


class OIDCClientConfig(_Schema):
    """Where ``civicml login --oidc`` signs in (``GET /api/v1/auth/oidc``, public)."""

    issuer: str = Field(description="The OpenID Connect issuer URL (setting oidc_issuer).")
    client_id: str = Field(
        description="The public client the CLI signs in as with the device grant "
        "(setting oidc_client_id, default oidc_audience)."
    )
    audience: str = Field(description="The 'aud' the server requires (oidc_audience).")
    scopes: list[str] = Field(
        default_factory=list, description="Scopes to ask for besides 'openid' (oidc_scopes)."
    )


class WhoAmI(_Schema):
    """Who the server takes the caller for (``GET /api/v1/whoami``)."""

    user: str
    roles: list[str]
    auth: Literal["none", "token"]
    token: TokenInfo | None = None
