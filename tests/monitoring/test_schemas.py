"""Every public monitoring name is documented; every schema field has a description."""

from __future__ import annotations

from pydantic import BaseModel

from civicml import monitoring
from civicml.monitoring import schemas


def test_public_names_have_docstrings() -> None:
    assert monitoring.__doc__
    for name in monitoring.__all__:
        assert getattr(monitoring, name).__doc__, name


def test_schema_fields_are_described() -> None:
    for name in schemas.__all__:
        value = getattr(schemas, name)
        if isinstance(value, type) and issubclass(value, BaseModel):
            for field, info in value.model_fields.items():
                assert info.description, f"{name}.{field} has no description"
