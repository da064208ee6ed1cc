"""Every example in README.md and docs/*.md runs as written.

Each Markdown file's fenced ``python`` and ``bash`` blocks run in the order they appear, in a
fresh ``CIVICML_HOME`` and working directory (tests/conftest.py) holding a copy of
``examples/``: the Python blocks in one namespace per file, each ``civicml …`` line of a bash
block through the real CLI (``civicml.cli.main.main``, in process), which must exit 0. The
README's own Python generates the data every later example reads (``applications.csv``,
``batch.csv``); the docs pages continue from the state the README leaves. Placeholders such as
``<run-id>`` are filled in from that state.

A block that cannot run here says so, and why, in an HTML comment on the line(s) just above it:
``<!-- snippet: skip (creates a virtual environment) -->``. ``toml`` and ``json`` blocks are
parsed (a policy-shaped TOML block through the real policy parser).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from civicml.cli.main import main
from civicml.oversight.policy import parse_policy

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
EXAMPLES = ROOT / "examples"
PROJECT = "benefits-eligibility"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"<!--\s*snippet:\s*skip\s*\((?P<why>[^)]*\w[^)]*)\)\s*-->")
PLACEHOLDER = re.compile(r"<[a-z][a-z-]*>")


@dataclass(frozen=True)
class Snippet:
    """One fenced block: where it is, its language and text, and why it is skipped (if it is)."""

    path: Path
    line: int
    lang: str
    code: str
    skip: str | None

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(path: Path) -> list[Snippet]:
    """The fenced blocks of ``path`` in order; a skip marker is an HTML comment among the
    comment lines directly above the opening fence."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].splitlines()
        comments = []
        while above and above[-1].strip().startswith("<!--"):
            comments.append(above.pop())
        skip = next((m.group("why") for c in comments if (m := SKIP.search(c))), None)
        found.append(Snippet(path, line, match.group(1), match.group(2), skip))
    return found


def commands(code: str) -> Iterator[list[str]]:
    """Each command of a bash block as argv: continuation lines joined, comments dropped,
    ``a && b`` split."""
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            yield words[:cut]
            words = words[cut + 1 :]


def _best_run_id() -> str:
    import civicml as cm

    with cm.connect() as ml:
        runs = ml.project(PROJECT).runs.search(order_by=["metrics.val_roc_auc DESC"])
    return str(runs[0].id)


def _latest_version_id() -> str:
    import civicml as cm

    with cm.connect() as ml:
        versions = ml.project(PROJECT).models.versions("eligibility")
    return str(max(versions, key=lambda v: v.version).id)


# What each placeholder in a documented command stands for, found in the state so far.
PLACEHOLDERS: dict[str, Callable[[], str]] = {
    "<run-id>": _best_run_id,
    "<version-id>": _latest_version_id,
}


def run_cli(argv: list[str], snippet: Snippet) -> None:
    shown = shlex.join(argv)
    program, *args = argv
    assert program == "civicml" or program.endswith("/civicml"), (
        f"{snippet.where()}: `{shown}` is not a civicml command; run only civicml commands in "
        "a bash block, or mark the block <!-- snippet: skip (why) -->"
    )
    for i, arg in enumerate(args):
        for name in PLACEHOLDER.findall(arg):
            assert name in PLACEHOLDERS, f"{snippet.where()}: no value for {name} in `{shown}`"
            args[i] = args[i].replace(name, PLACEHOLDERS[name]())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, (
        f"{snippet.where()}: `{shown}` exited {code}\n{out.getvalue()}\n{err.getvalue()}"
    )
    assert not err.getvalue(), f"{snippet.where()}: `{shown}` warned:\n{err.getvalue()}"


def run_python(namespace: dict[str, Any], snippet: Snippet) -> None:
    compiled = compile(snippet.code, snippet.where(), "exec")
    exec(compiled, namespace)  # noqa: S102 - running the documented examples is the point


def run_file(path: Path) -> tuple[int, dict[str, Any]]:
    """Run every runnable block of ``path`` in the current directory: how many ran, and the
    namespace its Python left."""
    import civicml as cm

    namespace: dict[str, Any] = {"__name__": f"__{path.stem.lower()}__"}
    ran = 0
    try:
        for snippet in snippets(path):
            if snippet.skip is not None or snippet.lang not in ("python", "bash"):
                continue
            if snippet.lang == "python":
                run_python(namespace, snippet)
            else:
                for argv in commands(snippet.code):
                    run_cli(argv, snippet)
            ran += 1
    finally:  # the clients an example opened (and left open, as a session would)
        for value in namespace.values():
            if isinstance(value, cm.Client):
                value.close()
    return ran, namespace


def in_clone(where: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``where`` the current directory and hold ``examples/`` as a clone does; temporary
    directories (``civicml demo`` makes one) stay inside it."""
    monkeypatch.chdir(where)
    if not (where / "examples").exists():
        shutil.copytree(EXAMPLES, where / "examples")
    scratch = where / "tmp"
    scratch.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


@pytest.fixture(scope="module")
def after_readme(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """A clone directory and CIVICML_HOME in which every README example has run, once."""
    where = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key in [k for k in os.environ if k.startswith("CIVICML_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("CIVICML_HOME", str(where / "home"))
        in_clone(where, monkeypatch)
        ran, namespace = run_file(README)
    yield where, ran, namespace


def test_readme_snippets_run(after_readme: tuple[Path, int, dict[str, Any]]) -> None:
    """Every README block ran (the fixture), and did what its comments say."""
    where, ran, namespace = after_readme
    assert ran >= 5
    assert namespace["best"], "the README's run search found no run"
    assert namespace["mv"].approval_status.value == "Approved"
    assert (where / "card.html").is_file() and (where / "audit.jsonl").is_file()


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if any(s.lang in ("python", "bash") and not s.skip for s in snippets(d))],
    ids=lambda d: d.name,
)
def test_docs_snippets_run(
    doc: Path,
    after_readme: tuple[Path, int, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A docs page continues from what the README built (project, data, models, endpoint), on
    a copy of it."""
    shutil.copytree(after_readme[0], tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("CIVICML_HOME", str(tmp_path / "home"))
    in_clone(tmp_path, monkeypatch)
    assert run_file(doc)[0] >= 1


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_skipped_snippets_say_why(path: Path) -> None:
    """Skips are rare and justified: each names its reason; nothing else is left unrun."""
    for snippet in snippets(path):
        if snippet.skip is not None:
            assert len(snippet.skip.split()) >= 3, f"{snippet.where()}: say why it is skipped"
        elif snippet.lang == "bash":
            for argv in commands(snippet.code):
                assert argv[0] == "civicml" or argv[0].endswith("/civicml"), (
                    f"{snippet.where()}: `{shlex.join(argv)}` cannot run in the snippet test; "
                    "mark the block <!-- snippet: skip (why) -->"
                )


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_toml_and_json_snippets_parse(path: Path) -> None:
    for snippet in snippets(path):
        if snippet.lang == "toml":
            data = tomllib.loads(snippet.code)
            if "description" in data or "metrics" in data:  # an approval policy
                parse_policy(snippet.code, what=snippet.where())
        elif snippet.lang == "json":
            json.loads(snippet.code)


def test_snippets_are_found() -> None:
    """The extractor sees the blocks (a broken pattern would make every test pass vacuously)."""
    langs = [s.lang for s in snippets(README)]
    assert langs.count("python") >= 3 and langs.count("bash") >= 3
    assert list(commands("civicml a b  # note\ncivicml c 'd e' && civicml f\n")) == [
        ["civicml", "a", "b"],
        ["civicml", "c", "d e"],
        ["civicml", "f"],
    ]


def test_examples_are_what_the_demo_uses() -> None:
    """examples/ holds the demo's policy and card fields, read by the real parsers."""
    from civicml.cli.demo import CARD, POLICY

    policy = (EXAMPLES / "approval-policy.toml").read_text(encoding="utf-8")
    assert parse_policy(policy) == parse_policy(POLICY)
    assert json.loads((EXAMPLES / "card-fields.json").read_text(encoding="utf-8")) == CARD
