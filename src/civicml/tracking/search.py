"""The run search language: MLflow's filter and order-by syntax, compiled to SQL.

Filter: clauses joined by ``and``, each ``<entity>.<key> <op> <value>``:
``metrics.accuracy > 0.9 and params.algorithm = 'lightgbm' and tags.team != 'x'
and attributes.status = 'finished'``. Entities: ``metrics`` (alias ``metric``, ``m``), ``params``
(``param``, ``p``), ``tags`` (``tag``, ``t``), ``attributes`` (``attribute``, ``attr``, ``run``)
with ``status``, ``name``, ``run_id``, ``created_by``, ``start_time``, ``end_time`` (ms).
Operators: ``= != > >= < <=`` for numbers; ``= != LIKE ILIKE`` for strings.
Keys with spaces or dots go in backticks: ``metrics.`val loss` < 1``.
Order by: ``["metrics.accuracy DESC", "attributes.start_time"]``.

Bounds: a filter has at most :data:`MAX_FILTER_LENGTH` characters and :data:`MAX_CLAUSES`
clauses, an order at most :data:`MAX_ORDER_KEYS` keys (each clause is a subquery: an unbounded
filter would keep the database busy for seconds). Past them: :class:`BadRequestError` (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.sql import Select

from civicml.core.errors import BadRequestError, InvalidInputError
from civicml.tracking._tables import latest_metrics, params, runs, tags

__all__ = [
    "MAX_CLAUSES",
    "MAX_FILTER_LENGTH",
    "MAX_ORDER_KEYS",
    "Clause",
    "OrderKey",
    "apply_order",
    "compile_filter",
    "parse_filter",
    "parse_order",
    "project_scope",
]

#: Longest filter text, in characters.
MAX_FILTER_LENGTH = 10_000
#: Most clauses (joined by ``and``) in one filter.
MAX_CLAUSES = 100
#: Most keys in one ``order_by``.
MAX_ORDER_KEYS = 10

_ENTITIES = {
    "metrics": "metric",
    "metric": "metric",
    "m": "metric",
    "params": "param",
    "param": "param",
    "p": "param",
    "tags": "tag",
    "tag": "tag",
    "t": "tag",
    "attributes": "attr",
    "attribute": "attr",
    "attr": "attr",
    "run": "attr",
}
_ATTRS = {"status", "name", "run_id", "id", "created_by", "start_time", "end_time"}
_NUMERIC_OPS = {"=", "!=", ">", ">=", "<", "<="}
_STRING_OPS = {"=", "!=", "LIKE", "ILIKE"}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<ident>[A-Za-z_][A-Za-z0-9_]*\.(?:`[^`]+`|"[^"]+"|[A-Za-z0-9_\-:/]+(?:\.[A-Za-z0-9_\-:/]+)*))
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf(?:inity)?|nan))
    | (?P<op>!=|>=|<=|=|>|<|(?i:ilike)\b|(?i:like)\b)
    | (?P<and>(?i:and)\b)
    )""",
    re.VERBOSE,
)
_HINT = (
    "Write clauses like \"metrics.accuracy > 0.9 and params.algorithm = 'lightgbm'\"; "
    "entities are metrics, params, tags and attributes (status, name, run_id, created_by, "
    "start_time, end_time)."
)


@dataclass(frozen=True, slots=True)
class Clause:
    entity: Literal["metric", "param", "tag", "attr"]
    key: str
    op: str
    value: float | str


@dataclass(frozen=True, slots=True)
class OrderKey:
    entity: Literal["metric", "param", "tag", "attr"]
    key: str
    descending: bool


def _split_ident(text: str) -> tuple[Literal["metric", "param", "tag", "attr"], str]:
    prefix, _, key = text.partition(".")
    entity = _ENTITIES.get(prefix.lower())
    if entity is None:
        raise InvalidInputError(f"Unknown entity {prefix!r} in {text!r}.", hint=_HINT)
    if key[:1] in '`"' and key[-1:] == key[:1]:
        key = key[1:-1]
    if entity == "attr" and key not in _ATTRS:
        raise InvalidInputError(
            f"Unknown run attribute {key!r}.", hint=f"Attributes are {', '.join(sorted(_ATTRS))}."
        )
    return entity, key  # type: ignore[return-value]


def parse_filter(text: str | None) -> list[Clause]:
    """Parse a filter string into clauses.

    Raises:
        InvalidInputError: Naming the position and what was expected.
    """
    if text is None or not text.strip():
        return []
    if len(text) > MAX_FILTER_LENGTH:
        raise BadRequestError(
            f"The filter is {len(text):,} characters long.",
            hint=f"A filter may have at most {MAX_FILTER_LENGTH:,} characters and "
            f"{MAX_CLAUSES} clauses; narrow the search, or filter the results yourself.",
        )
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise InvalidInputError(
                f"Cannot parse the filter at position {pos}: {text[pos : pos + 20]!r}.", hint=_HINT
            )
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        if len(tokens) > 4 * MAX_CLAUSES:
            raise BadRequestError(
                f"The filter has more than {MAX_CLAUSES} clauses.",
                hint=f"A filter may have at most {MAX_CLAUSES} clauses; narrow the search, or "
                "filter the results yourself.",
            )
    clauses: list[Clause] = []
    i = 0
    while i < len(tokens):
        if i + 3 > len(tokens):
            raise InvalidInputError(
                f"Incomplete clause at the end of the filter {text!r}.", hint=_HINT
            )
        (k1, ident), (k2, op), (k3, raw) = tokens[i], tokens[i + 1], tokens[i + 2]
        if k1 != "ident" or k2 != "op" or k3 not in ("string", "number"):
            raise InvalidInputError(
                f"Expected '<entity>.<key> <operator> <value>' in the filter "
                f"{text!r}, near {ident!r}.",
                hint=_HINT,
            )
        entity, key = _split_ident(ident)
        op = op.upper()
        value: float | str
        if k3 == "number":
            value = float(raw)
        else:
            value = re.sub(r"\\(.)", r"\1", raw[1:-1])
        numeric = entity == "metric" or (entity == "attr" and key in ("start_time", "end_time"))
        if numeric:
            if not isinstance(value, float) or op not in _NUMERIC_OPS:
                raise InvalidInputError(
                    f"{ident} compares numbers: use {', '.join(sorted(_NUMERIC_OPS))} "
                    "with a number.",
                    hint=_HINT,
                )
        elif op not in _STRING_OPS or not isinstance(value, str):
            raise InvalidInputError(
                f"{ident} compares strings: quote the value and use =, !=, LIKE or ILIKE.",
                hint=_HINT,
            )
        clauses.append(Clause(entity, key, op, value))
        i += 3
        if i < len(tokens):
            if tokens[i][0] != "and":
                raise InvalidInputError(f"Expected 'and' between clauses in {text!r}.", hint=_HINT)
            i += 1
            if i == len(tokens):
                raise InvalidInputError(f"The filter {text!r} ends with 'and'.", hint=_HINT)
    return clauses


def parse_order(order_by: list[str] | None) -> list[OrderKey]:
    keys: list[OrderKey] = []
    if len(order_by or []) > MAX_ORDER_KEYS:
        raise BadRequestError(
            f"order_by has {len(order_by or [])} keys.",
            hint=f"Order by at most {MAX_ORDER_KEYS} keys.",
        )
    for item in order_by or []:
        if len(item) > 300:
            raise BadRequestError(
                f"The order_by key {item[:40]!r}... is {len(item)} characters long.",
                hint="Write 'metrics.<name> DESC': names have at most 250 characters.",
            )
        parts = item.strip().rsplit(None, 1)
        descending = False
        if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
            descending = parts[1].upper() == "DESC"
            ident = parts[0]
        else:
            ident = item.strip()
        if "." not in ident:
            raise InvalidInputError(
                f"Cannot order by {item!r}.",
                hint="Use e.g. 'metrics.accuracy DESC' or 'attributes.start_time'.",
            )
        entity, key = _split_ident(ident)
        keys.append(OrderKey(entity, key, descending))
    return keys


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return column == value  # type: ignore[no-any-return]
    if op == "!=":
        return column != value  # type: ignore[no-any-return]
    if op == ">":
        return column > value  # type: ignore[no-any-return]
    if op == ">=":
        return column >= value  # type: ignore[no-any-return]
    if op == "<":
        return column < value  # type: ignore[no-any-return]
    if op == "<=":
        return column <= value  # type: ignore[no-any-return]
    if op == "LIKE":
        return column.like(value)  # type: ignore[no-any-return]
    return func.lower(column).like(str(value).lower())


def _attr_column(key: str) -> Any:
    return runs.c.id if key in ("run_id", "id") else runs.c[key]


def compile_filter(clauses: list[Clause]) -> list[ColumnElement[bool]]:
    """SQL conditions on ``runs`` for the parsed clauses (metrics compare latest values).

    A metric, parameter or tag clause is ``runs.id IN (SELECT run_id FROM <table> WHERE key = ?
    AND <comparison>)``: uncorrelated, so the database can find the matching runs from the
    ``(key, value)`` index of ``latest_metrics`` and look each up by primary key, instead of
    testing a correlated subquery once per run of the project (see :func:`project_scope`).
    A run without the key is not in the subquery, so it never matches; a NaN latest value
    (stored as NULL with ``is_nan``) matches no comparison.
    """
    conditions: list[ColumnElement[bool]] = []
    for clause in clauses:
        if clause.entity == "metric":
            conditions.append(
                runs.c.id.in_(
                    select(latest_metrics.c.run_id).where(
                        latest_metrics.c.key == clause.key,
                        latest_metrics.c.is_nan.is_(False),
                        _compare(latest_metrics.c.value, clause.op, clause.value),
                    )
                )
            )
        elif clause.entity in ("param", "tag"):
            table = params if clause.entity == "param" else tags
            conditions.append(
                runs.c.id.in_(
                    select(table.c.run_id).where(
                        table.c.key == clause.key,
                        _compare(table.c.value, clause.op, clause.value),
                    )
                )
            )
        elif clause.key in ("start_time", "end_time"):
            moment = datetime.fromtimestamp(float(clause.value) / 1000, tz=UTC)
            conditions.append(_compare(runs.c[clause.key], clause.op, moment))
        else:
            value = str(clause.value).lower() if clause.key == "status" else clause.value
            conditions.append(_compare(_attr_column(clause.key), clause.op, value))
    return conditions


def project_scope(project_id: Any, dialect: str, *, keyed: bool) -> ColumnElement[bool]:
    """``runs.project_id = ?``, for a query that also narrows runs by a key (``keyed``);
    ``project_id`` is the id or a bound parameter.

    Without statistics SQLite takes ``project_id = ?`` for the more selective term and walks
    every run of the project, probing the key's runs for each. Marked ``likely()`` (a planner
    hint that changes no result) it lets the ``(key, value)`` index find the few matching
    runs first, whatever the size of the project. PostgreSQL plans from its statistics.
    """
    scope: ColumnElement[bool] = runs.c.project_id == project_id
    if keyed and dialect == "sqlite":
        return func.likely(scope)
    return scope


def apply_order(query: Select[Any], keys: list[OrderKey]) -> Select[Any]:
    """Add ORDER BY for each key (NULLs and NaN last), then newest first as a tie-breaker."""
    for n, key in enumerate(keys):
        if key.entity == "attr":
            column: Any = _attr_column(key.key)
        else:
            table = {"metric": latest_metrics, "param": params, "tag": tags}[key.entity]
            alias = table.alias(f"o{n}")
            value = alias.c.value
            if key.entity == "metric":
                query = query.outerjoin(
                    alias,
                    and_(
                        alias.c.run_id == runs.c.id,
                        alias.c.key == key.key,
                        alias.c.is_nan.is_(False),
                    ),
                )
            else:
                query = query.outerjoin(
                    alias, and_(alias.c.run_id == runs.c.id, alias.c.key == key.key)
                )
            column = value
        query = query.order_by(column.is_(None), column.desc() if key.descending else column.asc())
    return query.order_by(runs.c.start_time.desc(), runs.c.id.desc())
