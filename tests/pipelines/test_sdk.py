"""``ml.pipelines`` on the embedded backend, and the public names of the package."""

from __future__ import annotations

import civicml as cm
import civicml.pipelines
from civicml.core import Settings
from civicml.pipelines import ExecutionStatus


@cm.step
def count(words: list[str]) -> int:
    return len(words)


@cm.step
def report(n: int, label: str) -> dict[str, object]:
    return {"label": label, "n": n}


@cm.pipeline(name="words")
def words(text: str = "a b c", label: str = "count") -> None:
    report(count(split(text)), label)


@cm.step
def split(text: str) -> list[str]:
    return text.split()


def test_run_list_get_and_a_cached_rerun_through_the_sdk(settings: Settings) -> None:
    with cm.connect(settings=settings, user="alice") as ml:
        ml.project("civic")
        first = ml.pipelines.run(words, project="civic", params={"text": "x y"})
        assert first.status is ExecutionStatus.SUCCEEDED
        second = ml.pipelines.run(words(text="x y"), project="civic")
        assert {s.status.value for s in second.steps} == {"cached"}
        assert [e.id for e in ml.pipelines.list("civic")] == [second.id, first.id]
        assert ml.pipelines.get(first.id).parameters == {"text": "x y", "label": "count"}


def test_every_public_name_is_documented() -> None:
    assert civicml.pipelines.__doc__
    for name in civicml.pipelines.__all__:
        value = getattr(civicml.pipelines, name)
        assert value.__doc__, name
    assert cm.step is civicml.pipelines.step
    assert cm.pipeline is civicml.pipelines.pipeline
