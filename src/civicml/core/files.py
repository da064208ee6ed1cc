"""Durable file-system steps shared by the stores: what makes a rename or a link survive a crash."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(path: Path) -> None:
    """Flush directory ``path`` itself, so an entry just created, linked or renamed in it is on
    disk (fsyncing the file makes its bytes durable, not its name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
