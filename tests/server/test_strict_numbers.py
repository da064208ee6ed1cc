"""Numbers in request bodies are strict and bounded on every route (civicml.core.types).

FastAPI validates bodies in pydantic's python mode, where ``true`` is an integer and ``"50"`` a
number; each field below took them before and turned them into values nobody sent.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.helpers import API, assert_error

_SELECTOR = {"dataset": "applications", "version": 1}
_MODEL = {"name": "eligibility", "version": 1}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("endpoints", {"name": "e", "model": "m", "version": True}, "version"),
        ("endpoints", {"name": "e", "model": "m", "version": 2**63}, "version"),
        ("endpoints", {"name": "e", "model": "m", "version": 1, "capture_percent": "50"}, None),
        ("endpoints", {"name": "e", "model": "m", "version": 1, "capture": 1}, "capture"),
        ("models/m/aliases/production", {"version": True}, "version"),
        ("models/m/aliases/production", {"version": 2**64}, "version"),
        ("models/m/versions", {"run_id": "r", "metrics": {"auc": "0.9"}}, None),
        ("models/m/versions", {"run_id": "r", "metrics": {"auc": True}}, None),
        (
            "reports/drift",
            {"current": {"dataset": "a", "version": False}, "baseline": _SELECTOR},
            None,
        ),
        (
            "reports/drift",
            {"current": _SELECTOR, "baseline": _SELECTOR, "drift_share": "0.5"},
            None,
        ),
        ("evaluations/explanation", {"model": _MODEL, "dataset": _SELECTOR, "rows": True}, "rows"),
        ("evaluations/explanation", {"model": _MODEL, "dataset": _SELECTOR, "seed": 1.0}, "seed"),
        (
            "evaluations/bias",
            {
                "dataset": _SELECTOR,
                "label": "eligible",
                "positive_label": 1,
                "facets": [{"column": "age", "threshold": "40"}],
            },
            None,
        ),
    ],
)
def test_a_boolean_string_or_oversized_number_is_a_422(
    api: httpx.Client, project: str, path: str, body: dict[str, Any], field: str | None
) -> None:
    method = "PUT" if "aliases" in path else "POST"

    response = api.request(method, f"{API}/projects/{project}/{path}", json=body)

    details = assert_error(response, 422, "InvalidInputError")["details"]
    if field is not None:
        assert field in details[0]["loc"], details
