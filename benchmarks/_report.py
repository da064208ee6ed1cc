"""What every benchmark script writes the same way: the civicml source it measured, and its
section of docs/benchmarks.md between its markers."""

from __future__ import annotations

import subprocess
from pathlib import Path


def civicml_source(root: Path) -> str:
    """The commit the (editable) civicml checkout at ``root`` is at, and whether src/ has local
    edits."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes in src/" if dirty else head


def write_section(docs_md: Path, begin: str, end: str, section: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``docs_md`` (appended when absent)."""
    text = docs_md.read_text(encoding="utf-8") if docs_md.exists() else "# Benchmarks\n"
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    docs_md.write_text(text, encoding="utf-8")
