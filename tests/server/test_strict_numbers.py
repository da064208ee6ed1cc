"""Numbers in request bodies are strict and bounded on every route (civicml.core.types).

FastAPI validates bodies in pydantic's python mode, where ``true`` is an integer and ``"50"`` a
number; each field below took them before and turned them into values nobody sent.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.helpers import API, OCTET, assert_error, model_run, register

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


_BIG = "99999999999999999999999"


@pytest.mark.parametrize(
    "path",
    [
        f"models/m/versions/{_BIG}",
        f"models/m/versions/{_BIG}/card",
        f"models/m/versions/{_BIG}/gate",
        f"datasets/d/versions/{_BIG}",
        f"datasets/d/versions/{_BIG}/data",
    ],
)
def test_a_version_number_past_64_bits_in_a_path_is_a_422(
    api: httpx.Client, project: str, path: str
) -> None:
    run = model_run(api, project)
    register(api, project, "m", run["id"])
    ingested = api.post(
        f"{API}/projects/{project}/datasets/d/versions",
        params={"format": "csv"},
        content=b"income,region\n1,north\n2,south\n",
        headers=OCTET,
    )
    assert ingested.status_code == 201, ingested.text

    response = api.get(f"{API}/projects/{project}/{path}")

    assert_error(response, 422, "InvalidInputError", "is not valid")


@pytest.mark.parametrize(
    "params",
    [{"after_seq": 2102285764167690811766472704}, {"limit": 3863387852757}, {"limit": 0}],
)
def test_audit_event_query_numbers_are_bounded(api: httpx.Client, params: dict[str, int]) -> None:
    response = api.get(f"{API}/audit/events", params=params)

    assert_error(response, 422, "InvalidInputError")
