"""Every public name is importable and documented (as scikit-learn's test_docstrings)."""

from __future__ import annotations

import importlib

import pytest

import civicml

PACKAGES = [
    "civicml",
    "civicml.core",
    "civicml.store",
    "civicml.governance",
    "civicml.data",
    "civicml.monitoring",
    "civicml.training",
    "civicml.serving",
    "civicml.evaluation",
    "civicml.tracking",
    "civicml.registry",
    "civicml.server",
    "civicml.pipelines",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exist_and_have_docstrings(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__, f"{package} has no package docstring"
    for name in module.__all__:
        value = getattr(module, name)
        if callable(value) or isinstance(value, type):
            assert value.__doc__, f"{package}.{name} has no docstring"


def test_lazy_top_level_names() -> None:
    assert callable(civicml.connect)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        civicml.nothing  # noqa: B018


def test_schema_fields_are_described() -> None:
    from pydantic import BaseModel

    for package in ("civicml.governance", "civicml.tracking", "civicml.registry", "civicml.data"):
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and "root" not in value.model_fields
            ):
                for field, info in value.model_fields.items():
                    assert info.description, f"{package}.{name}.{field} has no description"
