"""Tuning's remote-trial protocol without a cluster: trials shipped through pickle, as to Ray
workers, pruned in the "worker" against a snapshot of the study; and the JSON search space of
the pipeline ``tune`` step."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

from civicml.core.compute import LocalExecutor
from civicml.core.errors import InvalidInputError
from civicml.training.tune import (
    CategoricalParam,
    FloatParam,
    IntParam,
    categorical,
    run_study,
    space_from_json,
)


class ShippingExecutor(LocalExecutor):
    """Threads that behave like a cluster: every call and its result go through pickle, so
    nothing is shared with the caller but data."""

    remote = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        payload = pickle.dumps((fn, args, kwargs))

        def call() -> Any:
            f, a, k = pickle.loads(payload)  # noqa: S301 - our own bytes, this test's process
            return pickle.loads(pickle.dumps(f(*a, **k)))  # noqa: S301

        return super().submit(call)


def levels(ctx: Any) -> float:
    """A deterministic objective: the value at step s is level * s (module level: pickles)."""
    for step in range(1, 6):
        ctx.report(step, ctx.params["level"] * step)
    ctx.info = {"level": ctx.params["level"]}
    return float(ctx.params["level"] * 5)


def test_remote_trials_are_pruned_against_the_study_so_far() -> None:
    with ShippingExecutor(1) as executor:
        result = run_study(
            levels,
            space={"level": categorical([1, 2, 3, 9])},
            tuning_id="t",
            metric="val_rmse",
            direction="minimize",
            strategy="random",
            max_trials=5,
            early_stopping="median",
            warm_start=[{"level": 1}, {"level": 2}, {"level": 3}, {"level": 9}],
            executor=executor,
        )
    by_number = {t.number: t for t in result.trials}
    assert [by_number[i].params["level"] for i in range(4)] == [1, 2, 3, 9]
    assert [by_number[i].state for i in range(3)] == ["complete"] * 3
    assert by_number[3].state == "pruned" and by_number[3].last_step == 1  # worse than the median
    assert by_number[0].info == {"level": 1}  # what the objective left comes back
    assert result.best_params == {"level": 1} and result.best_value == 5.0


def test_remote_trials_keep_max_parallel_and_the_grid() -> None:
    with ShippingExecutor(4) as executor:
        result = run_study(
            levels,
            space={"level": categorical([1, 2, 3])},
            tuning_id="g",
            metric="val_rmse",
            direction="minimize",
            strategy="grid",
            max_trials=10,
            max_parallel=2,
            executor=executor,
        )
    assert sorted(t.params["level"] for t in result.trials) == [1, 2, 3]
    assert result.stopped == "grid_exhausted"


def test_a_json_space_reads_the_cli_spellings() -> None:
    space = space_from_json(
        {"leaves": "int:8:64", "rate": "float:0.01:0.3:log", "l2": "float:0:1", "depth": [3, 5]}
    )
    assert space == {
        "leaves": IntParam(8, 64),
        "rate": FloatParam(0.01, 0.3, log=True),
        "l2": FloatParam(0.0, 1.0),
        "depth": CategoricalParam((3, 5)),
    }


@pytest.mark.parametrize("bad", [{"x": "int:8"}, {"x": "float:a:b"}, {"x": 3}, {}])
def test_a_bad_json_space_says_what_is_expected(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as err:
        space_from_json(bad)
    assert "int:8:64" in (err.value.hint or "")
