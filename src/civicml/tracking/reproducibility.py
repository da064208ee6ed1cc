"""What a run needs to be reproduced: code version, Python and library versions.

:func:`environment_tags` gives the tags civicml's own clients put on every run they start (the
SDK's ``start_run``, tuning trials, pipeline steps), in the process that runs the code — as
MLflow's client sets ``mlflow.source.git.commit`` — so a run logged to a server records the
client's code, not the server's:

- ``civicml.source.git.commit`` and ``civicml.source.git.dirty`` (``true`` when tracked files
  differ from the commit) of the git repository holding the working directory, when there is
  one;
- ``civicml.python``, and ``civicml.libraries``: the installed versions of the libraries a model
  depends on, as requirement lines (``numpy==2.4.6 pandas==3.1.1 …``, ready for ``pip install``).

Four tags, not one per library: every tag is a row and a part of the run's audit event, and
runs are created by the thousand (tuning, pipelines).

Everything is worked out once per process and working directory (the commit is read from
``.git`` directly; ``git status`` runs once, with a time limit, for the dirty flag), so a run
pays a dictionary copy: microseconds. A commit made while the process runs is not seen until it
restarts; tags passed by the caller win over these.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

__all__ = ["LIBRARIES", "environment_tags", "git_state"]

#: Libraries whose versions every run records (those installed).
LIBRARIES = (
    "civicml",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
    "xgboost",
    "optuna",
    "torch",
)
_GIT_TIMEOUT_S = 5.0


def environment_tags() -> dict[str, str]:
    """The reproducibility tags of this process (a fresh copy: callers may add to it).

    Example:
        >>> tags = environment_tags()
        >>> tags["civicml.python"] == platform.python_version()
        True
    """
    return dict(_tags(os.getcwd()))


@functools.cache
def _tags(cwd: str) -> tuple[tuple[str, str], ...]:
    tags = {"civicml.python": platform.python_version(), "civicml.libraries": _libraries()}
    commit, dirty = git_state(Path(cwd))
    if commit is not None:
        tags["civicml.source.git.commit"] = commit
        if dirty is not None:
            tags["civicml.source.git.dirty"] = "true" if dirty else "false"
    return tuple(sorted(tags.items()))


@functools.cache
def _libraries() -> str:
    found: list[str] = []
    for name in LIBRARIES:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return " ".join(found)


def git_state(start: Path) -> tuple[str | None, bool | None]:
    """The commit checked out in the repository holding ``start`` and whether tracked files
    differ from it (``None`` when unknown: no repository, or no ``git`` to ask)."""
    git_dir, work_tree = _find_git_dir(start.resolve())
    if git_dir is None or work_tree is None:
        return None, None
    commit = _head_commit(git_dir)
    if commit is None:
        return None, None
    return commit, _dirty(work_tree)


def _find_git_dir(start: Path) -> tuple[Path | None, Path | None]:
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot, folder
        if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:") :].strip())
                return (target if target.is_absolute() else folder / target), folder
    return None, None


def _head_commit(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head if _is_sha(head) else None
    ref = head[len("ref:") :].strip()
    common = _common_dir(git_dir)
    for base in (git_dir, common):
        try:
            value = (base / ref).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if _is_sha(value):
            return value
    try:  # refs packed by git gc
        for line in (common / "packed-refs").read_text(encoding="utf-8").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1] == ref and _is_sha(parts[0]):
                return parts[0]
    except OSError:
        return None
    return None


def _common_dir(git_dir: Path) -> Path:
    try:
        text = (git_dir / "commondir").read_text(encoding="utf-8").strip()
    except OSError:
        return git_dir
    path = Path(text)
    return path if path.is_absolute() else (git_dir / path).resolve()


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def _dirty(work_tree: Path) -> bool | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - git itself, fixed arguments, no shell
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=work_tree,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return bool(done.stdout.strip())
