"""The alert loop the scheduler drives: one evaluation pass per scheduler tick, off its thread.

:class:`civicml.pipelines.scheduler.Scheduler` calls :meth:`AlertLoop.kick` at every tick. The
pass (sample the endpoint counters, evaluate the rules that are due, deliver) runs in a thread of
its own, so a webhook that times out never delays a pipeline firing; a pass still running when
the next tick comes is not started twice. A failing pass is logged and the next one tries again.
"""

from __future__ import annotations

import logging

from civicml.alerts.engine import Engine
from civicml.core.passes import BackgroundPass
from civicml.store.context import Context

__all__ = ["AlertLoop"]

log = logging.getLogger("civicml.alerts")


class AlertLoop(BackgroundPass):
    """Runs :meth:`Engine.tick` in the background, one pass at a time.

    Args:
        ctx: The stores (each rule is evaluated as its creator, not as ``ctx.principal``).
        name: How this process is recorded on the notifications it claims.
    """

    thread_name = "civicml-alerts"

    def __init__(self, ctx: Context, *, name: str | None = None) -> None:
        self._engine = Engine(ctx, name)
        super().__init__()

    @property
    def name(self) -> str:
        """This process's name on its claims."""
        return self._engine.name

    def run_once(self) -> list[str]:
        """One pass in the calling thread; the ids of the alerts it fired or resolved."""
        try:
            return self._engine.tick()
        except Exception:  # the database is down for a moment: the next pass tries again
            log.exception("alert loop %s: pass failed", self._engine.name)
            return []
