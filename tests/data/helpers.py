"""Sample data shared by the dataset tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

PROJECT = "benefits"

ROWS = [
    {"age": 41, "income": 1520.5, "region": "north", "eligible": True},
    {"age": 23, "income": 830.0, "region": "south", "eligible": False},
    {"age": 67, "income": None, "region": "north", "eligible": True},
    {"age": 35, "income": 2210.25, "region": None, "eligible": False},
    {"age": 52, "income": 990.75, "region": "east", "eligible": True},
]


def frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS)


def write_csv(path: Path) -> Path:
    lines = ["age,income,region,eligible"]
    for r in ROWS:
        income = "" if r["income"] is None else repr(r["income"])
        region = r["region"] or ""
        lines.append(f"{r['age']},{income},{region},{str(r['eligible']).lower()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def write_parquet(path: Path) -> Path:
    frame().to_parquet(path)
    return path
