"""A pass run in the background, one at a time: what the scheduler's loops share.

The scheduler kicks each of its loops — alert evaluation, due monitors, due sources, retention —
at every tick. A loop's pass runs in a daemon thread of its own, so a slow one (a webhook that
times out, a long stream) never delays a pipeline firing, and a pass still running when the next
tick comes is not started twice.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

__all__ = ["BackgroundPass"]


class BackgroundPass:
    """:meth:`kick` runs :meth:`run_once` in a background thread unless a pass is running;
    :meth:`wait` waits for it. Subclasses define :meth:`run_once` (which logs and swallows its
    own failures: the next pass tries again) and name their thread."""

    thread_name: ClassVar[str] = "civicml-pass"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Any:
        """One pass in the calling thread."""
        raise NotImplementedError

    def kick(self) -> bool:
        """Start a pass in the background unless one is running; whether one started."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(
                target=self.run_once, name=self.thread_name, daemon=True
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
