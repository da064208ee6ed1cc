"""The alert loop the scheduler drives: one evaluation pass per scheduler tick, off its thread.

:class:`civicml.pipelines.scheduler.Scheduler` calls :meth:`AlertLoop.kick` at every tick. The
pass (sample the endpoint counters, evaluate the rules that are due, deliver) runs in a thread of
its own, so a webhook that times out never delays a pipeline firing; a pass still running when
the next tick comes is not started twice. A failing pass is logged and the next one tries again.
"""

from __future__ import annotations

import logging
import threading

from civicml.alerts.engine import Engine
from civicml.store.context import Context

__all__ = ["AlertLoop"]

log = logging.getLogger("civicml.alerts")


class AlertLoop:
    """Runs :meth:`Engine.tick` in the background, one pass at a time.

    Args:
        ctx: The stores (each rule is evaluated as its creator, not as ``ctx.principal``).
        name: How this process is recorded on the notifications it claims.
    """

    def __init__(self, ctx: Context, *, name: str | None = None) -> None:
        self._engine = Engine(ctx, name)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

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

    def kick(self) -> bool:
        """Start a pass in the background unless one is running; whether one started."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(
                target=self.run_once, name="civicml-alerts", daemon=True
            )
            self._thread.start()
            return True

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the running pass; False when ``timeout_s`` passed first."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()
