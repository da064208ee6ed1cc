"""Frames for benchmarks/drift.py, generated identically in both virtualenvs (numpy + pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_NUMERIC = 13
N_CATEGORICAL = 12
CATEGORIES = ["north", "south", "east", "west", "centre"]


def frames(rows: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Reference and current frames: 25 columns, every other one drifted in ``current``."""
    rng = np.random.default_rng(seed)
    ref: dict[str, object] = {}
    cur: dict[str, object] = {}
    numeric = [f"num_{i:02d}" for i in range(N_NUMERIC)]
    categorical = [f"cat_{i:02d}" for i in range(N_CATEGORICAL)]
    for i, name in enumerate(numeric):
        drifted = i % 2 == 0
        scale = 1.0 + i / 10
        ref[name] = rng.normal(0.0, scale, rows)
        cur[name] = rng.normal(0.3 * scale if drifted else 0.0, scale, rows)
    base = np.array([0.35, 0.25, 0.2, 0.15, 0.05])
    shifted = np.array([0.15, 0.2, 0.2, 0.25, 0.2])
    for i, name in enumerate(categorical):
        drifted = i % 2 == 1
        ref[name] = rng.choice(CATEGORIES, rows, p=base)
        cur[name] = rng.choice(CATEGORIES, rows, p=shifted if drifted else base)
    return pd.DataFrame(ref), pd.DataFrame(cur), numeric, categorical
