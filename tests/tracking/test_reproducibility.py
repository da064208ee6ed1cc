"""Reproducibility tags: git commit and dirty flag read from the repository, versions, seeds."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import civicml as cm
from civicml.tracking.reproducibility import environment_tags, git_state

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@needs_git
def test_git_state_reads_the_commit_and_the_dirty_flag(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print(1)\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo / "src") == (head, False)  # found from a folder inside it
    (repo / "train.py").write_text("print(2)\n")
    assert git_state(repo) == (head, True)
    _git(repo, "pack-refs", "--all")  # the branch now only in packed-refs
    assert git_state(repo)[0] == head
    _git(repo, "checkout", "-q", "--detach")
    assert git_state(repo)[0] == head


def test_outside_a_repository_there_is_no_commit(tmp_path: Path) -> None:
    assert git_state(tmp_path) == (None, None)


def test_runs_carry_versions_and_the_callers_tags_win(tmp_path: Path) -> None:
    with cm.connect(home=tmp_path / "home") as ml:
        run = ml.project("p").start_run(tags={"civicml.python": "mine"})
        tags = run.info.tags
    assert tags["civicml.python"] == "mine"
    assert f"numpy=={__import__('numpy').__version__}" in tags["civicml.libraries"].split()
    assert environment_tags()["civicml.python"] == platform.python_version()
    assert "civicml.source.git.commit" not in tags  # tmp_path (the cwd) is no repository
