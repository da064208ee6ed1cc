"""The invocations lane's shortcuts answer exactly what the general code answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from civicml.server.routers.serving import _answer_json


@pytest.mark.parametrize(
    "result",
    [
        {
            "predictions": [True, False],
            "probabilities": [[0.25, 0.75], [0.5, 0.5]],
            "classes": [False, True],
            "model_version": 3,
            "variant": 'blue "é"',
            "inference_ids": ["a", "b"],
        },
        {  # a regression
            "predictions": [1.5],
            "probabilities": None,
            "classes": [],
            "model_version": 1,
            "variant": "v1",
            "inference_ids": ["c"],
        },
        {  # a multi-model answer: encoded as a whole
            "predictions": ["low"],
            "probabilities": [[0.1, 0.2, 0.7]],
            "classes": ["high", "low", "mid"],
            "model_version": 2,
            "variant": "v2",
            "inference_ids": ["d"],
            "target_model": "bands/2",
        },
    ],
)
def test_an_answer_is_the_compact_json_of_the_result(result: dict[str, Any]) -> None:
    for _ in range(2):  # the second time from the cache
        assert _answer_json(result) == json.dumps(result, separators=(",", ":")).encode()  # type: ignore[arg-type]
