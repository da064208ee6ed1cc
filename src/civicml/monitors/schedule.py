"""When a monitor runs: a cron expression (UTC, via croniter, as pipeline schedules) or an
interval, and the window of captured records each run checks.

Both give *due instants*. An interval's instants are its anchor (when the monitor was created
or its schedule last changed) plus whole multiples of it. A scheduler that finds instants passed
runs the latest one only (a catch-up of one, never a burst), as pipeline schedules do; the
instant is the execution's claim key and the end of its window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from civicml.core.errors import InvalidInputError
from civicml.serving.rollout_plan import parse_duration

__all__ = ["MAX_WINDOW_S", "MIN_EVERY_S", "Schedule", "parse_schedule", "parse_window"]

#: The shortest interval between runs.
MIN_EVERY_S = 60
#: The longest window (30 days).
MAX_WINDOW_S = 30 * 86_400
DEFAULT_CRON = "@hourly"
_KEYWORDS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron expression or an interval (seconds) from an anchor."""

    cron: str | None
    every_s: int | None
    anchor: datetime

    def latest_due(self, now: datetime) -> datetime:
        """The latest due instant at or before ``now`` (UTC)."""
        if self.every_s is not None:
            steps = int((now - self.anchor).total_seconds() // self.every_s)
            return self.anchor + timedelta(seconds=max(steps, 0) * self.every_s)
        from croniter import croniter

        base = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        found: datetime = croniter(str(self.cron), base).get_prev(datetime)
        return found.astimezone(UTC)

    def next_after(self, moment: datetime) -> datetime:
        """The first due instant strictly after ``moment`` (UTC)."""
        if self.every_s is not None:
            steps = int((moment - self.anchor).total_seconds() // self.every_s) + 1
            return self.anchor + timedelta(seconds=max(steps, 1) * self.every_s)
        from croniter import croniter

        found: datetime = croniter(str(self.cron), moment.astimezone(UTC)).get_next(datetime)
        return found.astimezone(UTC)

    def describe(self) -> str:
        """``"cron 0 * * * *"`` or ``"every 3600 s"``."""
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every_s} s"


def parse_schedule(cron: str | None, every: str | None, anchor: datetime) -> Schedule:
    """The schedule from ``cron`` or ``every`` (default: hourly cron).

    Raises:
        InvalidInputError: Not five cron fields croniter understands, or an interval below a
            minute or above 30 days.
    """
    if cron is not None and every is not None:
        raise InvalidInputError(
            "A monitor runs on a cron schedule or at an interval, not both.",
            hint="Give --cron '0 * * * *' or --every 1h.",
        )
    if every is not None:
        seconds = parse_duration(every, "Interval")
        if seconds < MIN_EVERY_S:
            raise InvalidInputError(
                f"Interval {every!r} is shorter than a minute.",
                hint="Run at most once a minute: --every 1m, 1h, 1d.",
            )
        return Schedule(None, int(seconds), anchor.astimezone(UTC).replace(microsecond=0))
    text = (cron or DEFAULT_CRON).strip()
    from croniter import croniter

    keyword = text.lower() in _KEYWORDS
    if not keyword and (len(text.split()) != 5 or not croniter.is_valid(text)):
        raise InvalidInputError(
            f"Cron expression {cron!r} is not five fields (minute hour day month weekday) that "
            "croniter understands.",
            hint="Write e.g. '0 * * * *' (every hour, UTC), '*/15 * * * *' or @daily.",
        )
    return Schedule(text.lower() if keyword else text, None, anchor)


def parse_window(window: str | None, schedule: Schedule) -> int:
    """Window seconds: as given, else the interval, else one hour.

    Raises:
        InvalidInputError: Not a duration of a minute to 30 days.
    """
    if window is None:
        return schedule.every_s if schedule.every_s is not None else 3600
    seconds = parse_duration(window, "Window")
    if not MIN_EVERY_S <= seconds <= MAX_WINDOW_S:
        raise InvalidInputError(
            f"Window {window!r} is not from a minute to 30 days.",
            hint="Write e.g. --window 1h (the last hour of captured records).",
        )
    return int(seconds)
