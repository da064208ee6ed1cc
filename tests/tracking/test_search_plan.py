"""Search plans and semantics: a selective filter is found from the ``(key, value)`` index, and
random filters, orders and pages give exactly what a plain Python evaluation gives."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest
from sqlalchemy import event

from civicml.store import Context
from civicml.tracking import MetricValue, Run, TrackingService


def _statements(ctx: Context, svc: TrackingService, **search: Any) -> list[tuple[str, Any]]:
    """The SELECTs a search sends to the database, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(ctx.db.engine, "before_cursor_execute", record)
    try:
        svc.search("p", **search)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", record)
    return seen


def _plan(ctx: Context, statement: str, parameters: Any) -> str:
    with ctx.db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return "\n".join(str(r[3]) for r in rows)


def test_a_selective_metric_filter_is_found_from_the_key_value_index(ctx: Context) -> None:
    svc = TrackingService(ctx)
    for i in range(20):
        run = svc.create_run("p", experiment="e", params={"algo": "lr"})
        svc.log_metrics(run.id, [MetricValue(key="auc", value=i / 20)])
    statements = _statements(
        ctx, svc, filter="metrics.auc > 0.9", order_by=["metrics.auc DESC"], max_results=10
    )
    (search, parameters), *_ = [s for s in statements if "FROM runs JOIN experiments" in s[0]]
    plan = _plan(ctx, search, parameters)
    assert re.search(
        r"SEARCH latest_metrics USING (COVERING )?INDEX ix_latest_metrics_key_value", plan
    ), plan
    assert "SEARCH runs USING INDEX sqlite_autoindex_runs_1 (id=?)" in plan, plan
    assert "CORRELATED" not in plan, plan  # no subquery run once per run of the project
    assert "ix_runs_project_status" not in plan and "SCAN runs" not in plan, plan
    # The unknown-key check probes the key's rows too, never every run of the project.
    checks = [s for s in statements if "EXISTS" in s[0]]
    assert checks
    for statement, parameters in checks:
        plan = _plan(ctx, statement, parameters)
        assert "ix_latest_metrics_key_value (key=?)" in plan, plan
        assert "ix_runs_project_status" not in plan, plan


# --- Equivalence with a brute-force evaluation -------------------------------------------

_METRIC_VALUES = [0.0, 0.25, 0.5, 0.75, 1.0, -1.0, math.inf, -math.inf, math.nan]
_ALGOS = ["lr", "gbm", "rf", "svm"]
_OPS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _like(value: str, pattern: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _clause(rng: random.Random) -> tuple[str, Any]:
    """A filter clause and a predicate on a Run giving its expected truth."""
    kind = rng.choice(["metric", "metric", "param", "tag", "status", "missing"])
    if kind in ("metric", "missing"):
        key = rng.choice(["a", "b"]) if kind == "metric" else "zz"
        op = rng.choice(list(_OPS))
        x = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, -1.0, math.inf, -math.inf])
        literal = {math.inf: "inf", -math.inf: "-inf"}.get(x, repr(x))

        def metric(run: Run) -> bool:
            v = run.metrics.get(key)
            return v is not None and not math.isnan(v) and bool(_OPS[op](v, x))

        return f"metrics.{key} {op} {literal}", metric
    if kind in ("param", "tag"):
        op = rng.choice(["=", "!=", "LIKE", "ILIKE"])
        value = rng.choice(_ALGOS) if op in ("=", "!=") else rng.choice(["g%", "%r%", "_f", "%"])

        def text(run: Run) -> bool:
            v = (run.params if kind == "param" else run.tags).get("algo")
            if v is None:
                return False
            return v == value if op == "=" else v != value if op == "!=" else _like(v, value)

        return f"{kind}s.algo {op} '{value}'", text
    status = rng.choice(["finished", "running", "failed"])
    return f"attributes.status = '{status}'", lambda run: run.status.value == status


def _sort_key(key: str, descending: bool) -> Any:
    def value(run: Run) -> tuple[bool, float]:
        v = run.metrics.get(key)
        missing = v is None or math.isnan(v)
        x = 0.0 if missing else float(v)  # type: ignore[arg-type]
        return missing, -x if descending else x

    return value


@pytest.mark.parametrize("seed", [1, 2])
def test_random_searches_match_a_brute_force_evaluation(any_ctx: Context, seed: int) -> None:
    svc = TrackingService(any_ctx)
    rng = random.Random(seed)
    for i in range(30):
        params = {"algo": rng.choice(_ALGOS)} if rng.random() < 0.8 else {}
        run = svc.create_run("p", experiment="e", params=params)
        values = [
            MetricValue(key=k, value=rng.choice(_METRIC_VALUES))
            for k in ("a", "b")
            if rng.random() < 0.8
        ]
        if values:
            svc.log_metrics(run.id, values)
        if rng.random() < 0.5:
            svc.set_tags(run.id, {"algo": rng.choice(_ALGOS)})
        if i % 3:
            svc.end_run(run.id, rng.choice(["finished", "failed"]))
    everything = svc.search("p", max_results=1000).runs
    assert len(everything) == 30
    newest_first = sorted(everything, key=lambda r: (r.start_time, r.id), reverse=True)

    for _ in range(40):
        clauses = [_clause(rng) for _ in range(rng.randint(1, 3))]
        text = " and ".join(c for c, _ in clauses)
        expected = [r for r in newest_first if all(p(r) for _, p in clauses)]
        page = svc.search("p", filter=text, max_results=1000)
        assert [r.id for r in page.runs] == [r.id for r in expected], text
        assert any("'zz'" in w for w in page.warnings) == ("metrics.zz" in text), text

        key, descending = rng.choice(["a", "b"]), rng.random() < 0.5
        order = [f"metrics.{key} {'DESC' if descending else 'ASC'}"]
        ordered = sorted(expected, key=_sort_key(key, descending))  # stable: newest first
        found: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = svc.search("p", filter=text, order_by=order, max_results=4, offset=offset)
            found += [r.id for r in page.runs]
            offset = page.next_offset
        assert found == [r.id for r in ordered], (text, order)
