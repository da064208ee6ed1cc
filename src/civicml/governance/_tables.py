"""Rows of governance: projects, the audit chain and the lineage graph."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from civicml.store.schema import ID, BigID, JSONDoc, Name, UTCDateTime, metadata

projects = Table(
    "projects",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", Name, nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
)
# Names are unique regardless of letter case (migration 0007); lookups compare lower(name).
Index("uq_projects_name_ci", func.lower(projects.c.name), unique=True)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigID, primary_key=True, autoincrement=False),
    Column("id", ID, nullable=False, unique=True),
    Column("at", String(40), nullable=False),  # ISO-8601 UTC, exactly as hashed
    Column("actor", String(128), nullable=False),
    Column("roles", String(512), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity_kind", String(32), nullable=False),
    Column("entity_id", String(256), nullable=False),
    Column("project", String(128), nullable=True),
    Column("before", Text, nullable=True),  # canonical JSON, exactly as hashed
    Column("after", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_entity", "entity_kind", "entity_id"),
    Index("ix_audit_events_project", "project"),
)

# One row (id=1): the chain head. Appenders lock it (SELECT ... FOR UPDATE on PostgreSQL; SQLite
# writers are already serialised by BEGIN IMMEDIATE), so the chain never forks.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigID, nullable=False),
    Column("hash", String(64), nullable=False),
)

lineage_nodes = Table(
    "lineage_nodes",
    metadata,
    Column("id", ID, primary_key=True),
    # Not indexed: nothing reads nodes by project (migration 0026 dropped the index).
    Column("project_id", ID, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("ref", String(256), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("properties", JSONDoc, nullable=True),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "ref"),
)

lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("src", ID, ForeignKey("lineage_nodes.id"), primary_key=True),
    Column("dst", ID, ForeignKey("lineage_nodes.id"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_lineage_edges_dst", "dst"),
)

# API tokens (migration 0008): only the SHA-256 of a token is stored; ``prefix`` (the first
# characters of the token) lets a person tell their tokens apart in a listing.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", Name, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # personal | service
    Column("prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("projects", JSONDoc, nullable=False),  # ["*"] or project names
    Column("roles", JSONDoc, nullable=False),
    Column("endpoint", String(300), nullable=True),  # "project/endpoint": may only invoke it
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_by", String(128), nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Index("ix_api_tokens_owner", "owner"),
)

# Signed chain heads kept in the database (migration 0010; ``audit_witness = "database"``): one
# row per commit, signed with the audit key from keys_dir, so every server sharing that key and
# this database can vouch for the chain. The signature makes a row tamper-evident; deleting the
# newest rows is caught only by a home's witness file (see docs/audit.md).
audit_signed_heads = Table(
    "audit_signed_heads",
    metadata,
    Column("public_key", String(64), primary_key=True),  # hex of the raw Ed25519 public key
    Column("seq", BigID, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("signed_at", String(40), nullable=False),  # exactly as signed
    Column("signature", String(128), nullable=False),
)

# Roles granted on one project (migration 0012). ``user_key`` is the user name as identities are
# compared (NFKC, case-folded: civicml.core.names.user_key); ``user`` keeps it as it was given.
project_grants = Table(
    "project_grants",
    metadata,
    Column("project_id", ID, ForeignKey("projects.id"), primary_key=True),
    Column("user_key", String(128), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("user", String(128), nullable=False),
    Column("granted_at", UTCDateTime, nullable=False),
    Column("granted_by", String(128), nullable=False),
    Index("ix_project_grants_user_key", "user_key"),
)
