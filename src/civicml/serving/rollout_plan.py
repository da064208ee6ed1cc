"""The plan of a guarded update: strategies as steps, bake times, alarms and their parsing.

Pure functions (no database): :func:`rollout_steps` turns a strategy into the percent of
traffic on the new variant at each step, :func:`step_weights` turns a percent into variant
weights, :func:`parse_duration` / :func:`parse_percent` / :func:`parse_alarm` read what people
write (``10m``, ``10%``, ``p99_ms>50``), and :func:`set_monitor_status` installs the hook that
``monitor:NAME`` alarms ask.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from civicml.core.errors import InvalidInputError
from civicml.core.ids import validate_name
from civicml.serving.schemas import RolloutStrategy
from civicml.store.context import Context

__all__ = [
    "MAX_BAKE_S",
    "MAX_LINEAR_STEPS",
    "MonitorStatus",
    "alarm_text",
    "monitor_status",
    "parse_alarm",
    "parse_duration",
    "parse_percent",
    "rollout_steps",
    "set_monitor_status",
    "step_weights",
]

#: The longest bake of one step (30 days, SageMaker's longest shadow test).
MAX_BAKE_S = 30 * 86_400.0
#: The most steps of a linear rollout.
MAX_LINEAR_STEPS = 20

#: Whether the named monitor's latest result is a violation (True), fine (False) or unknown
#: (None: no result yet): ``(ctx, project, monitor name) -> bool | None``.
MonitorStatus = Callable[[Context, str, str], bool | None]
_MONITOR_STATUS: list[MonitorStatus] = []


def set_monitor_status(provider: MonitorStatus | None) -> None:
    """Install (or with None remove) the hook ``monitor:NAME`` alarms ask for a monitor's
    latest status."""
    _MONITOR_STATUS.clear()
    if provider is not None:
        _MONITOR_STATUS.append(provider)


# Parsing ----------------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}
_ALARM = re.compile(
    r"^\s*(error_rate|4xx_rate|5xx_rate|p99_ms)\s*(>=|>)\s*([0-9.eE+-]+)\s*(%?)\s*$"
)
_METRICS = ("error_rate", "4xx_rate", "5xx_rate", "p99_ms")


def parse_duration(value: object, what: str = "Bake time") -> float:
    """Seconds from ``30s``, ``10m``, ``1h``, ``2d``, ``250ms`` or a number of seconds.

    Raises:
        InvalidInputError: Not a duration from 0 to 30 days.
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is not None:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or not 0 <= seconds <= MAX_BAKE_S or math.isnan(seconds):
        raise InvalidInputError(
            f"{what} {value!r} is not a duration from 0 to 30 days.",
            hint="Write a number with a unit: 30s, 10m, 1h, 2d (a bare number is seconds).",
        )
    return seconds


def parse_percent(value: object, what: str = "Canary size") -> float:
    """A percent from ``10%``, ``10`` or ``"10"`` (above 0, below 100).

    Raises:
        InvalidInputError: Not a percent above 0 and below 100.
    """
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().removesuffix("%"))
        except ValueError:
            number = None
    if number is None or not 0 < number < 100:
        raise InvalidInputError(
            f"{what} {value!r} is not a percent above 0 and below 100.",
            hint="Write e.g. 10% (one request in ten goes to the new version while it bakes).",
        )
    return number


def parse_alarm(text: object) -> dict[str, Any]:
    """``{"metric", "op", "threshold"}`` (or ``{"metric": "monitor", "monitor"}``) of an alarm.

    Raises:
        InvalidInputError: Not an alarm this module knows.
    """
    hint = (
        "Write METRIC>THRESHOLD with METRIC one of error_rate, 4xx_rate, 5xx_rate (rates 0-1 "
        "or a percent: error_rate>1%) or p99_ms (milliseconds), e.g. p99_ms>50; or "
        "monitor:NAME for a monitor's latest status."
    )
    if not isinstance(text, str) or len(text) > 200:
        raise InvalidInputError(f"Alarm {text!r} is not a string.", hint=hint)
    if text.strip().startswith("monitor:"):
        name = text.strip().removeprefix("monitor:")
        validate_name("Monitor", name)
        return {"metric": "monitor", "monitor": name}
    match = _ALARM.match(text)
    threshold: float | None = None
    if match is not None:
        try:
            threshold = float(match.group(3))
        except ValueError:
            threshold = None
    if match is None or threshold is None or not math.isfinite(threshold) or threshold < 0:
        raise InvalidInputError(f"Alarm {text!r} is not one civicml knows.", hint=hint)
    metric, op, percent = match.group(1), match.group(2), match.group(4)
    if percent:
        if metric == "p99_ms":
            raise InvalidInputError(f"Alarm {text!r}: a latency is not a percent.", hint=hint)
        threshold /= 100
    if metric != "p99_ms" and threshold > 1:
        raise InvalidInputError(f"Alarm {text!r}: a rate is at most 1 (100%).", hint=hint)
    return {"metric": metric, "op": op, "threshold": threshold}


def alarm_text(alarm: Mapping[str, Any]) -> str:
    """An alarm as written: ``p99_ms>50``, ``error_rate>0.01``, ``monitor:NAME``."""
    if alarm["metric"] == "monitor":
        return f"monitor:{alarm['monitor']}"
    return f"{alarm['metric']}{alarm['op']}{alarm['threshold']:g}"


def rollout_steps(
    strategy: RolloutStrategy, canary_percent: float | None, linear_steps: int | None
) -> list[float]:
    """The percent of traffic on the new variant at each step.

    Raises:
        InvalidInputError: A size for the wrong strategy, or out of range.
    """
    if strategy is RolloutStrategy.CANARY:
        if linear_steps is not None:
            raise InvalidInputError(
                "A canary rollout has no linear steps.", hint="Give --canary 10% alone."
            )
        return [parse_percent(10.0 if canary_percent is None else canary_percent), 100.0]
    if strategy is RolloutStrategy.LINEAR:
        if canary_percent is not None:
            raise InvalidInputError(
                "A linear rollout has no canary size.", hint="Give --steps N (2-20) alone."
            )
        n = 4 if linear_steps is None else linear_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_LINEAR_STEPS:
            raise InvalidInputError(
                f"A linear rollout takes 2 to {MAX_LINEAR_STEPS} steps, not {n!r}.",
                hint="Give --steps 4 for 25%, 50%, 75%, 100%.",
            )
        return [round(100.0 * k / n, 6) for k in range(1, n + 1)]
    if canary_percent is not None or linear_steps is not None:
        raise InvalidInputError(
            "An all-at-once rollout has neither a canary size nor steps.",
            hint="Leave out --canary and --steps, or pick --strategy canary or linear.",
        )
    return [100.0]


def step_weights(old: Mapping[str, float], new: str, percent: float) -> dict[str, float]:
    """Weights that give ``new`` ``percent`` of the traffic and the old variants the rest, in
    their old proportions (the old weights stay as they were below 100 %)."""
    total = sum(old.values())
    if percent >= 100:
        return {name: 0.0 for name in old} | {new: 1.0}
    return dict(old) | {new: total * percent / (100.0 - percent)}


def monitor_status() -> MonitorStatus | None:
    """The hook installed with :func:`set_monitor_status`, or None."""
    return _MONITOR_STATUS[0] if _MONITOR_STATUS else None
