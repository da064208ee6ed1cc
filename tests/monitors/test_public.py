"""The monitors package: every public name documented, every schema field described."""

from __future__ import annotations

import importlib

from pydantic import BaseModel

import civicml.monitors
from civicml.monitors import schemas


def test_public_names_have_docstrings() -> None:
    assert civicml.monitors.__doc__
    for name in civicml.monitors.__all__:
        value = getattr(civicml.monitors, name)
        assert value.__doc__, name


def test_schema_fields_are_described() -> None:
    for name in schemas.__all__:
        value = getattr(schemas, name)
        if isinstance(value, type) and issubclass(value, BaseModel):
            for field, info in value.model_fields.items():
                assert info.description, f"{name}.{field}"


def test_modules_say_what_they_are() -> None:
    for module in (
        "attribution",
        "baseline",
        "bias_drift",
        "checks",
        "engine",
        "hook",
        "labels",
        "_rows",
        "quality",
        "report_html",
        "runner",
        "schedule",
        "service",
        "window",
    ):
        assert importlib.import_module(f"civicml.monitors.{module}").__doc__, module
