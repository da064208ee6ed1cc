"""Tests of the lineage graph (``civicml.governance.lineage``)."""

from __future__ import annotations

import re
from typing import Any, Literal

import pytest

from civicml.core import InvalidInputError, NotFoundError
from civicml.governance import LineageGraph, LineageService, ProjectService
from civicml.governance.lineage import EDGE_KINDS
from civicml.store import Context
from civicml.tracking.service import TrackingService

Direction = Literal["upstream", "downstream", "both"]

# d0 -DerivedFrom-> d1 -ContributedTo-> r1 -Produced-> m1 -AssociatedWith-> e1
#                   d1 -ContributedTo-> r2 -Produced-> m2
EDGES = [
    (("dataset_version", "d0"), ("dataset_version", "d1"), "DerivedFrom"),
    (("dataset_version", "d1"), ("run", "r1"), "ContributedTo"),
    (("run", "r1"), ("model_version", "m1"), "Produced"),
    (("model_version", "m1"), ("endpoint", "e1"), "AssociatedWith"),
    (("dataset_version", "d1"), ("run", "r2"), "ContributedTo"),
    (("run", "r2"), ("model_version", "m2"), "Produced"),
]
EDGES_BY_REF = [(src[1], dst[1], kind) for src, dst, kind in EDGES]


def _build(ctx: Context, edges: list[tuple[tuple[str, str], tuple[str, str], str]]) -> None:
    lineage = LineageService(ctx)
    with ctx.db.write() as uow:
        for src, dst, kind in edges:
            lineage.link(uow, lineage.node(uow, *src), lineage.node(uow, *dst), kind)


@pytest.fixture
def graph(ctx: Context) -> LineageService:
    _build(ctx, EDGES)
    return LineageService(ctx)


def _refs(graph: LineageGraph) -> list[str]:
    return [n.ref for n in graph.nodes]


def _edges(graph: LineageGraph) -> set[tuple[str, str, str]]:
    refs = {n.id: n.ref for n in graph.nodes}
    return {(refs[e.src], refs[e.dst], e.kind) for e in graph.edges}


# Writing ---------------------------------------------------------------------------------------
def test_node_is_get_or_create(ctx: Context) -> None:
    lineage = LineageService(ctx)

    with ctx.db.write() as uow:
        first = lineage.node(uow, "run", "r1", name="base/run-1", properties={"lr": 0.1})
        again = lineage.node(uow, "run", "r1", name="renamed")
    with ctx.db.write() as uow:
        later = lineage.node(uow, "run", "r1")
        other_kind = lineage.node(uow, "model_version", "r1")

    assert first == again == later
    assert other_kind != first
    node = lineage.get_node("run", "r1")
    assert (node.id, node.name, node.properties, node.deleted) == (
        first,
        "base/run-1",
        {"lr": 0.1},
        False,
    )
    assert lineage.get_node("model_version", "r1").name == "r1"  # the ref when no name is given


def test_link_is_idempotent(ctx: Context) -> None:
    lineage = LineageService(ctx)

    with ctx.db.write() as uow:
        run, model = lineage.node(uow, "run", "r1"), lineage.node(uow, "model_version", "m1")
        lineage.link(uow, run, model, "Produced")
        lineage.link(uow, run, model, "Produced")
    with ctx.db.write() as uow:
        lineage.link(uow, run, model, "Produced")
        lineage.link(uow, run, model, "SameAs")  # another association between the same nodes

    assert _edges(lineage.query("run", "r1")) == {("r1", "m1", "Produced"), ("r1", "m1", "SameAs")}


def test_link_rejects_an_unknown_association_and_writes_nothing(ctx: Context) -> None:
    lineage = LineageService(ctx)

    with (
        pytest.raises(
            InvalidInputError, match=re.escape("Lineage association 'Caused' is not known.")
        ) as raised,
        ctx.db.write() as uow,
    ):
        run = lineage.node(uow, "run", "r1")
        lineage.link(uow, run, lineage.node(uow, "model_version", "m1"), "Caused")

    assert raised.value.hint == f"Use one of {', '.join(sorted(EDGE_KINDS))}."
    with pytest.raises(NotFoundError):
        lineage.get_node("run", "r1")  # the node went with the rolled-back transaction


def test_mark_deleted_keeps_the_node_in_the_graph(graph: LineageService, ctx: Context) -> None:
    with ctx.db.write() as uow:
        graph.mark_deleted(uow, "run", "r1")

    assert graph.get_node("run", "r1").deleted
    found = graph.query("model_version", "m1", direction="upstream")
    assert {n.ref: n.deleted for n in found.nodes}["r1"] is True
    assert _refs(found) == ["m1", "r1", "d1", "d0"]


def test_has_downstream(graph: LineageService, ctx: Context) -> None:
    with ctx.db.read() as conn:
        assert graph.has_downstream(conn, "run", "r1")
        assert graph.has_downstream(conn, "dataset_version", "d0")
        assert not graph.has_downstream(conn, "endpoint", "e1")
        assert not graph.has_downstream(conn, "run", "unknown")


def test_services_record_lineage_nodes(ctx: Context) -> None:
    project = ProjectService(ctx).create("p1")
    run = TrackingService(ctx).create_run("p1", experiment="base", name="first")

    lineage = LineageService(ctx)
    assert lineage.get_node("project", project.id).name == "p1"
    node = lineage.get_node("run", run.id)
    assert (node.name, node.project_id) == ("base/first", project.id)


# Querying ----------------------------------------------------------------------------------------
def test_query_upstream_downstream_and_both(any_ctx: Context) -> None:
    _build(any_ctx, EDGES)
    lineage = LineageService(any_ctx)

    up = lineage.query("model_version", "m1", direction="upstream")
    down = lineage.query("dataset_version", "d1", direction="downstream")
    both = lineage.query("run", "r1", direction="both")

    assert (up.root.ref, up.direction) == ("m1", "upstream")
    assert _refs(up) == ["m1", "r1", "d1", "d0"]  # by distance from the root
    assert _edges(up) == {
        ("d0", "d1", "DerivedFrom"),
        ("d1", "r1", "ContributedTo"),
        ("r1", "m1", "Produced"),
    }
    assert _refs(down) == ["d1", "r1", "r2", "m1", "m2", "e1"]
    assert _edges(down) == set(EDGES_BY_REF) - {("d0", "d1", "DerivedFrom")}
    assert _refs(both) == ["r1", "d1", "m1", "d0", "e1"]
    assert _edges(both) == {
        ("d0", "d1", "DerivedFrom"),
        ("d1", "r1", "ContributedTo"),
        ("r1", "m1", "Produced"),
        ("m1", "e1", "AssociatedWith"),
    }


def test_query_both_is_upstream_plus_downstream(graph: LineageService) -> None:
    """Not everything connected: r2 and m2 (fed by the same dataset) are neither."""
    both = graph.query("run", "r1", direction="both")
    up = graph.query("run", "r1", direction="upstream")
    down = graph.query("run", "r1", direction="downstream")

    assert _refs(both) == ["r1", "d1", "m1", "d0", "e1"]
    assert set(_refs(both)) == set(_refs(up)) | set(_refs(down))
    assert _edges(both) == _edges(up) | _edges(down)


@pytest.mark.parametrize(
    ("direction", "depth", "expected"),
    [
        ("upstream", 1, ["m1", "r1"]),
        ("upstream", 2, ["m1", "r1", "d1"]),
        ("upstream", 50, ["m1", "r1", "d1", "d0"]),
        ("downstream", 1, ["m1", "e1"]),
        ("both", 1, ["m1", "e1", "r1"]),
    ],
)
def test_query_max_depth(
    graph: LineageService, direction: Direction, depth: int, expected: list[str]
) -> None:
    found = graph.query("model_version", "m1", direction=direction, max_depth=depth)

    assert _refs(found) == expected
    assert len(found.edges) == len(expected) - 1


def test_query_of_a_leaf_has_only_the_root(graph: LineageService) -> None:
    found = graph.query("endpoint", "e1", direction="downstream")

    assert (_refs(found), found.edges) == (["e1"], [])


def test_cycles_terminate(ctx: Context) -> None:
    _build(
        ctx,
        [
            (("dataset_version", "a"), ("dataset_version", "b"), "DerivedFrom"),
            (("dataset_version", "b"), ("dataset_version", "c"), "DerivedFrom"),
            (("dataset_version", "c"), ("dataset_version", "a"), "SameAs"),
            (("dataset_version", "a"), ("dataset_version", "a"), "SameAs"),
        ],
    )
    lineage = LineageService(ctx)

    directions: tuple[Direction, ...] = ("upstream", "downstream", "both")
    for direction in directions:
        found = lineage.query("dataset_version", "a", direction=direction, max_depth=50)
        assert sorted(_refs(found)) == ["a", "b", "c"]
    assert _edges(lineage.query("dataset_version", "a", direction="downstream", max_depth=50)) == {
        ("a", "b", "DerivedFrom"),
        ("b", "c", "DerivedFrom"),
        ("c", "a", "SameAs"),
        ("a", "a", "SameAs"),
    }


def test_query_of_an_unknown_node(graph: LineageService) -> None:
    with pytest.raises(
        NotFoundError, match=re.escape("No lineage is recorded for run 'nope'.")
    ) as raised:
        graph.query("run", "nope")

    assert raised.value.hint is not None
    assert "check the kind and the id" in raised.value.hint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"direction": "sideways"}, "Direction 'sideways' is not valid."),
        ({"direction": ""}, "Direction '' is not valid."),
        ({"max_depth": 0}, "max_depth 0 is out of range."),
        ({"max_depth": -1}, "max_depth -1 is out of range."),
        ({"max_depth": 51}, "max_depth 51 is out of range."),
    ],
)
def test_query_rejects_bad_arguments(
    graph: LineageService, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        graph.query("run", "r1", **kwargs)


def test_bad_arguments_are_rejected_before_the_node_is_looked_up(graph: LineageService) -> None:
    with pytest.raises(InvalidInputError):
        graph.query("run", "nope", direction="sideways")  # type: ignore[arg-type]
