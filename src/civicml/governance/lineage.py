"""The lineage graph: typed nodes and associations, written in the change's own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import Connection, insert, select, update

from civicml.core.errors import InvalidInputError, NotFoundError
from civicml.core.ids import new_id
from civicml.governance._tables import lineage_edges, lineage_nodes, projects
from civicml.governance.access import Access
from civicml.governance.schemas import LineageEdge, LineageGraph, LineageNode
from civicml.store.context import Context
from civicml.store.db import UnitOfWork
from civicml.store.schema import bind_utc

__all__ = ["EDGE_KINDS", "LineageService"]

EDGE_KINDS = frozenset({"ContributedTo", "AssociatedWith", "DerivedFrom", "Produced", "SameAs"})
_MAX_DEPTH = 50
_INSERT_NODE = insert(lineage_nodes)


class LineageService:
    """Records and queries lineage. Writers call :meth:`node` and :meth:`link` inside their uow."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # Writing --------------------------------------------------------------------------------
    def node(
        self,
        uow: UnitOfWork,
        kind: str,
        ref: str,
        *,
        name: str = "",
        project_id: str | None = None,
        properties: dict[str, Any] | None = None,
    ) -> str:
        """Get or create the node for entity (kind, ref); returns its id."""
        conn = uow.conn
        existing = conn.execute(
            select(lineage_nodes.c.id).where(
                lineage_nodes.c.kind == kind, lineage_nodes.c.ref == ref
            )
        ).scalar()
        if existing is not None:
            return str(existing)
        return self.new_node(
            uow, kind, ref, name=name, project_id=project_id, properties=properties
        )

    def new_node(
        self,
        uow: UnitOfWork,
        kind: str,
        ref: str,
        *,
        name: str = "",
        project_id: str | None = None,
        properties: dict[str, Any] | None = None,
    ) -> str:
        """Create the node for an entity made in this transaction (so it has none yet)."""
        node_id = new_id()
        if properties is None and uow.conn.dialect.name == "sqlite":
            # A plain DB-API statement (runs are created by the thousand); SQL NULL properties
            # and 0 for false, as SQLAlchemy writes them on SQLite.
            cursor, _mark = uow.driver_cursor()
            cursor.execute(
                "INSERT INTO lineage_nodes (id, kind, ref, name, project_id, properties, "
                "deleted, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    node_id,
                    kind,
                    ref,
                    name or ref,
                    project_id,
                    None,
                    False,
                    bind_utc(self._ctx.clock.now(), "sqlite"),
                ),
            )
            return node_id
        uow.conn.execute(
            _INSERT_NODE,
            {
                "id": node_id,
                "kind": kind,
                "ref": ref,
                "name": name or ref,
                "project_id": project_id,
                "properties": properties,
                "deleted": False,
                "created_at": self._ctx.clock.now(),
            },
        )
        return node_id

    def link(self, uow: UnitOfWork, src: str, dst: str, kind: str) -> None:
        """Record ``src --kind--> dst`` between two node ids (idempotent)."""
        if kind not in EDGE_KINDS:
            raise InvalidInputError(
                f"Lineage association {kind!r} is not known.",
                hint=f"Use one of {', '.join(sorted(EDGE_KINDS))}.",
            )
        conn = uow.conn
        exists = conn.execute(
            select(lineage_edges.c.src).where(
                lineage_edges.c.src == src, lineage_edges.c.dst == dst, lineage_edges.c.kind == kind
            )
        ).first()
        if exists is None:
            conn.execute(
                insert(lineage_edges).values(
                    src=src, dst=dst, kind=kind, created_at=self._ctx.clock.now()
                )
            )

    def derived(
        self,
        uow: UnitOfWork,
        kind: str,
        ref: str,
        *,
        name: str,
        project_id: str,
        sources: Sequence[tuple[str, str, str]],
        properties: dict[str, Any] | None = None,
    ) -> str:
        """The node of a new entity made from others (a report from dataset and model
        versions): each ``(kind, ref, name)`` of ``sources`` gets a ``ContributedTo`` edge to
        it. Returns the new node's id."""
        node = self.node(uow, kind, ref, name=name, project_id=project_id, properties=properties)
        for source_kind, source_ref, source_name in sources:
            source = self.node(
                uow, source_kind, source_ref, name=source_name, project_id=project_id
            )
            self.link(uow, source, node, "ContributedTo")
        return node

    def annotate(self, uow: UnitOfWork, kind: str, ref: str, properties: dict[str, Any]) -> None:
        """Merge ``properties`` into the node of entity (kind, ref), created when missing (an
        erasure marks a model version "trained on erased data" this way)."""
        node_id = self.node(uow, kind, ref)
        current = uow.conn.execute(
            select(lineage_nodes.c.properties).where(lineage_nodes.c.id == node_id)
        ).scalar()
        merged = {**(current or {}), **properties}
        uow.conn.execute(
            update(lineage_nodes).where(lineage_nodes.c.id == node_id).values(properties=merged)
        )

    def mark_deleted(self, uow: UnitOfWork, kind: str, ref: str) -> None:
        uow.conn.execute(
            update(lineage_nodes)
            .where(lineage_nodes.c.kind == kind, lineage_nodes.c.ref == ref)
            .values(deleted=True)
        )

    # Reading --------------------------------------------------------------------------------
    def get_node(self, kind: str, ref: str) -> LineageNode:
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(lineage_nodes).where(
                    lineage_nodes.c.kind == kind, lineage_nodes.c.ref == ref
                )
            ).first()
        if row is None:
            raise _no_lineage(kind, ref)
        return _node(row)

    def has_downstream(self, conn: Connection, kind: str, ref: str) -> bool:
        node_id = conn.execute(
            select(lineage_nodes.c.id).where(
                lineage_nodes.c.kind == kind, lineage_nodes.c.ref == ref
            )
        ).scalar()
        if node_id is None:
            return False
        return (
            conn.execute(
                select(lineage_edges.c.dst).where(lineage_edges.c.src == node_id).limit(1)
            ).first()
            is not None
        )

    def query(
        self,
        kind: str,
        ref: str,
        *,
        direction: Literal["upstream", "downstream", "both"] = "both",
        max_depth: int = 10,
    ) -> LineageGraph:
        """Everything upstream and/or downstream of an entity, up to ``max_depth`` hops."""
        if direction not in ("upstream", "downstream", "both"):
            raise InvalidInputError(
                f"Direction {direction!r} is not valid.",
                hint="Use 'upstream', 'downstream' or 'both'.",
            )
        if not 1 <= max_depth <= _MAX_DEPTH:
            raise InvalidInputError(
                f"max_depth {max_depth} is out of range.",
                hint=f"Use a depth between 1 and {_MAX_DEPTH}.",
            )
        root = self.get_node(kind, ref)
        access = Access(self._ctx)
        names = self._project_names()
        if root.project_id is None:
            if not access.may("lineage.read"):
                raise _no_lineage(kind, ref)
        else:
            access.require(
                root.project_id,
                names.get(root.project_id, ""),
                "lineage.read",
                hidden=lambda: _no_lineage(kind, ref),
            )
        seen: dict[str, int] = {root.id: 0}
        edges: dict[tuple[str, str, str], LineageEdge] = {}
        with self._ctx.db.read() as conn:
            # "both" is upstream plus downstream, each walked in its own direction: a sibling
            # (another run fed by the same dataset) is neither, so it is not reached.
            if direction in ("downstream", "both"):
                _walk_edges(
                    conn, root.id, forward=True, max_depth=max_depth, seen=seen, edges=edges
                )
            if direction in ("upstream", "both"):
                _walk_edges(
                    conn, root.id, forward=False, max_depth=max_depth, seen=seen, edges=edges
                )
            rows = conn.execute(select(lineage_nodes).where(lineage_nodes.c.id.in_(list(seen))))
            nodes = sorted((_node(r) for r in rows), key=lambda n: (seen[n.id], n.kind, n.name))
        # Nodes of projects the caller may not walk are left out, with their edges.
        shown = [
            n
            for n in nodes
            if n.project_id is None
            or n.project_id == root.project_id
            or access.allows(n.project_id, names.get(n.project_id, ""), "lineage.read")
        ]
        kept = {n.id for n in shown}
        return LineageGraph(
            root=root,
            direction=direction,
            nodes=shown,
            edges=sorted(
                (e for e in edges.values() if e.src in kept and e.dst in kept),
                key=lambda e: (e.src, e.dst, e.kind),
            ),
        )

    def _project_names(self) -> dict[str, str]:
        with self._ctx.db.read() as conn:
            return {r.id: r.name for r in conn.execute(select(projects.c.id, projects.c.name))}


def _walk_edges(
    conn: Connection,
    start: str,
    *,
    forward: bool,
    max_depth: int,
    seen: dict[str, int],
    edges: dict[tuple[str, str, str], LineageEdge],
) -> None:
    """Breadth-first along edges in one direction, recording nodes (with depth) and edges."""
    near, far = (lineage_edges.c.src, "dst") if forward else (lineage_edges.c.dst, "src")
    depth_of = {start: 0}
    frontier = [start]
    while frontier:
        batch, frontier = frontier[:500], frontier[500:]
        for edge in conn.execute(select(lineage_edges).where(near.in_(batch))):
            origin = edge.src if forward else edge.dst
            target = getattr(edge, far)
            depth = depth_of[origin] + 1
            if depth > max_depth:
                continue
            edges[(edge.src, edge.dst, edge.kind)] = LineageEdge(
                src=edge.src, dst=edge.dst, kind=edge.kind
            )
            if target not in depth_of:
                depth_of[target] = depth
                seen[target] = min(seen.get(target, depth), depth)
                frontier.append(target)


def _no_lineage(kind: str, ref: str) -> NotFoundError:
    return NotFoundError(
        f"No lineage is recorded for {kind} {ref!r}.",
        hint="Lineage exists for entities created through civicml; check the kind and the id.",
    )


def _node(row: Any) -> LineageNode:
    return LineageNode(
        id=row.id,
        kind=row.kind,
        ref=row.ref,
        name=row.name,
        project_id=row.project_id,
        properties=row.properties,
        deleted=bool(row.deleted),
    )
