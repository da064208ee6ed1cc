"""The benchmark's five functions as ZenML steps (``benchmarks/pipelines.py``).

ZenML loads a step back from its source (module and name) when it runs it, so the steps must be
module-level ``@step`` objects; each one only calls the function of ``_pipelines_work``.
"""

import _pipelines_work as w
import pandas as pd
from zenml import step


@step(enable_cache=True)
def load(path: str, nonce: str) -> pd.DataFrame:
    return w.load(path, nonce)


@step(enable_cache=True)
def clean(raw: pd.DataFrame, nonce: str) -> pd.DataFrame:
    return w.clean(raw, nonce)


@step(enable_cache=True)
def featurize(cleaned: pd.DataFrame, nonce: str) -> pd.DataFrame:
    return w.featurize(cleaned, nonce)


@step(enable_cache=True)
def train(features: pd.DataFrame, nonce: str) -> dict:
    return w.train(features, nonce)


@step(enable_cache=True)
def score(features: pd.DataFrame, model: dict, nonce: str) -> dict:
    return w.score(features, model, nonce)
