"""What ``monitor:NAME`` rollout alarms read (the hook of ``serving.rollout.set_monitor_status``).

A guarded rollout with the alarm ``monitor:income-quality`` rolls back when the named monitor's
latest finished execution found violations. The server installs :func:`monitor_alarm` as the
hook when it starts.
"""

from __future__ import annotations

import logging

from civicml.core.errors import NotFoundError
from civicml.monitors.schemas import ExecutionStatus
from civicml.monitors.service import MonitorService
from civicml.store.context import Context

__all__ = ["monitor_alarm"]

log = logging.getLogger("civicml.monitors")


def monitor_alarm(ctx: Context, project: str, monitor: str) -> bool | None:
    """True when monitor ``monitor`` of ``project`` last ended ``completed_with_violations``,
    False when it last ended ``completed``, None when there is nothing to judge (no execution
    yet, no data in its window, or it failed; or no such monitor, logged)."""
    try:
        status = MonitorService(ctx).latest_status(project, monitor)
    except NotFoundError:
        log.warning("rollout alarm monitor:%s: project %s has no such monitor", monitor, project)
        return None
    if status is ExecutionStatus.COMPLETED_WITH_VIOLATIONS:
        return True
    if status is ExecutionStatus.COMPLETED:
        return False
    return None
