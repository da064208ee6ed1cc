"""The real ``civicml server`` answering invocations on its fast lane: concurrent single-row
requests, explanations, bad input, and every request captured."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import civicml as cm
from civicml.training import TabularModel
from tests.serving.helpers import records, train

pytestmark = pytest.mark.e2e
PROJECT = "benefits"
THREADS = 8
PER_THREAD = 25


def test_fast_lane_answers_explains_and_captures(
    server_process: tuple[str, Path], tmp_path: Path
) -> None:
    url, home = server_process
    model_dir = tmp_path / "model"
    model: TabularModel = train(model_dir)
    with cm.connect(home=home, user="data-scientist") as ml:
        mv = ml.project(PROJECT).models.register(
            "eligibility", model_dir, signature=model.signature
        )
    with cm.connect(home=home, user="risk-officer") as ml:
        mv = ml.project(PROJECT).models.approve(mv, note="validated on the hold-out set")
    with cm.connect(url, user="ml-engineer") as ml:
        endpoint = ml.project(PROJECT).endpoints.deploy("web", mv, capture_percent=100.0)

        rows = records(THREADS * PER_THREAD, seed=3)
        answers: list[Any] = [None] * len(rows)

        def client(t: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for i in range(t * PER_THREAD, (t + 1) * PER_THREAD):
                    response = http.post(
                        "/endpoints/web/invocations", params={"project": PROJECT}, json=rows[i]
                    )
                    answers[i] = (response.status_code, response.json())

        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert {status for status, _ in answers} == {200}
        assert [a["predictions"][0] for _, a in answers] == model.predict(rows).tolist()
        np.testing.assert_allclose(
            [a["probabilities"][0] for _, a in answers], model.predict_proba(rows), rtol=1e-12
        )

        explained = endpoint.invoke(rows[:3], explain=True)
        assert explained.explanations is not None
        assert explained.probabilities is not None
        for explanation, proba in zip(explained.explanations, explained.probabilities, strict=True):
            [output] = explanation.outputs
            total = output.base_value + sum(output.attributions.values())
            assert total == pytest.approx(math.log(proba[1] / (1 - proba[1])), abs=1e-9)

        with httpx.Client(base_url=url, timeout=30) as http:
            refused = http.post(
                "/endpoints/web/invocations",
                params={"project": PROJECT, "explain": "maybe"},
                json=rows[:1],
            )
            assert refused.status_code == 422
            assert refused.json()["error"] == "InvalidInputError"
            missing = http.post(
                f"/api/v1/projects/{PROJECT}/endpoints/web/invocations", json=[{"age": 40}]
            )
            assert missing.status_code == 422 and "'income'" in missing.json()["message"]
            bare_nan = http.post(
                "/endpoints/web/invocations",
                params={"project": PROJECT},
                content=b'{"age": 40, "income": NaN, "region": "north"}',
                headers={"content-type": "application/json", "x-civicml-user": "rosa"},
            )
            assert bare_nan.status_code == 422, bare_nan.text
            assert (
                "Column 'income' has a non-finite value (NaN) in record 0"
                in (bare_nan.json()["message"])
            )
            rosa = http.post(
                "/endpoints/web/invocations",
                params={"project": PROJECT},
                json=rows[0],
                headers={"x-civicml-user": "rosa"},
            )
            assert rosa.status_code == 200, rosa.text
        assert endpoint.info.name == "web"
        stats = ml.project(PROJECT).endpoints.get("web").info.stats
        assert stats is not None and stats.input_errors == 2 and stats.output_errors == 0

        captured = endpoint.capture_to_dataset()
        assert captured.row_count == len(rows) + 4  # every request, explained ones too
        assert "caller" not in [c.name for c in captured.columns]
        tagged = endpoint.capture_to_dataset("web-callers", metadata=True)
        assert "caller" in [c.name for c in tagged.columns]
