from __future__ import annotations

import pytest

from civicml.core import InvalidInputError
from civicml.store import validate_relative_path


@pytest.mark.parametrize(
    "path", ["model.pkl", "model/model.pkl", "reports/v1/drift.html", "a-b_c.d/e f.txt"]
)
def test_accepts_plain_relative_paths(path: str) -> None:
    assert validate_relative_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("~/x", "absolute"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a/./b", "'..'"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("a\\b", "'\\\\\\\\'"),
        ("..%2F..%2Fetc", "'%'"),
        ("%2e%2e/x", "'%'"),
        ("c:/windows", "':'"),
        ("s3://bucket/key", "':'"),
        ("a\x00b", "'\\\\x00'"),
        ("x" * 1025, "limit"),
    ],
)
def test_rejects_unsafe_paths(path: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        validate_relative_path(path)
