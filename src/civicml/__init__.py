"""civicml: self-hosted MLOps for the public sector.

>>> import civicml as cm
>>> ml = cm.connect()                       # doctest: +SKIP
>>> run = ml.project("benefits").start_run()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from civicml.core.errors import CivicMLError
    from civicml.core.settings import Settings
    from civicml.pipelines import pipeline, step
    from civicml.sdk import rules, train
    from civicml.sdk.client import Client, connect
    from civicml.sdk.train import tune

__all__ = [
    "CivicMLError",
    "Client",
    "Settings",
    "__version__",
    "connect",
    "pipeline",
    "rules",
    "step",
    "train",
    "tune",
]

_MODULES = {"train": "civicml.sdk.train", "rules": "civicml.sdk.rules"}
_LAZY = {
    "connect": "civicml.sdk.client",
    "Client": "civicml.sdk.client",
    "Settings": "civicml.core.settings",
    "CivicMLError": "civicml.core.errors",
    "pipeline": "civicml.pipelines",
    "step": "civicml.pipelines",
    "tune": "civicml.sdk.train",
}


def __getattr__(name: str) -> Any:
    """Load public names on first access, keeping ``import civicml`` fast."""
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'civicml' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
