"""A source run that dies by SIGKILL at a chosen point (run by tests/sources/helpers.crash_run).

Usage: crash_child.py HOME PROJECT SOURCE commit|ack CLOCK_ISO
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from civicml.core import FrozenClock, Principal, Settings
from civicml.sources import engine, streams
from civicml.sources.service import SourceService
from civicml.store import Context, MetadataStore
from civicml.store.artifacts import artifact_store_for


def _die(*_args: Any, **_kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    home, project, source, at, clock = sys.argv[1:6]
    settings = Settings.load(home=Path(home))
    ctx = Context(
        db=MetadataStore(settings.database_url),
        artifacts=artifact_store_for(settings),
        principal=Principal(user="alice", roles=frozenset({"admin"})),
        settings=settings,
        clock=FrozenClock(datetime.fromisoformat(clock)),
    )
    if at == "commit":  # inside the version's transaction, after the read: it never commits
        engine._Run._lineage = _die  # type: ignore[method-assign]
    else:  # after the commit, before the acknowledgement
        original = streams.consume

        def consume(source: Any, position: Any, commit: Any, **kwargs: Any) -> Any:
            source.acknowledge = _die
            return original(source, position, commit, **kwargs)

        engine.consume = consume  # type: ignore[assignment]
    SourceService(ctx).run(project, source)
    raise SystemExit("the run ended without reaching the crash point")


if __name__ == "__main__":
    main()
