"""Alert conditions: ``<metric> <operator> <value>``, e.g. ``p99_ms > 50`` or ``verdict == drift``.

A condition names one metric of its rule's source, a comparison and a threshold:

* **endpoint** metrics, counted over the rule's window from what the serving processes count
  (:mod:`civicml.alerts.metrics`): ``invocations``, ``requests``, ``errors_4xx``,
  ``errors_5xx``, ``error_rate``, ``error_rate_4xx``, ``error_rate_5xx`` (shares 0-1 of the
  requests) and ``p50_ms``, ``p90_ms``, ``p99_ms`` (latency quantiles in milliseconds);
* **monitoring** metrics, read from the latest stored report in the window: ``verdict`` and
  ``status`` (words), ``n_drifted``, ``n_columns``, ``share_drifted``, ``violations``,
  ``current_rows``, ``reference_rows``, ``dataset_drift``; and, for one ``column`` of a drift
  report, ``drift_score``, ``statistic``, ``p_value``, ``psi``, ``missing_share_current`` and
  ``drift_detected``.

Words compare with ``==`` and ``!=`` only; numbers with any of ``> >= < <= == !=``. Parsing is
pure; the service stores the parsed parts and shows the condition as written back.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Literal

from civicml.core.errors import InvalidInputError

__all__ = [
    "COLUMN_METRICS",
    "ENDPOINT_METRICS",
    "MONITORING_METRICS",
    "OPERATORS",
    "Condition",
    "Threshold",
    "compare",
    "parse_condition",
]

Threshold = float | str | bool
Kind = Literal["number", "word", "bool"]
OPERATORS = (">=", "<=", "==", "!=", ">", "<")

#: Endpoint metrics and what each is.
ENDPOINT_METRICS: dict[str, str] = {
    "invocations": "requests answered with predictions in the window",
    "requests": "all requests in the window: invocations + errors_4xx + errors_5xx",
    "errors_4xx": "requests refused for their input (4xx) in the window",
    "errors_5xx": "requests the model failed (5xx) in the window",
    "error_rate": "(errors_4xx + errors_5xx) / requests, 0-1",
    "error_rate_4xx": "errors_4xx / requests, 0-1",
    "error_rate_5xx": "errors_5xx / requests, 0-1",
    "p50_ms": "median latency in the window, milliseconds",
    "p90_ms": "90th percentile latency in the window, milliseconds",
    "p99_ms": "99th percentile latency in the window, milliseconds",
}
#: Monitoring metrics of a whole report, and what each is.
MONITORING_METRICS: dict[str, str] = {
    "verdict": "the report's verdict: drift, no_drift or insufficient_data",
    "status": "the report's status where it records one; else its verdict",
    "dataset_drift": "true when the verdict is drift",
    "n_drifted": "how many columns drifted",
    "n_columns": "how many columns were compared",
    "share_drifted": "n_drifted / n_columns, 0-1",
    "violations": "how many constraint violations the report found",
    "current_rows": "rows of the data checked",
    "reference_rows": "rows of the baseline",
}
#: Monitoring metrics of one column of a drift report (the rule names the column).
COLUMN_METRICS: dict[str, str] = {
    "drift_score": "the value compared with the column's drift threshold",
    "statistic": "the drift test's own statistic",
    "p_value": "the p-value of a hypothesis test (null for distances)",
    "psi": "Population Stability Index",
    "missing_share_current": "share of missing values in the data checked",
    "drift_detected": "true when the column drifted",
}
_WORDS = {"verdict", "status"}
_BOOLS = {"dataset_drift", "drift_detected"}
_VERDICTS = ("drift", "no_drift", "insufficient_data")
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(\S.*?)\s*$")
_HINT = "Write e.g. 'p99_ms > 50', 'error_rate > 0.01' or 'verdict == drift'."


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition: ``metric op threshold``."""

    metric: str
    op: str
    threshold: Threshold

    @property
    def text(self) -> str:
        """The condition as written: ``p99_ms > 50``."""
        value = self.threshold
        shown = (
            ("true" if value else "false")
            if isinstance(value, bool)
            else (f"{value:g}" if isinstance(value, float) else value)
        )
        return f"{self.metric} {self.op} {shown}"


def _kind(metric: str) -> Kind:
    if metric in _WORDS:
        return "word"
    if metric in _BOOLS:
        return "bool"
    return "number"


def _known(source: str, column: str | None) -> dict[str, str]:
    if source == "endpoint":
        return ENDPOINT_METRICS
    return COLUMN_METRICS if column is not None else MONITORING_METRICS


def parse_condition(text: str, source: str, *, column: str | None = None) -> Condition:
    """Parse ``text`` for a rule of ``source`` (``endpoint`` or ``monitoring``).

    Raises:
        InvalidInputError: Not ``metric op value``; a metric the source does not offer (with
            the closest names); a word compared with ``<``; a value of the wrong kind.
    """
    found = _PATTERN.match(text)
    if found is None:
        raise InvalidInputError(
            f"Condition {text[:80]!r} is not '<metric> <operator> <value>'.", hint=_HINT
        )
    metric, op, raw = found.groups()
    known = _known(source, column)
    if metric not in known:
        close = difflib.get_close_matches(metric, list(known), n=1)
        where = (
            f"column {column!r} of a report"
            if column is not None
            else f"{'an' if source == 'endpoint' else 'a'} {source} rule"
        )
        other = (
            " (a whole-report metric: leave out the column)"
            if column is not None and metric in MONITORING_METRICS
            else (
                " (a column metric: name the column)"
                if column is None and metric in COLUMN_METRICS and source == "monitoring"
                else ""
            )
        )
        raise InvalidInputError(
            f"Metric {metric!r} is not one {where} offers{other}.",
            hint=f"Did you mean {close[0]!r}?"
            if close and not other
            else f"Its metrics are: {', '.join(known)}.",
        )
    kind = _kind(metric)
    threshold = _value(raw, kind, metric)
    if kind != "number" and op not in ("==", "!="):
        raise InvalidInputError(
            f"{metric} is compared with == or != only, not {op}.",
            hint=f"Write e.g. '{metric} == {_example(metric)}'.",
        )
    return Condition(metric=metric, op=op, threshold=threshold)


def _example(metric: str) -> str:
    return "true" if metric in _BOOLS else "drift"


def _value(raw: str, kind: Kind, metric: str) -> Threshold:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise InvalidInputError(
                f"{metric} is true or false, not {raw!r}.", hint=f"Write '{metric} == true'."
            )
        return text.lower() == "true"
    if kind == "word":
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text):
            raise InvalidInputError(
                f"{metric} compares with a word of letters, digits, '_', '.' or '-', not "
                f"{raw[:40]!r}.",
                hint=f"Write e.g. '{metric} == drift'.",
            )
        if metric == "verdict" and text not in _VERDICTS:
            close = difflib.get_close_matches(text, _VERDICTS, n=1)
            raise InvalidInputError(
                f"A verdict is one of {', '.join(_VERDICTS)}, not {text!r}.",
                hint=f"Did you mean {close[0]!r}?" if close else "Write 'verdict == drift'.",
            )
        return text
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(
            f"{metric} compares with a finite number, not {raw[:40]!r}.",
            hint=f"Write e.g. '{metric} > 0.5'.",
        )
    return number


def compare(value: Threshold | None, op: str, threshold: Threshold) -> bool | None:
    """Whether ``value op threshold`` holds; None when ``value`` is missing or of another kind
    (no data: the rule's state does not change)."""
    if value is None:
        return None
    if isinstance(threshold, bool) or isinstance(value, bool):
        if not (isinstance(threshold, bool) and isinstance(value, bool)):
            return None
        return (value == threshold) if op == "==" else (value != threshold)
    if isinstance(threshold, str) or isinstance(value, str):
        if not (isinstance(threshold, str) and isinstance(value, str)):
            return None
        return (value == threshold) if op == "==" else (value != threshold)
    left, right = float(value), float(threshold)
    if math.isnan(left):
        return None
    return {
        ">": left > right,
        ">=": left >= right,
        "<": left < right,
        "<=": left <= right,
        "==": left == right,
        "!=": left != right,
    }[op]
